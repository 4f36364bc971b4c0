//! A restore: the artifacts replayed statement by statement, as the `mariadb` client
//! would, into an empty database (created if missing; with replace, dropped and created
//! again), the tables' data on `jobs` connections at once. DDL in MySQL commits as it
//! goes, so a restore that fails returns the target to where it started: dropped if the
//! restore created it, else empty again.

use std::io::BufReader;

use stowage_plugin_sdk::artifacts::{self, ArtifactReader};
use stowage_plugin_sdk::{PluginError, Summary, report, target_not_empty};

use crate::protocol::{Connection, Error, text};
use crate::script::{Statements, ident, literal};
use crate::{Config, DATA, POST, SCHEMA, failure, users};

/// Bytes read from an artifact at a time.
const READ_BUFFER: usize = 256 << 10;

/// How much of a failed statement an error quotes.
const EXCERPT: usize = 160;

/// The target database before the restore.
enum Target {
    Missing,
    /// Exists, with this many tables, views, routines and events, and these defaults.
    Exists {
        objects: u64,
        charset: String,
        collation: String,
    },
}

pub fn run(config: &Config, replace: bool) -> Result<Summary, PluginError> {
    let names: Vec<String> = artifacts::list().into_iter().map(|artifact| artifact.name).collect();
    // Asked for before anything is restored, not found after it all.
    if config.create_users && !names.iter().any(|name| name == users::ARTIFACT) {
        return Err(PluginError::Unsupported(format!(
            "option create-users: the backup has no {}: it was taken with option users=none (the default), or no \
             account held privileges on the database",
            users::ARTIFACT
        )));
    }
    let data = data_artifacts(&names)?;
    let mut connection = config.connect()?;
    let database = config.database.as_str();
    let target = target(&mut connection, database)?;
    let created = match &target {
        Target::Missing => {
            connection
                .execute(&format!("CREATE DATABASE {}", ident(database)))
                .map_err(|e| failure(&format!("creating database {database}"), e))?;
            report::info(&format!("created database {database}"));
            true
        }
        Target::Exists { objects: 0, .. } => false,
        Target::Exists { objects, .. } if !replace => {
            return Err(target_not_empty(&format!(
                "database {database:?} has {objects} tables, views, routines and events"
            )));
        }
        Target::Exists { objects, charset, collation } => {
            report::warn(&format!("replacing the {objects} tables, views, routines and events of database {database}"));
            recreate(&mut connection, database, charset, collation)
                .map_err(|e| failure(&format!("emptying database {database}"), e))?;
            false
        }
    };
    let outcome = replay(config, &mut connection, &data).and_then(|done| {
        let accounts = if config.create_users { create_users(&mut connection)? } else { 0 };
        Ok((done, accounts))
    });
    connection.quit();
    let ((tables, rows), accounts) = match outcome {
        Ok(done) => done,
        Err(error) => return Err(undo(config, &target, created, error)),
    };
    let mut description = format!("restored database {database}: {tables} tables ({rows} rows)");
    let mut attributes = vec![
        ("database".into(), database.to_owned()),
        ("tables".into(), tables.to_string()),
        ("rows".into(), rows.to_string()),
        ("jobs".into(), config.jobs.to_string()),
    ];
    if config.create_users {
        description.push_str(&format!("; {accounts} accounts created"));
        attributes.push(("accounts_created".into(), accounts.to_string()));
    }
    Ok(Summary { description, attributes })
}

