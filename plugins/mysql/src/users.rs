//! The accounts that hold privileges on the backed-up database, with those privileges,
//! in an artifact of their own (`users.sql`, option `users`): accounts are server-wide,
//! so a database restored into another server has nobody who may use it until they exist.
//!
//! An account is listed when `mysql.db`, `tables_priv`, `columns_priv` or `procs_priv`
//! grants it something in the database. Per account the artifact holds `CREATE USER IF NOT
//! EXISTS` (as `SHOW CREATE USER` prints it, authentication included, with
//! `users=with-passwords`; without a password and `ACCOUNT LOCK` with `users=locked`, so
//! that nobody logs in before an administrator sets one) and its grants on the database,
//! written for the *default* database (`ON *`, ``ON `table` ``, ``ON PROCEDURE `p` ``):
//! replayed after `USE target`, by this plugin or by the `mariadb` client, they land on
//! the target database whatever its name. An account the target server has keeps its
//! authentication; grants only add. MariaDB roles with privileges there come along, with
//! the users and roles they are granted to and those memberships ([`role_members`]).
//! Global privileges are not carried (they are the server's, not the database's), nor
//! MySQL 8's role memberships.

use stowage_plugin_sdk::{PluginError, report};

use crate::failure;
use crate::protocol::{Connection, Error, codes, text};
use crate::script::{ident, literal};

/// The artifact's name.
pub const ARTIFACT: &str = "users.sql";

/// What a backup writes into [`ARTIFACT`] (option `users`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsersArtifact {
    None,
    /// Accounts created locked, without a password.
    Locked,
    /// Accounts with their authentication (password hashes).
    WithPasswords,
}

impl UsersArtifact {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(UsersArtifact::None),
            "locked" => Some(UsersArtifact::Locked),
            "with-passwords" => Some(UsersArtifact::WithPasswords),
            _ => None,
        }
    }
}

/// `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", literal(user), literal(host))
}

/// `database` as a grant's `Db` column may hold it: as is, or with its `_` and `%`
/// escaped (a grant written `` `shop\_db`.* `` matches that database alone).
fn grant_names(database: &str) -> [String; 2] {
    [database.to_owned(), database.replace('_', "\\_").replace('%', "\\%")]
}

/// A line of `SHOW GRANTS` rewritten for the default database, if it grants something
/// in `database`.
fn for_default_database(grant: &str, database: &str) -> Option<String> {
    grant_names(database).iter().find_map(|name| {
        let qualified = format!("{}.", ident(name));
        ["ON ", "ON PROCEDURE ", "ON FUNCTION ", "ON PACKAGE ", "ON PACKAGE BODY "].iter().find_map(|on| {
            let needle = format!(" {on}{qualified}");
            grant.find(&needle).map(|at| {
                let rest = &grant[at + needle.len()..];
                // `db`.* means the whole database: `*` alone is the default one.
                format!("{} {on}{rest}", &grant[..at])
            })
        })
    })
}

/// A MariaDB role's membership: `role` granted to `member` (a user or another role).
struct Membership {
    role: String,
    member: (String, String),
    admin: bool,
}

/// Read the accounts and their grants on `database` and render [`ARTIFACT`]; `None`
/// when no account holds privileges there.
pub fn read(connection: &mut Connection, database: &str, what: UsersArtifact) -> Result<Option<String>, PluginError> {
    if what == UsersArtifact::None {
        return Ok(None);
    }
    let names = grant_names(database).map(|name| literal(&name)).join(", ");
    let rows = connection
        .rows(&format!(
            "SELECT User, Host FROM mysql.db WHERE Db IN ({names}) \
             UNION SELECT User, Host FROM mysql.tables_priv WHERE Db IN ({names}) \
             UNION SELECT User, Host FROM mysql.columns_priv WHERE Db IN ({names}) \
             UNION SELECT User, Host FROM mysql.procs_priv WHERE Db IN ({names}) \
             ORDER BY 1, 2"
        ))
        .map_err(|error| match error {
            Error::Server { code: codes::TABLE_ACCESS_DENIED, message, .. } => PluginError::InvalidSettings(format!(
                "option users: reading the accounts and their grants needs SELECT on the mysql schema: {message}"
            )),
            error => failure("listing the accounts with privileges on the database", error),
        })?;
    let mut accounts: Vec<(String, String)> = rows
        .into_iter()
        .map(|row| {
            let [user, host] = text(row);
            (user, host)
        })
        .collect();
    // MariaDB's roles (accounts with an empty host) give their privileges to the users
    // and roles they are granted to: those come along, with the memberships.
    let memberships =
        if connection.server.is_mariadb() { role_members(connection, &mut accounts)? } else { Vec::new() };
    // Roles first: the users' memberships name them.
    accounts.sort_by_key(|(_, host)| !host.is_empty());
    if what == UsersArtifact::WithPasswords && !connection.server.is_mariadb() {
        // MySQL's hashes (caching_sha2_password) are binary: printed as hex, they stay text.
        connection
            .execute("SET SESSION print_identified_with_as_hex = ON")
            .map_err(|e| failure("setting up the session", e))?;
    }
    let defaults = if connection.server.is_mariadb() { default_roles(connection)? } else { Vec::new() };
    let mariadb = connection.server.is_mariadb();
    let mut script = String::new();
    for (user, host) in &accounts {
        let who = account(user, host);
        let create = if mariadb && is_public(user, host) {
            // MariaDB's PUBLIC exists without being created; only its grants are written.
            None
        } else if mariadb && host.is_empty() {
            Some(format!("CREATE ROLE IF NOT EXISTS {}", ident(user)))
        } else if what == UsersArtifact::WithPasswords {
            let shown = connection
                .rows(&format!("SHOW CREATE USER {who}"))
                .map_err(|e| failure(&format!("reading account {who}"), e))?;
            let [create] = text(
                shown
                    .into_iter()
                    .next()
                    .ok_or_else(|| PluginError::Database(format!("SHOW CREATE USER {who} returned nothing")))?,
            );
            Some(create.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1))
        } else {
            Some(format!("CREATE USER IF NOT EXISTS {who} ACCOUNT LOCK"))
        };
        if let Some(create) = create {
            script.push_str(&format!("{create};\n"));
        }
        let grantee = if mariadb { grantee(user, host) } else { who };
        let grants = connection
            .rows(&format!("SHOW GRANTS FOR {grantee}"))
            .map_err(|e| failure(&format!("reading the grants of {grantee}"), e))?;
        for grant in grants {
            let [grant] = text(grant);
            if let Some(grant) = for_default_database(&grant, database) {
                script.push_str(&format!("{grant};\n"));
            }
        }
    }
    for Membership { role, member: (user, host), admin } in &memberships {
        let option = if *admin { " WITH ADMIN OPTION" } else { "" };
        script.push_str(&format!("GRANT {} TO {}{option};\n", ident(role), grantee(user, host)));
    }
    for (user, host, role) in &defaults {
        if accounts.iter().any(|(u, h)| u == user && h == host)
            && accounts.iter().any(|(u, h)| u == role && h.is_empty())
        {
            script.push_str(&format!("SET DEFAULT ROLE {} FOR {};\n", ident(role), account(user, host)));
        }
    }
    let roles = accounts.iter().filter(|(_, host)| host.is_empty()).count();
    report::info(&format!("{} accounts and {roles} roles hold privileges on {database}", accounts.len() - roles));
    Ok((!accounts.is_empty()).then_some(script))
}

