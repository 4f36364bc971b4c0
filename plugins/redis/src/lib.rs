//! The Redis plugin: a point-in-time snapshot of a whole Redis instance, taken the way a
//! replica takes it (`PSYNC`: the server forks and streams its RDB), stored as one
//! artifact `dump.rdb` exactly as the server wrote it, and restored into a running
//! server with one `RESTORE` per key, pipelined. Servers that refuse replication to the
//! user (managed services, ACLs) are read key by key with `SCAN` + `DUMP` instead, into
//! an RDB of the same format, with a warning that it is not point-in-time.
//!
//! Options: `method` (`auto`, `replication`, `scan`), `tls`, `tls-ca`; see `docs/redis.md`.

mod backup;
mod crc64;
mod rdb;
mod resp;
mod restore;

use stowage_plugin_sdk::{
    DatabaseSettings, Operation, Options, Plugin, PluginError, PluginMetadata, RestoreOptions, Summary, export,
    optional,
};

use crate::rdb::RdbError;
use stowage_plugin_tls::Verification;

use crate::resp::{Connection, Error, Login, Reply};

/// The artifact: an RDB file, as `redis-server` loads it from its data directory.
const ARTIFACT: &str = "dump.rdb";
const MEDIA_TYPE: &str = "application/x-redis-rdb";

/// How a backup reads the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Replication, or `SCAN` when the server refuses it (with a warning).
    Auto,
    /// Replication only: fail when the server refuses it.
    Replication,
    /// `SCAN` + `DUMP` + `PTTL` per key: not point-in-time.
    Scan,
}

struct Config {
    addresses: Vec<String>,
    login: Login,
    method: Method,
}

impl Config {
    fn from(settings: &DatabaseSettings) -> Result<Self, PluginError> {
        let options = Options::new(settings);
        let method = match options.get("method").unwrap_or("auto") {
            "auto" => Method::Auto,
            "replication" => Method::Replication,
            "scan" => Method::Scan,
            other => {
                return Err(PluginError::InvalidSettings(format!(
                    "option method: {other:?} is not one of auto, replication, scan"
                )));
            }
        };
        let verification = match options.get("tls").unwrap_or("disable") {
            "disable" => None,
            "require" => Some(Verification::None),
            "verify-ca" => Some(Verification::Chain),
            "verify-full" => Some(Verification::ChainAndName),
            other => {
                return Err(PluginError::InvalidSettings(format!(
                    "option tls: {other:?} is not one of disable, require, verify-ca, verify-full"
                )));
            }
        };
        let tls = verification
            .map(|verification| stowage_plugin_tls::settings(verification, options.get("tls-ca"), &settings.host))
            .transpose()
            .map_err(PluginError::InvalidSettings)?;
        if settings.user.is_some() && settings.password.is_none() {
            return Err(PluginError::InvalidSettings(format!(
                "user {:?} needs a password: Redis logs users in with AUTH user password",
                settings.user.as_deref().unwrap_or_default()
            )));
        }
        Ok(Config {
            addresses: settings.addresses.clone(),
            login: Login { user: settings.user.clone(), password: settings.password.clone(), tls },
            method,
        })
    }

    fn at(&self) -> String {
        self.addresses.join(", ")
    }

    /// Log in, or say precisely why not.
    fn connect(&self) -> Result<Connection, PluginError> {
        Connection::connect(&self.addresses, &self.login).map_err(|error| match &error {
            Error::Server(message)
                if message.starts_with("WRONGPASS")
                    || message.contains("invalid password")
                    || message.starts_with("NOAUTH") =>
            {
                let user = self.login.user.as_deref().unwrap_or("default");
                PluginError::Authentication(format!("user {user:?} at {}: {message}", self.at()))
            }
            Error::Server(message) if message.contains("without any password configured") => {
                PluginError::Authentication(format!(
                    "Redis at {} has no password set, but one was given: {message}",
                    self.at()
                ))
            }
            _ => PluginError::Connection(format!("Redis at {}: {error}", self.at())),
        })
    }
}

