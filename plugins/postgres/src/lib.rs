//! The PostgreSQL plugin: a consistent logical backup of one database, taken in one
//! REPEATABLE READ, READ ONLY snapshot that several sessions share (see [`copying`]),
//! written as SQL scripts that `psql` can replay (see [`script`]), and restored through
//! the same sandboxed connections.
//!
//! Options: `sslmode`, `tls-ca`, `schemas`, `exclude-schemas`, `exclude-table-data`, `lock-timeout`,
//! `roles`, `jobs`, `chunk-size`, and for restores `no-owner`, `no-privileges`, `create-roles`
//! and `restore-*` (see [`Config`] and `docs/postgres.md`).

mod backup;
mod builds;
mod catalog;
mod copying;
mod database;
mod pick;
mod pieces;
mod protocol;
mod replay;
mod restore;
mod roles;
mod scope;
mod script;
mod tally;
mod tls;

use stowage_plugin_sdk::{
    DatabaseSettings, Operation, Options, Plugin, PluginError, PluginMetadata, RestoreOptions, Summary, export,
    optional,
};

use crate::catalog::{Optional, Selection};
use crate::pick::Pick;
use crate::protocol::{ConnectOptions, Connection, Error};
use crate::roles::RolesArtifact;
use crate::tls::TlsMode;

/// Bytes read from an artifact at a time.
const READ_BUFFER: usize = 256 * 1024;

/// Sessions of a backup or restore at most (option `jobs`).
const MAX_JOBS: usize = 16;

/// The user when the resource names none, as in libpq.
const DEFAULT_USER: &str = "postgres";

/// What the options ask for.
#[derive(Clone)]
struct Config {
    connect: ConnectOptions,
    selection: Selection,
    /// How long the backup waits for a table lock (a PostgreSQL interval).
    lock_timeout: String,
    /// What a restore leaves out.
    restore_without: Vec<Optional>,
    /// Which roles a backup writes into `roles.sql`.
    roles: RolesArtifact,
    /// Whether a restore creates the roles of `roles.sql` that the target lacks.
    create_roles: bool,
    /// Which parts of the backup a restore runs.
    pick: Pick,
    /// Sessions that read (backup) or load (restore) tables at once.
    jobs: usize,
    /// A table bigger than this (on disk) is read in pieces of about this size.
    chunk_bytes: u64,
}

