//! The database's own properties, which `pg_dump --create` restores and a dump of the
//! database's contents loses: its settings (`ALTER DATABASE ... SET`, which change how
//! every session of the application behaves), connection limit, comment and privileges
//! (a `REVOKE CONNECT ... FROM PUBLIC` lost would open the database to every role of the
//! cluster). The target's name is known only at restore time, so each statement names
//! it through `current_database()` ([`in_current_database`]) and psql replays them alike.
//!
//! Each is written only where the source differs from a new database, so a restore into
//! a database the restoring user does not own needs no more rights than before unless
//! the source had such properties. The owner is not carried: the user who created the
//! target keeps it (a drill's scratch database stays droppable by the user who made it).

use crate::catalog::Statement;
use crate::protocol::{Connection, Error, Row, dollar_quote, quote_identifier, quote_literal};

/// Statements on the restored database and the roles its privileges name.
#[derive(Debug, Default)]
pub struct Properties {
    pub statements: Vec<Statement>,
    /// Roles the `GRANT`/`REVOKE` statements name (for the restore's role check).
    pub privilege_roles: Vec<String>,
}

fn text(row: &Row, column: usize) -> Option<&str> {
    row.get(column).and_then(|value| value.as_deref())
}

/// A `DO` block that runs `template`, a `format` string in which `%1$I` is the database
/// it runs in and `%2$…` onwards are `arguments`; other `%` in `template` must be doubled.
pub fn in_current_database(template: &str, arguments: &[&str]) -> String {
    let values: Vec<String> = std::iter::once("current_database()".to_owned())
        .chain(arguments.iter().map(|argument| quote_literal(argument)))
        .collect();
    let body = format!(" BEGIN EXECUTE format({}, {}); END ", quote_literal(template), values.join(", "));
    format!("DO {};", dollar_quote(&body))
}

/// Read the properties of the database the connection is in (in the backup's snapshot).
pub fn read(connection: &mut Connection) -> Result<Properties, Error> {
    let mut properties = Properties::default();
    let settings = connection.query(
        "SELECT u.config FROM pg_catalog.pg_db_role_setting s \
         CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY u (config, n) \
         WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_catalog.pg_database \
         WHERE datname = current_database()) ORDER BY u.n",
    )?;
    for row in &settings {
        let config = text(row, 0).unwrap_or_default();
        let set = crate::roles::setting(config).replace('%', "%%");
        let name = config.split_once('=').map_or(config, |(name, _)| name);
        properties.statements.push(Statement::unscoped(
            format!("DATABASE SETTING {name}"),
            in_current_database(&format!("ALTER DATABASE %1$I {set}"), &[]),
        ));
    }
    let own = connection.query(
        "SELECT datconnlimit, pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database \
         WHERE datname = current_database()",
    )?;
    if let Some(row) = own.first() {
        if let Some(limit) = text(row, 0).filter(|limit| *limit != "-1") {
            properties.statements.push(Statement::unscoped(
                "DATABASE CONNECTION LIMIT".into(),
                in_current_database(&format!("ALTER DATABASE %1$I CONNECTION LIMIT {limit}"), &[]),
            ));
        }
        if let Some(comment) = text(row, 1) {
            properties.statements.push(Statement::unscoped(
                "COMMENT DATABASE".into(),
                in_current_database("COMMENT ON DATABASE %1$I IS %2$L", &[comment]),
            ));
        }
    }
    // The difference between the database's ACL and the default one of its owner, as
    // acl_changes.sql computes it for objects; granted as the restoring user.
    let changes = connection.query(
        "SELECT a.verb, a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, \
         a.is_grantable \
         FROM pg_catalog.pg_database d CROSS JOIN LATERAL ( \
             (SELECT 'REVOKE' AS verb, grantee, privilege_type, is_grantable FROM aclexplode(acldefault('d', d.datdba)) \
              EXCEPT SELECT 'REVOKE', grantee, privilege_type, is_grantable FROM aclexplode(nullif(d.datacl, '{}'))) \
             UNION ALL \
             (SELECT 'GRANT', grantee, privilege_type, is_grantable FROM aclexplode(nullif(d.datacl, '{}')) \
              EXCEPT SELECT 'GRANT', grantee, privilege_type, is_grantable FROM aclexplode(acldefault('d', d.datdba))) \
         ) a WHERE d.datname = current_database() AND d.datacl IS NOT NULL ORDER BY 1 DESC, 3 NULLS FIRST, 2",
    )?;
    let mut statements = Vec::new();
    for row in &changes {
        let (verb, privilege) = (text(row, 0).unwrap_or_default(), text(row, 1).unwrap_or_default());
        let grantee = match text(row, 2) {
            Some(role) => {
                if !properties.privilege_roles.iter().any(|known| known == role) {
                    properties.privilege_roles.push(role.to_owned());
                }
                quote_identifier(role)
            }
            None => "PUBLIC".to_owned(),
        };
        let (direction, option) = match verb {
            "GRANT" if text(row, 3) == Some("t") => ("TO", " WITH GRANT OPTION"),
            "GRANT" => ("TO", ""),
            _ => ("FROM", ""),
        };
        statements
            .push(format!("{verb} {privilege} ON DATABASE %1$I {direction} {}{option}", grantee.replace('%', "%%")));
    }
    if !statements.is_empty() {
        properties.statements.push(Statement::unscoped(
            "ACL DATABASE".into(),
            statements.iter().map(|template| in_current_database(template, &[])).collect::<Vec<_>>().join("\n"),
        ));
    }
    Ok(properties)
}
