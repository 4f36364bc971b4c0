//! The cluster's roles, as `pg_dumpall --roles-only` has them, in an artifact of their own
//! (`roles.sql`): roles are cluster-wide, so a database restored into another cluster
//! needs them to exist before its owners and privileges can.
//!
//! A backup writes, per role (the predefined `pg_*` roles left out), one entry with its
//! `CREATE ROLE` (attributes, connection limit, expiry and, on request, the password
//! hash), comment and settings for every database; then one entry per membership, and
//! one per setting of a role in the backed-up database (`ALTER ROLE ... IN DATABASE`,
//! which `pg_dump --create` counts as the database's). A restore applies it on request,
//! before the sections and in the same transaction: roles the target lacks are created
//! with everything they had, roles it has are left as they are (their attributes,
//! passwords and settings are the cluster's business), memberships are granted where
//! missing (never revoked), and the settings in the backed-up database are set in the
//! target database.

use stowage_plugin_sdk::PluginError;

use std::io::BufRead;

use crate::artifact_error;
use crate::catalog::Statement;
use crate::database::in_current_database;
use crate::protocol::{Connection, Error, Row, dollar_quote, quote_identifier, quote_literal};
use crate::script::{Entry, ScriptReader};

/// The artifact's name.
pub const ARTIFACT: &str = "roles.sql";

/// How the description of a role's statement starts.
const ROLE: &str = "ROLE ";

/// What a backup writes into [`ARTIFACT`] (option `roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolesArtifact {
    /// No roles artifact.
    None,
    /// Every role, without passwords (readable by any user).
    WithoutPasswords,
    /// Every role with its password hash (reads `pg_authid`: superusers only).
    WithPasswords,
}

impl RolesArtifact {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(RolesArtifact::None),
            "without-passwords" => Some(RolesArtifact::WithoutPasswords),
            "with-passwords" => Some(RolesArtifact::WithPasswords),
            _ => None,
        }
    }
}

/// Settings whose value is a list of names, written unquoted (as `pg_dump` knows them
/// from `variable_is_guc_list_quote`); any other value is a string literal.
const LIST_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

fn text(row: &Row, column: usize) -> Option<&str> {
    row.get(column).and_then(|value| value.as_deref())
}

fn flag(row: &Row, column: usize) -> bool {
    text(row, column) == Some("t")
}

/// `SET name = value` as `ALTER ROLE ... SET` takes it, from a stored `name=value`.
pub fn setting(config: &str) -> String {
    let (name, value) = config.split_once('=').unwrap_or((config, ""));
    let list = LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str());
    let value = match value {
        // An empty list is stored as `""`, which does not parse back as a name.
        "" | "\"\"" if list => "''".to_owned(),
        // Stored in its canonical list form (`"$user", public`), which parses back as is.
        _ if list => value.to_owned(),
        _ => quote_literal(value),
    };
    format!("SET {} = {value}", quote_identifier(name))
}

/// The `CREATE ROLE` of a row of the roles query.
fn create_role(row: &Row) -> String {
    let name = quote_identifier(text(row, 0).unwrap_or_default());
    let attribute = |column: usize, yes: &str, no: &str| if flag(row, column) { yes } else { no }.to_owned();
    let mut attributes = vec![
        attribute(1, "SUPERUSER", "NOSUPERUSER"),
        attribute(2, "INHERIT", "NOINHERIT"),
        attribute(3, "CREATEROLE", "NOCREATEROLE"),
        attribute(4, "CREATEDB", "NOCREATEDB"),
        attribute(5, "LOGIN", "NOLOGIN"),
        attribute(6, "REPLICATION", "NOREPLICATION"),
        attribute(7, "BYPASSRLS", "NOBYPASSRLS"),
        format!("CONNECTION LIMIT {}", text(row, 8).unwrap_or("-1")),
    ];
    if let Some(password) = text(row, 10) {
        attributes.push(format!("PASSWORD {}", quote_literal(password)));
    }
    if let Some(valid_until) = text(row, 9) {
        attributes.push(format!("VALID UNTIL {}", quote_literal(valid_until)));
    }
    format!("CREATE ROLE {name} WITH {};", attributes.join(" "))
}

/// What a backup read: the statements of [`ARTIFACT`], and how many roles they create.
#[derive(Debug, Default)]
pub struct Roles {
    pub statements: Vec<Statement>,
    pub count: usize,
}