/// Apply `users.sql` (option `create-users`) in the restored database; returns how many
/// accounts it created. If it fails, the accounts it created are dropped again (grants it
/// added to accounts that were there stay: docs/mysql.md).
fn create_users(connection: &mut Connection) -> Result<usize, PluginError> {
    let counting = |e| failure("listing the server's accounts", e);
    let before = users::accounts(connection).map_err(counting)?;
    let limit = max_allowed_packet(connection)?;
    let applied = Load::open(users::ARTIFACT, limit)?.run(connection);
    let created: Vec<(String, String)> = users::accounts(connection)
        .map_err(counting)?
        .into_iter()
        .filter(|account| !before.contains(account))
        .collect();
    if let Err(error) = applied {
        for (user, host) in &created {
            let dropped = connection.execute(&format!("DROP USER {}", users::account(user, host)));
            if let Err(drop_error) = dropped {
                report::warn(&format!("account {user}@{host}, created by the failed restore, is left: {drop_error}"));
            }
        }
        return Err(error);
    }
    Ok(created.len())
}

/// The data artifacts in their numbered order, whatever order the backup created them
/// in; `schema.sql` and `post.sql`, which replay before and after them, must be there.
fn data_artifacts(names: &[String]) -> Result<Vec<String>, PluginError> {
    for required in [SCHEMA, POST] {
        if !names.iter().any(|name| name == required) {
            return Err(PluginError::Artifact(format!(
                "the backup has no {required}: it is not a MySQL plugin backup"
            )));
        }
    }
    Ok(artifacts::series(names, DATA))
}

fn target(connection: &mut Connection, database: &str) -> Result<Target, PluginError> {
    let name = literal(database);
    let rows = connection
        .rows(&format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, \
             (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {name}) + \
             (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {name}) + \
             (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {name}) \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {name}"
        ))
        .map_err(|e| failure("inspecting the target database", e))?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(Target::Missing);
    };
    let [charset, collation, objects] = text(row);
    let objects = objects
        .parse()
        .map_err(|_| PluginError::Database(format!("inspecting the target database: a count of {objects:?}")))?;
    Ok(Target::Exists { objects, charset, collation })
}

/// Drop `database` and create it again, empty, with the same defaults.
fn recreate(connection: &mut Connection, database: &str, charset: &str, collation: &str) -> Result<(), Error> {
    connection.execute(&format!("DROP DATABASE {}", ident(database)))?;
    connection.execute(&format!("CREATE DATABASE {} CHARACTER SET {charset} COLLATE {collation}", ident(database)))?;
    Ok(())
}

/// Run every statement of every artifact: `schema.sql`, the `data` artifacts on up to
/// `jobs` connections at once (a table each), then `post.sql`; returns the tables loaded
/// and their rows.
fn replay(config: &Config, connection: &mut Connection, data: &[String]) -> Result<(u64, u64), PluginError> {
    prepare(connection, &config.database)?;
    let total = data.len() as u64 + 2;
    let limit = max_allowed_packet(connection)?;
    Load::open(SCHEMA, limit)?.run(connection)?;
    report::progress(SCHEMA, 1, Some(total), 0);

    let mut others = Vec::new();
    for _ in 1..config.jobs.min(data.len().max(1)) {
        // A server at its max_connections still gets its restore, on fewer connections.
        match config.connect().and_then(|mut other| prepare(&mut other, &config.database).map(|()| other)) {
            Ok(other) => others.push(other),
            Err(error) => {
                report::warn(&format!(
                    "loading tables on {} connections instead of {}: another one failed: {}",
                    others.len() + 1,
                    config.jobs,
                    message(&error)
                ));
                break;
            }
        }
    }
    let mut connections: Vec<&mut Connection> = std::iter::once(&mut *connection).chain(others.iter_mut()).collect();
    let mut slots: Vec<Option<Load>> = connections.iter().map(|_| None).collect();
    let mut queue = data.iter();
    let (mut tables, mut rows) = (0u64, 0u64);
    loop {
        let mut busy = false;
        // Round robin: while this connection's server thread runs its statement, the
        // others' next statements are read and sent.
        for (connection, slot) in connections.iter_mut().zip(slots.iter_mut()) {
            if slot.is_none()
                && let Some(name) = queue.next()
            {
                *slot = Some(Load::open(name, limit)?);
            }
            let Some(load) = slot else { continue };
            busy = true;
            if load.step(connection)? {
                commit(connection, &load.name)?;
                tables += 1;
                rows += load.rows;
                report::progress(&load.name, tables + 1, Some(total), rows);
                *slot = None;
            }
        }
        if !busy {
            break;
        }
    }
    for other in others {
        other.quit();
    }
    Load::open(POST, limit)?.run(connection)?;
    report::progress(POST, total, Some(total), rows);
    check_foreign_keys(connection)?;
    Ok((tables, rows))
}

