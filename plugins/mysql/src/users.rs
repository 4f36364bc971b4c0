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
//! authentication; grants only add. Global privileges and role memberships are not
//! carried (they are the server's, not the database's).

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

/// Read the accounts and their grants on `database` and render [`ARTIFACT`]; `None`
/// when no account holds privileges there.
pub fn read(connection: &mut Connection, database: &str, what: UsersArtifact) -> Result<Option<String>, PluginError> {
    if what == UsersArtifact::None {
        return Ok(None);
    }
    let names = grant_names(database).map(|name| literal(&name)).join(", ");
    let accounts = connection
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
    if what == UsersArtifact::WithPasswords && !connection.server.is_mariadb() {
        // MySQL's hashes (caching_sha2_password) are binary: printed as hex, they stay text.
        connection
            .execute("SET SESSION print_identified_with_as_hex = ON")
            .map_err(|e| failure("setting up the session", e))?;
    }
    let mut script = String::new();
    let mut count = 0;
    for row in accounts {
        let [user, host] = text(row);
        // A MariaDB role has an empty host and no CREATE USER of its own.
        if host.is_empty() {
            report::warn(&format!(
                "role {user:?} holds privileges on {database}: roles are not carried in {ARTIFACT}; create and grant it by hand"
            ));
            continue;
        }
        let who = account(&user, &host);
        let create =
            match what {
                UsersArtifact::WithPasswords => {
                    let shown = connection
                        .rows(&format!("SHOW CREATE USER {who}"))
                        .map_err(|e| failure(&format!("reading account {who}"), e))?;
                    let [create] =
                        text(shown.into_iter().next().ok_or_else(|| {
                            PluginError::Database(format!("SHOW CREATE USER {who} returned nothing"))
                        })?);
                    create.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1)
                }
                _ => format!("CREATE USER IF NOT EXISTS {who} ACCOUNT LOCK"),
            };
        script.push_str(&format!("{create};\n"));
        let grants = connection
            .rows(&format!("SHOW GRANTS FOR {who}"))
            .map_err(|e| failure(&format!("reading the grants of {who}"), e))?;
        for grant in grants {
            let [grant] = text(grant);
            if let Some(grant) = for_default_database(&grant, database) {
                script.push_str(&format!("{grant};\n"));
            }
        }
        count += 1;
    }
    report::info(&format!("{count} accounts hold privileges on {database}"));
    Ok((count > 0).then_some(script))
}

/// The accounts of the server, to tell which a restore created.
pub fn accounts(connection: &mut Connection) -> Result<Vec<(String, String)>, Error> {
    let rows = connection.rows("SELECT User, Host FROM mysql.user")?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [user, host] = text(row);
            (user, host)
        })
        .collect())
}