/// Read every role, its settings and memberships (in the backup's transaction).
pub fn read(connection: &mut Connection, what: RolesArtifact) -> Result<Roles, Error> {
    let source = match what {
        RolesArtifact::None => return Ok(Roles::default()),
        RolesArtifact::WithoutPasswords => "SELECT *, NULL::text AS password FROM pg_catalog.pg_roles",
        RolesArtifact::WithPasswords => "SELECT *, rolpassword AS password FROM pg_catalog.pg_authid",
    };
    let roles = connection.query(&format!(
        "SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, \
         r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, r.password, \
         pg_catalog.shobj_description(r.oid, 'pg_authid') \
         FROM ({source}) r WHERE r.rolname !~ '^pg_' ORDER BY r.rolname"
    ))?;
    // Settings for every database (false) and for this one (true), in stored order.
    let settings = connection.query(
        "SELECT r.rolname, s.setdatabase <> 0, c.config \
         FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
         CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY c (config, n) \
         WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())) \
         ORDER BY r.rolname, 2, c.n",
    )?;
    // INHERIT and SET per membership came with PostgreSQL 16; read through to_jsonb so
    // one query serves 15 (where they are absent) and later releases.
    let memberships = connection.query(
        "SELECT g.rolname, m.rolname, a.admin_option, to_jsonb(a) ->> 'inherit_option', to_jsonb(a) ->> 'set_option' \
         FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles g ON g.oid = a.roleid \
         JOIN pg_catalog.pg_roles m ON m.oid = a.member \
         WHERE m.rolname !~ '^pg_' ORDER BY 1, 2",
    )?;

    let mut statements = Vec::new();
    let mut in_database = Vec::new();
    for role in &roles {
        let name = text(role, 0).unwrap_or_default();
        let quoted = quote_identifier(name);
        let mut sql = create_role(role);
        if let Some(comment) = text(role, 11) {
            sql.push_str(&format!("\nCOMMENT ON ROLE {quoted} IS {};", quote_literal(comment)));
        }
        for row in settings.iter().filter(|row| text(row, 0) == Some(name)) {
            let set = setting(text(row, 2).unwrap_or_default());
            if flag(row, 1) {
                // The target database's name is known only at restore time; `format`
                // fills in the names, so the value's own `%` are doubled.
                let alter = format!("ALTER ROLE %2$I IN DATABASE %1$I {}", set.replace('%', "%%"));
                in_database.push(Statement::unscoped(
                    format!("DATABASE SETTING OF ROLE {name}"),
                    in_current_database(&alter, &[name]),
                ));
            } else {
                sql.push_str(&format!("\nALTER ROLE {quoted} {set};"));
            }
        }
        // Guarded here rather than by the restore, so that psql replays the artifact alike.
        let body = format!(
            "\nBEGIN\nIF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN\n{sql}\nEND IF;\nEND\n",
            quote_literal(name)
        );
        statements.push(Statement::unscoped(format!("{ROLE}{name}"), format!("DO {};", dollar_quote(&body))));
    }
    for membership in &memberships {
        let (role, member) = (text(membership, 0).unwrap_or_default(), text(membership, 1).unwrap_or_default());
        let mut options = Vec::new();
        if flag(membership, 2) {
            options.push("ADMIN OPTION");
        }
        if text(membership, 3) == Some("false") {
            options.push("INHERIT FALSE");
        }
        if text(membership, 4) == Some("false") {
            options.push("SET FALSE");
        }
        let with = if options.is_empty() { String::new() } else { format!(" WITH {}", options.join(", ")) };
        statements.push(Statement::unscoped(
            format!("MEMBERSHIP {role} TO {member}"),
            format!("GRANT {} TO {}{with};", quote_identifier(role), quote_identifier(member)),
        ));
    }
    statements.extend(in_database);
    Ok(Roles { statements, count: roles.len() })
}

/// How many roles a restore created, and how many it found in place.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub created: u64,
    pub existing: u64,
}

fn role_count(connection: &mut Connection) -> Result<u64, Error> {
    let count = connection.query_value("SELECT count(*) FROM pg_catalog.pg_roles")?;
    Ok(count.and_then(|count| count.parse().ok()).unwrap_or(0))
}

/// Apply the artifact, read by `script`, statement by statement.
pub fn apply<R: BufRead>(connection: &mut Connection, script: &mut ScriptReader<R>) -> Result<Applied, PluginError> {
    let counting = |e| crate::failure("counting roles", e);
    let before = role_count(connection).map_err(counting)?;
    let mut roles = 0;
    while let Some(entry) = script.next_entry().map_err(artifact_error)? {
        let Entry::Sql { what, sql, .. } = entry else {
            return Err(PluginError::Artifact(format!("{ARTIFACT}: rows where only statements belong")));
        };
        roles += u64::from(what.starts_with(ROLE));
        connection.execute(&sql).map_err(|e| crate::failure(&format!("restoring {what}"), e))?;
    }
    let created = role_count(connection).map_err(counting)?.saturating_sub(before);
    Ok(Applied { created, existing: roles.saturating_sub(created) })
}