/// A foreign key of the restored database.
struct ForeignKey {
    table: String,
    constraint: String,
    /// The referenced table's database and name.
    schema: String,
    referenced: String,
    /// (column, referenced column) pairs, in key order.
    columns: Vec<(String, String)>,
}

/// The data loaded with foreign key checks off: count the rows that reference nothing,
/// per foreign key, and warn of any. They were in the backup, so the source has them too.
fn check_foreign_keys(connection: &mut Connection) -> Result<(), PluginError> {
    let doing = "checking the foreign keys";
    let columns = connection
        .rows(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, \
             REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL \
             ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
        )
        .map_err(|e| failure(doing, e))?;
    let mut keys: Vec<ForeignKey> = Vec::new();
    for row in columns {
        let [table, constraint, column, schema, referenced, referenced_column] = text(row);
        match keys.last_mut() {
            Some(key) if key.table == table && key.constraint == constraint => {
                key.columns.push((column, referenced_column));
            }
            _ => keys.push(ForeignKey {
                table,
                constraint,
                schema,
                referenced,
                columns: vec![(column, referenced_column)],
            }),
        }
    }
    for ForeignKey { table, constraint, schema, referenced, columns } in &keys {
        let present: Vec<String> =
            columns.iter().map(|(column, _)| format!("c.{} IS NOT NULL", ident(column))).collect();
        let matching: Vec<String> =
            columns.iter().map(|(column, other)| format!("p.{} = c.{}", ident(other), ident(column))).collect();
        let orphans = connection
            .value(&format!(
                "SELECT COUNT(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {}.{} p WHERE {})",
                ident(table),
                present.join(" AND "),
                ident(schema),
                ident(referenced),
                matching.join(" AND ")
            ))
            .map_err(|e| failure(doing, e))?
            .unwrap_or_default();
        if orphans != "0" {
            report::warn(&format!(
                "foreign key {constraint} of table {table}: {orphans} rows reference no row of {referenced} \
                 (so does the source: the backup copies the rows as they are)"
            ));
        }
    }
    Ok(())
}

/// A session in the target database, one transaction per artifact (a commit per
/// INSERT would wait for the disk each time).
fn prepare(connection: &mut Connection, database: &str) -> Result<(), PluginError> {
    connection.execute(&format!("USE {}", ident(database))).map_err(|e| failure("selecting the database", e))?;
    connection.execute("SET autocommit = 0").map_err(|e| failure("setting up the session", e))?;
    Ok(())
}

fn commit(connection: &mut Connection, name: &str) -> Result<(), PluginError> {
    connection.execute("COMMIT").map_err(|e| failure(&format!("committing {name}"), e))?;
    Ok(())
}

/// The largest statement the server takes (a larger one ends the connection).
fn max_allowed_packet(connection: &mut Connection) -> Result<usize, PluginError> {
    let value = connection
        .value("SELECT @@max_allowed_packet")
        .map_err(|e| failure("reading max_allowed_packet", e))?
        .unwrap_or_default();
    value.parse().map_err(|_| PluginError::Database(format!("max_allowed_packet is {value:?}")))
}

/// One artifact being replayed on one connection.
struct Load {
    name: String,
    /// The server's max_allowed_packet.
    limit: usize,
    statements: Statements<BufReader<ArtifactReader>>,
    /// The statement sent and not yet answered.
    running: Option<Vec<u8>>,
    rows: u64,
}