/// MariaDB's `PUBLIC` (10.11): every account's grants, kept as a role-like row.
fn is_public(user: &str, host: &str) -> bool {
    host.is_empty() && user.eq_ignore_ascii_case("PUBLIC")
}

/// How MariaDB's `GRANT` and `SHOW GRANTS` name an account, a role (empty host) or PUBLIC.
fn grantee(user: &str, host: &str) -> String {
    if is_public(user, host) {
        "PUBLIC".into()
    } else if host.is_empty() {
        ident(user)
    } else {
        account(user, host)
    }
}

/// Add to `accounts` the roles and users that `accounts`' roles are granted to, to a
/// fixed point (a role granted to a role passes its privileges on); their memberships.
fn role_members(
    connection: &mut Connection,
    accounts: &mut Vec<(String, String)>,
) -> Result<Vec<Membership>, PluginError> {
    // The account that creates a role holds it with admin option: administrators (global
    // CREATE USER or SUPER) are members that way, not through the database; they are
    // the target server's business, and their password hashes stay where they are.
    let rows = connection
        .rows(
            "SELECT m.Role, m.User, m.Host, m.Admin_option FROM mysql.roles_mapping m \
             LEFT JOIN mysql.user u ON u.User = m.User AND u.Host = m.Host \
             WHERE m.Host = '' OR NOT (COALESCE(u.Create_user_priv, 'N') = 'Y' OR COALESCE(u.Super_priv, 'N') = 'Y') \
             ORDER BY m.Role, m.User, m.Host",
        )
        .map_err(|e| failure("listing the roles' members", e))?;
    let mappings: Vec<Membership> = rows
        .into_iter()
        .map(|row| {
            let [role, user, host, admin] = text(row);
            Membership { role, member: (user, host), admin: admin == "Y" }
        })
        .collect();
    let carried = |accounts: &[(String, String)], role: &str| accounts.iter().any(|(u, h)| u == role && h.is_empty());
    loop {
        let before = accounts.len();
        for mapping in &mappings {
            if carried(accounts, &mapping.role) && !accounts.contains(&mapping.member) {
                accounts.push(mapping.member.clone());
            }
        }
        if accounts.len() == before {
            break;
        }
    }
    Ok(mappings.into_iter().filter(|m| carried(accounts, &m.role) && accounts.contains(&m.member)).collect())
}

/// MariaDB users' default roles: (user, host, role).
fn default_roles(connection: &mut Connection) -> Result<Vec<(String, String, String)>, PluginError> {
    let rows = connection
        .rows("SELECT User, Host, default_role FROM mysql.user WHERE default_role <> ''")
        .map_err(|e| failure("reading the default roles", e))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [user, host, role] = text(row);
            (user, host, role)
        })
        .collect())
}

/// The statement that drops an account the restore created (a role has no host).
pub fn drop_statement(user: &str, host: &str) -> String {
    if host.is_empty() { format!("DROP ROLE {}", ident(user)) } else { format!("DROP USER {}", account(user, host)) }
}

/// The accounts of the server, to tell which a restore created.
pub fn accounts(connection: &mut Connection) -> Result<Vec<(String, String)>, Error> {
    // PUBLIC is no account to drop (MariaDB adds its row with its first grant).
    let rows = connection.rows("SELECT User, Host FROM mysql.user WHERE NOT (Host = '' AND User = 'PUBLIC')")?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [user, host] = text(row);
            (user, host)
        })
        .collect())
}