/// A comma-separated option as a list.
fn list(options: &Options<'_>, name: &str) -> Vec<String> {
    options
        .get(name)
        .map(|value| value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

impl Config {
    fn from(settings: &DatabaseSettings) -> Result<Self, PluginError> {
        let options = Options::new(settings);
        let sslmode = options.get("sslmode").unwrap_or("prefer");
        let tls = TlsMode::parse(sslmode).ok_or_else(|| {
            PluginError::InvalidSettings(format!(
                "option sslmode: {sslmode:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        })?;
        let tls_settings =
            tls::settings(tls, options.get("tls-ca"), &settings.host).map_err(PluginError::InvalidSettings)?;
        let roles_option = options.get("roles").unwrap_or("without-passwords");
        let roles = RolesArtifact::parse(roles_option).ok_or_else(|| {
            PluginError::InvalidSettings(format!(
                "option roles: {roles_option:?} is not one of without-passwords, with-passwords, none"
            ))
        })?;
        if settings.database.is_empty() {
            return Err(PluginError::InvalidSettings("the database name is missing".into()));
        }
        let jobs = options.parse_or("jobs", 2usize)?;
        if !(1..=MAX_JOBS).contains(&jobs) {
            return Err(PluginError::InvalidSettings(format!("option jobs must be 1 to {MAX_JOBS}")));
        }
        let chunk_bytes = options.size_or("chunk-size", 256 << 20, 1 << 20)?;
        Ok(Config {
            connect: ConnectOptions {
                addresses: settings.addresses.clone(),
                database: settings.database.clone(),
                user: settings.user.clone().unwrap_or_else(|| DEFAULT_USER.into()),
                password: settings.password.clone(),
                tls,
                tls_settings,
            },
            selection: Selection {
                schemas: list(&options, "schemas"),
                exclude_schemas: list(&options, "exclude-schemas"),
                exclude_table_data: list(&options, "exclude-table-data"),
            },
            lock_timeout: options.get("lock-timeout").unwrap_or("5min").to_owned(),
            restore_without: Optional::ALL
                .into_iter()
                .filter_map(|part| match options.parse_or(part.option(), false) {
                    Ok(true) => Some(Ok(part)),
                    Ok(false) => None,
                    Err(error) => Some(Err(error)),
                })
                .collect::<Result<_, _>>()?,
            roles,
            create_roles: options.parse_or("create-roles", false)?,
            pick: Pick {
                schemas: list(&options, "restore-schemas"),
                tables: list(&options, "restore-tables"),
                exclude_tables: list(&options, "restore-exclude-tables"),
            },
            jobs,
            chunk_bytes,
        })
    }

    /// Log in, or say precisely why not.
    fn connect(&self) -> Result<Connection, PluginError> {
        Connection::connect(&self.connect).map_err(|error| self.connect_error(error))
    }

    fn connect_error(&self, error: Error) -> PluginError {
        let ConnectOptions { user, database, addresses, .. } = &self.connect;
        let at = addresses.join(", ");
        match &error {
            Error::Io(_) | Error::Tls(_) | Error::CipherRefused => {
                PluginError::Connection(format!("PostgreSQL at {at}: {error}"))
            }
            Error::Authentication(_) => PluginError::Authentication(format!("user {user:?} at {at}: {error}")),
            Error::Server(server) if server.code.starts_with("28") => PluginError::Authentication(format!(
                "PostgreSQL refused user {user:?} for database {database:?}: {error}"
            )),
            _ => failure(&format!("connecting to database {database:?}"), error),
        }
    }
}

/// Reading or writing an artifact failed.
fn artifact_error(error: std::io::Error) -> PluginError {
    PluginError::Artifact(error.to_string())
}

/// A failure while working on the database, with what was being done.
fn failure(doing: &str, error: Error) -> PluginError {
    let lost = |error: &Error| format!("{doing}: the connection to the database was lost: {error}");
    match &error {
        Error::Io(_) => PluginError::Connection(lost(&error)),
        // Operator intervention (the server shuts down, the database is dropped, the
        // session is terminated) and connection exceptions.
        Error::Server(server) if server.code.starts_with("57") || server.code.starts_with("08") => {
            PluginError::Connection(lost(&error))
        }
        _ => PluginError::Database(format!("{doing}: {error}")),
    }
}

struct PostgresPlugin;

impl Plugin for PostgresPlugin {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "postgres".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "PostgreSQL: consistent logical backup and restore as psql-replayable SQL".into(),
            operations: vec![Operation::Backup, Operation::Restore],
            settings: vec![
                optional(
                    "sslmode",
                    "disable, prefer (TLS when the server offers it), require, verify-ca or verify-full, as in libpq",
                    Some("prefer"),
                ),
                optional("tls-ca", "PEM certificates of the CA that signs the server's certificate", None),
                optional("schemas", "Comma-separated schemas to back up (default: all user schemas)", None),
                optional("exclude-schemas", "Comma-separated schemas to leave out", None),
                optional("exclude-table-data", "Comma-separated schema.table whose rows are left out", None),
                optional("lock-timeout", "How long to wait for a table lock (PostgreSQL interval)", Some("5min")),
                optional(
                    "jobs",
                    "Sessions that read tables at once on one snapshot (backup), or load them (restore into a \
                     database the restore creates), 1 to 16",
                    Some("2"),
                ),
                optional(
                    "chunk-size",
                    "Backup: a table bigger than this on disk is read, stored and restored in pieces of this size \
                     (kB, MB, GB, TB)",
                    Some("256MB"),
                ),
                optional(
                    "roles",
                    "Backup: the cluster's roles written to roles.sql: without-passwords, with-passwords \
                     (password hashes; needs a superuser) or none",
                    Some("without-passwords"),
                ),
                optional(
                    "create-roles",
                    "Restore: true first creates the roles of the backup's roles.sql that the target cluster lacks",
                    Some("false"),
                ),
                optional(
                    "no-owner",
                    "Restore: true leaves objects owned by the restoring user (the source's roles need not exist)",
                    Some("false"),
                ),
                optional(
                    "no-privileges",
                    "Restore: true leaves out GRANT/REVOKE and default privileges (as pg_restore --no-privileges)",
                    Some("false"),
                ),
                optional(
                    "restore-schemas",
                    "Restore: comma-separated schemas to restore, with everything in them (as pg_restore --schema), \
                     into a database that may hold other objects",
                    None,
                ),
                optional(
                    "restore-tables",
                    "Restore: comma-separated schema.table (or view, sequence) to restore with their indexes, \
                     constraints, triggers, policies, privileges and rows (as pg_restore --table)",
                    None,
                ),
                optional(
                    "restore-exclude-tables",
                    "Restore: comma-separated schema.table left out, with what is part of them",
                    None,
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

export!(PostgresPlugin);
