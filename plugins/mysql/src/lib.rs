//! The MySQL/MariaDB plugin: a consistent logical backup of one database or several,
//! taken in one transaction opened under a short, bounded lock of all commits, as SQL that
//! the `mariadb`/`mysql` client replays alone; restored by this plugin statement by
//! statement into empty (or, with replace, recreated) databases.
//!
//! Artifacts per database, in replay order: `schema.sql` (the database's defaults, tables,
//! sequences, stand-ins for views), `data.NNNNN.<table>.sql` (one per table, batched
//! `INSERT`s), `post.sql` (views, routines, triggers, events), and with option `users` the
//! accounts with privileges on the database (`users.sql`); a backup of several databases
//! prefixes them per database and lists the databases in `databases.sql` (see
//! [`layout`]). Options: `tls`, `tls-ca`, `server-public-key`, `lock-timeout`, `databases`, `users`, `jobs`,
//! `chunk-size`, `restore-databases`, `definers`, `create-users`, `keys-after-data`; see
//! `docs/mysql.md`.

mod auth;
mod backup;
mod copying;
mod keys;
mod layout;
mod protocol;
mod restore;
mod script;
mod users;

use std::time::Duration;

use stowage_plugin_sdk::{
    DatabaseSettings, Operation, Options, Plugin, PluginError, PluginMetadata, RestoreOptions, Summary, export,
    optional,
};
use stowage_plugin_tls::Verification;

use crate::auth::ServerKey;
use crate::protocol::{Connection, Error, Login, codes};
use crate::users::UsersArtifact;

const MEDIA_TYPE: &str = "application/sql";

/// The server's own databases: never part of `databases=*`, never a restore's target.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "mysql", "performance_schema", "sys"];

/// The most connections a restore loads tables on.
const MAX_JOBS: usize = 16;

/// Waiting for a server that does not answer ends after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

struct Config {
    addresses: Vec<String>,
    login: Login,
    database: String,
    /// Seconds the lock of the consistent point may be waited for.
    lock_timeout: u32,
    /// Connections reading (backup) or loading (restore) tables at once.
    jobs: usize,
    /// Backup: a table with more data than this is read in ranges of its primary key.
    chunk_bytes: u64,
    /// Restore: a table with more stored data than this gets its plain secondary keys
    /// after its rows; `None`: never (option `keys-after-data`, see [`keys`]).
    keys_after_data: Option<u64>,
    /// Backup: which accounts go into `users.sql`.
    users: UsersArtifact,
    /// Restore: whether `users.sql` is applied.
    create_users: bool,
    /// Restore: who the restored views, routines, triggers and events run as.
    definers: Definers,
    /// Backup: the databases besides `database` (option `databases`).
    databases: Option<Databases>,
    /// Restore: which databases of a backup of several go where (option
    /// `restore-databases`; apart from `databases` because a restore inherits the
    /// backup's options).
    restore_databases: Option<Databases>,
}

/// Option `definers`: the `DEFINER` of restored views, routines, triggers and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Definers {
    /// As in the source (creating them for another account needs `SET USER` or `SUPER`).
    Keep,
    /// The restoring user, as `mydumper --skip-definer` leaves them.
    CurrentUser,
}

/// Options `databases` and `restore-databases`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Databases {
    /// `*`: on backup every database the user sees but the server's own; on restore
    /// every database of the backup, each under its own name.
    All,
    /// `a,b:c`: these, on restore `b` into `c` (`b` into `b` on backup).
    Named(Vec<Mapping>),
}

/// One database of the option, and on restore the name it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    source: String,
    target: String,
}

impl Databases {
    /// The value of option `option`.
    fn parse(option: &str, value: &str) -> Result<Self, PluginError> {
        if value.trim() == "*" {
            return Ok(Databases::All);
        }
        let invalid = |why: &str| PluginError::InvalidSettings(format!("option {option}: {value:?}: {why}"));
        let mut mappings = Vec::new();
        for item in value.split(',').map(str::trim) {
            let (source, target) = item.split_once(':').unwrap_or((item, item));
            let (source, target) = (source.trim(), target.trim());
            if source.is_empty() || target.is_empty() {
                return Err(invalid("name databases as a,b (on restore a,b:b_copy), or * for all"));
            }
            if mappings.iter().any(|m: &Mapping| m.target == target) {
                return Err(invalid(&format!("{target} is named twice")));
            }
            mappings.push(Mapping { source: source.to_owned(), target: target.to_owned() });
        }
        Ok(Databases::Named(mappings))
    }
}