impl Load {
    fn open(name: &str, limit: usize) -> Result<Self, PluginError> {
        let reader = BufReader::with_capacity(READ_BUFFER, artifacts::open(name)?);
        Ok(Load { name: name.to_owned(), limit, statements: Statements::new(reader), running: None, rows: 0 })
    }

    /// Read the next statement while the server runs the one sent before, then wait
    /// for that one and send this; `true` once the artifact is done.
    fn step(&mut self, connection: &mut Connection) -> Result<bool, PluginError> {
        let next = self.statements.next_statement();
        if let Some(sent) = self.running.take() {
            self.rows += connection.finish().map_err(|error| statement_failure(&self.name, &sent, error))?;
        }
        match next.map_err(|e| PluginError::Artifact(format!("reading {}: {e}", self.name)))? {
            // The command byte counts too.
            Some(statement) if statement.len() >= self.limit => Err(PluginError::Database(format!(
                "{}: a statement of {:.1} MiB (a row that large) is more than the server's max_allowed_packet \
                 of {:.1} MiB: raise it (SET GLOBAL max_allowed_packet, up to 1 GiB) and restore again",
                self.name,
                mib(statement.len()),
                mib(self.limit)
            ))),
            Some(statement) => {
                connection.send(&statement).map_err(|error| statement_failure(&self.name, &statement, error))?;
                self.running = Some(statement);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// The whole artifact on `connection`, committed.
    fn run(mut self, connection: &mut Connection) -> Result<(), PluginError> {
        while !self.step(connection)? {}
        commit(connection, &self.name)
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn statement_failure(artifact: &str, statement: &[u8], error: Error) -> PluginError {
    let text = String::from_utf8_lossy(statement);
    let excerpt: String = text.chars().take(EXCERPT).collect();
    let more = if text.chars().count() > EXCERPT { "..." } else { "" };
    failure(&format!("{artifact}: {excerpt}{more}"), error)
}

/// After a failed restore, return the target to where it started; the error says
/// where it was left.
fn undo(config: &Config, target: &Target, created: bool, error: PluginError) -> PluginError {
    let database = config.database.as_str();
    let undone = config.connect().and_then(|mut connection| {
        let done = match target {
            Target::Exists { charset, collation, .. } if !created => {
                recreate(&mut connection, database, charset, collation)
            }
            _ => connection.execute(&format!("DROP DATABASE {}", ident(database))).map(|_| ()),
        };
        connection.quit();
        done.map_err(|e| failure("undoing the restore", e))
    });
    let left = match (undone, created) {
        (Ok(()), true) => format!("database {database} was dropped again"),
        (Ok(()), false) => format!("database {database} was left empty"),
        (Err(undo), _) => format!("database {database} is left partly restored ({}); drop it", message(&undo)),
    };
    match error {
        PluginError::Connection(m) => PluginError::Connection(format!("{m}; {left}")),
        PluginError::Database(m) => PluginError::Database(format!("{m}; {left}")),
        PluginError::Artifact(m) => PluginError::Artifact(format!("{m}; {left}")),
        PluginError::Unsupported(m) => PluginError::Unsupported(format!("{m}; {left}")),
        PluginError::Authentication(m) => PluginError::Authentication(format!("{m}; {left}")),
        PluginError::InvalidSettings(m) => PluginError::InvalidSettings(format!("{m}; {left}")),
        PluginError::Other(m) => PluginError::Other(format!("{m}; {left}")),
    }
}

fn message(error: &PluginError) -> &str {
    match error {
        PluginError::Connection(m)
        | PluginError::Database(m)
        | PluginError::Artifact(m)
        | PluginError::Unsupported(m)
        | PluginError::Authentication(m)
        | PluginError::InvalidSettings(m)
        | PluginError::Other(m) => m,
    }
}