/// A failure while working on the server, with what was being done.
fn failure(doing: &str, error: Error) -> PluginError {
    match error {
        Error::Io(error) => PluginError::Connection(format!("{doing}: the connection to Redis was lost: {error}")),
        Error::Server(message) if message.starts_with("NOAUTH") => {
            PluginError::Authentication(format!("{doing}: {message} (the server needs a password)"))
        }
        Error::Server(message) => PluginError::Database(format!("{doing}: {message}")),
        Error::Protocol(message) => PluginError::Database(format!("{doing}: {message}")),
        Error::Tls(message) => PluginError::Connection(format!("{doing}: {message}")),
    }
}

/// An RDB that cannot be read, with what was being done; `input_lost` says what a
/// failed or short read means (the connection during a backup, the artifact during a
/// restore).
fn rdb_failure(doing: &str, error: RdbError, input_lost: fn(String) -> PluginError) -> PluginError {
    match error {
        RdbError::Io(_) | RdbError::Truncated(_) => input_lost(format!("{doing}: {error}")),
        RdbError::Sink(error) => PluginError::Artifact(format!("{doing}: {error}")),
        RdbError::Corrupt(message) => PluginError::Database(format!("{doing}: invalid RDB: {message}")),
        RdbError::Unsupported(message) => PluginError::Unsupported(format!("{doing}: {message}")),
    }
}

/// The `INFO` fields of `section`, as name/value pairs.
fn info(connection: &mut Connection, section: &str) -> Result<Vec<(String, String)>, PluginError> {
    let text = connection
        .command(&[b"INFO", section.as_bytes()])
        .map_err(|e| failure(&format!("reading INFO {section}"), e))?
        .text()
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect())
}

/// The server's version (`INFO server`).
fn server_version(connection: &mut Connection) -> Result<String, PluginError> {
    Ok(info(connection, "server")?
        .into_iter()
        .find(|(name, _)| name == "redis_version")
        .map(|(_, value)| value)
        .unwrap_or_else(|| "unknown".into()))
}

/// The databases that hold keys, with their key counts (`INFO keyspace`).
fn keyspace(connection: &mut Connection) -> Result<Vec<(u64, u64)>, PluginError> {
    Ok(info(connection, "keyspace")?
        .into_iter()
        .filter_map(|(name, value)| {
            let database = name.strip_prefix("db")?.parse().ok()?;
            let keys = value.split(',').find_map(|field| field.strip_prefix("keys="))?.parse().ok()?;
            Some((database, keys))
        })
        .collect())
}

/// How many function libraries the server holds (none before 7.0, which has no functions).
fn function_libraries(connection: &mut Connection) -> Result<u64, PluginError> {
    match connection.command(&[b"FUNCTION", b"LIST"]) {
        Ok(Reply::Array(Some(libraries))) => Ok(libraries.len() as u64),
        Ok(_) => Ok(0),
        Err(Error::Server(message)) if message.contains("unknown command") => Ok(0),
        Err(error) => Err(failure("FUNCTION LIST", error)),
    }
}

struct RedisPlugin;

impl Plugin for RedisPlugin {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "redis".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Redis 5 to 7.4: point-in-time RDB snapshots over the replication protocol".into(),
            operations: vec![Operation::Backup, Operation::Restore],
            settings: vec![
                optional(
                    "method",
                    "Backup: replication (PSYNC, point-in-time), scan (SCAN + DUMP per key, not point-in-time), \
                     or auto (replication, scan when the server refuses it)",
                    Some("auto"),
                ),
                optional(
                    "tls",
                    "disable, require (TLS, any certificate), verify-ca (chain to tls-ca) or verify-full (and the host name)",
                    Some("disable"),
                ),
                optional("tls-ca", "PEM certificates of the CA that signs the server's certificate", None),
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

export!(RedisPlugin);