impl Config {
    fn from(settings: &DatabaseSettings) -> Result<Self, PluginError> {
        let options = Options::new(settings);
        // MySQL's --ssl-mode values, in lower case.
        let (verification, required) = match options.get("tls").unwrap_or("preferred") {
            "disabled" => (None, false),
            "preferred" => (Some(Verification::None), false),
            "required" => (Some(Verification::None), true),
            "verify-ca" => (Some(Verification::Chain), true),
            "verify-identity" => (Some(Verification::ChainAndName), true),
            other => {
                return Err(PluginError::InvalidSettings(format!(
                    "option tls: {other:?} is not one of disabled, preferred, required, verify-ca, verify-identity"
                )));
            }
        };
        let tls = verification
            .map(|verification| stowage_plugin_tls::settings(verification, options.get("tls-ca"), &settings.host))
            .transpose()
            .map_err(PluginError::InvalidSettings)?
            .map(|tls| (tls, required));
        let lock_timeout = options.parse_or("lock-timeout", 10u32)?;
        if lock_timeout == 0 {
            return Err(PluginError::InvalidSettings("option lock-timeout must be at least 1 second".into()));
        }
        let jobs = options.parse_or("jobs", 2usize)?;
        if !(1..=MAX_JOBS).contains(&jobs) {
            return Err(PluginError::InvalidSettings(format!("option jobs must be 1 to {MAX_JOBS}")));
        }
        let users_option = options.get("users").unwrap_or("none");
        let users = UsersArtifact::parse(users_option).ok_or_else(|| {
            PluginError::InvalidSettings(format!(
                "option users: {users_option:?} is not one of none, locked, with-passwords"
            ))
        })?;
        if settings.database.is_empty() {
            return Err(PluginError::InvalidSettings("name the database to back up or restore into".into()));
        }
        Ok(Config {
            addresses: settings.addresses.clone(),
            login: Login {
                user: settings.user.clone().unwrap_or_else(|| "root".into()),
                password: settings.password.clone(),
                tls,
                server_key: options
                    .get("server-public-key")
                    .map(ServerKey::parse)
                    .transpose()
                    .map_err(|why| PluginError::InvalidSettings(format!("option server-public-key: {why}")))?,
            },
            database: settings.database.clone(),
            lock_timeout,
            jobs,
            chunk_bytes: options.size_or("chunk-size", 256 << 20, 1 << 20)?,
            keys_after_data: match options.get("keys-after-data") {
                Some("off") => None,
                value => Some(options.size_or("keys-after-data", 16 << 20, 0).map_err(|_| {
                    PluginError::InvalidSettings(format!(
                        "option keys-after-data: {:?} is neither a size (a number with kB, MB, GB or TB) nor off",
                        value.unwrap_or_default()
                    ))
                })?),
            },
            users,
            create_users: options.parse_or("create-users", false)?,
            definers: match options.get("definers").unwrap_or("keep") {
                "keep" => Definers::Keep,
                "current-user" => Definers::CurrentUser,
                other => {
                    return Err(PluginError::InvalidSettings(format!(
                        "option definers: {other:?} is not one of keep, current-user"
                    )));
                }
            },
            databases: options.get("databases").map(|value| Databases::parse("databases", value)).transpose()?,
            restore_databases: options
                .get("restore-databases")
                .map(|value| Databases::parse("restore-databases", value))
                .transpose()?,
        })
    }

    fn at(&self) -> String {
        self.addresses.join(", ")
    }

    /// Log in, or say precisely why not.
    fn connect(&self) -> Result<Connection, PluginError> {
        Connection::connect(&self.addresses, &self.login, CONNECT_TIMEOUT).map_err(|error| match error {
            Error::Server { code: codes::ACCESS_DENIED, message, .. } => {
                PluginError::Authentication(format!("user {:?} at {}: {message}", self.login.user, self.at()))
            }
            Error::Unsupported(message) => PluginError::Unsupported(format!("{} : {message}", self.at())),
            error => PluginError::Connection(format!("MySQL at {}: {error}", self.at())),
        })
    }
}

/// A failure while working on the server, with what was being done.
fn failure(doing: &str, error: Error) -> PluginError {
    match error {
        Error::Io(error) => PluginError::Connection(format!("{doing}: the connection to the server was lost: {error}")),
        Error::Tls(message) => PluginError::Connection(format!("{doing}: {message}")),
        Error::Unsupported(message) => PluginError::Unsupported(format!("{doing}: {message}")),
        error @ (Error::Server { .. } | Error::Protocol(_)) => PluginError::Database(format!("{doing}: {error}")),
    }
}

struct MysqlPlugin;

impl Plugin for MysqlPlugin {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "mysql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "MySQL 8 and MariaDB 10.6+: consistent logical backups as SQL the mysql client replays".into(),
            operations: vec![Operation::Backup, Operation::Restore],
            settings: vec![
                optional(
                    "tls",
                    "disabled, preferred (TLS when the server offers it), required, verify-ca (chain to tls-ca) \
                     or verify-identity (and the host name), as mysql --ssl-mode",
                    Some("preferred"),
                ),
                optional("tls-ca", "PEM certificates of the CA that signs the server's certificate", None),
                optional(
                    "server-public-key",
                    "The server's RSA key for a caching_sha2_password login without TLS: request (asked of the \
                     server, as mysql --get-server-public-key) or the key as PEM",
                    None,
                ),
                optional(
                    "lock-timeout",
                    "Backup: seconds to wait for the lock that opens the consistent snapshot (BACKUP STAGE on \
                     MariaDB, FLUSH TABLES WITH READ LOCK on MySQL); the backup fails after that",
                    Some("10"),
                ),
                optional(
                    "users",
                    "Backup: the accounts with privileges on the database, in users.sql: none, locked (created \
                     without a password and locked) or with-passwords (their authentication); needs SELECT on mysql",
                    Some("none"),
                ),
                optional(
                    "databases",
                    "Backup: more databases for the same backup at the same consistent point, as a,b, or * for \
                     every database but the server's own",
                    None,
                ),
                optional(
                    "restore-databases",
                    "Restore of a backup of several databases: which go where, as a,b:b_copy, or * for all under \
                     their own names (default: the first into the named database)",
                    None,
                ),
                optional(
                    "chunk-size",
                    "Backup: a table with more data than this (kB, MB, GB, TB) and a one-column integer primary key \
                     is read, stored and restored in ranges of its key, each its own artifact",
                    Some("256MB"),
                ),
                optional(
                    "keys-after-data",
                    "Restore: a table with more data in the backup than this (kB, MB, GB, TB; 0 for every table) \
                     gets its plain secondary keys built after its rows are loaded, in one sorted pass each; off: \
                     never",
                    Some("16MB"),
                ),
                optional(
                    "jobs",
                    "Connections that read tables at once on one consistent point (backup, with the lock), or \
                     load them (restore), 1 to 16",
                    Some("2"),
                ),
                optional(
                    "definers",
                    "Restore: keep (views, routines, triggers and events keep their DEFINER, which needs SET USER or \
                     SUPER for others) or current-user (the restoring user becomes their definer)",
                    Some("keep"),
                ),
                optional(
                    "create-users",
                    "Restore: true applies users.sql after the database: missing accounts are created, grants added",
                    Some("false"),
                ),
            ],
        }
    }

    fn backup(settings: DatabaseSettings) -> Result<Summary, PluginError> {
        backup::run(&Config::from(&settings)?)
    }

    fn restore(settings: DatabaseSettings, options: RestoreOptions) -> Result<Summary, PluginError> {
        restore::run(&Config::from(&settings)?, options.replace_existing)
    }
}

export!(MysqlPlugin);
