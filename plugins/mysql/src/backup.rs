//! A backup: one consistent point for every database backed up, then their definitions
//! and rows as SQL.
//!
//! The point is a `START TRANSACTION WITH CONSISTENT SNAPSHOT` opened while a lock,
//! waited for at most `lock-timeout`, holds every commit still: MariaDB's `BACKUP STAGE
//! BLOCK_COMMIT`, MySQL's `FLUSH TABLES WITH READ LOCK` (see [`Lock`]). Under the lock the
//! plugin records the binary log position, reads
//! the definitions and copies the tables whose engine has no snapshot (MyISAM, Aria,
//! MEMORY); then it releases the lock and copies the transactional tables from the
//! snapshot while writers go on. Everything the session changes on the server (the
//! lock, the transaction, session variables) ends with the connection, which every
//! path closes.

use std::io::Write;
use std::time::{Duration, Instant};

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report, sessions};

use crate::copying::{self, Copied, Part, Planned, StoredColumn, write_error};
use crate::layout::{self, Stored};
use crate::protocol::{Connection, Error, codes, text};
use crate::script::{PREAMBLE, ident, literal};
use crate::{Config, Databases, MEDIA_TYPE, SYSTEM_DATABASES, failure, users};

/// Tables past which consecutive tables of a database share a data artifact: with the
/// rounding per database and per copy phase, and the schema, post and users artifacts
/// of at most [`MAX_DATABASES`] databases, a backup stays within the host's 10,000.
const MAX_DATA_ARTIFACTS: usize = 4096;

/// Databases per backup at most: with their schema, post and users artifacts and the
/// grouped data, the artifacts stay within the host's 10,000.
const MAX_DATABASES: usize = 1000;

/// A table of the database, as `information_schema.TABLES` lists it.
struct Table {
    name: String,
    /// `BASE TABLE`, `SYSTEM VERSIONED` (MariaDB), `SEQUENCE` (MariaDB) or `VIEW`.
    kind: String,
    engine: String,
    /// Whether the engine reads from the transaction's snapshot.
    transactional: bool,
    /// Bytes of data, as the engine estimates them.
    data_length: u64,
    /// The ranges of its primary key it is read in (`WHERE` conditions); none to read
    /// it whole.
    ranges: Vec<String>,
    /// Its columns that hold stored values.
    columns: Vec<StoredColumn>,
}

impl Table {
    fn is_view(&self) -> bool {
        self.kind == "VIEW"
    }

    fn is_sequence(&self) -> bool {
        self.kind == "SEQUENCE"
    }

    fn has_rows(&self) -> bool {
        !self.is_view() && !self.is_sequence()
    }
}

/// Where the binary log was at the consistent point.
#[derive(Default)]
struct LogPosition {
    file: String,
    position: String,
    gtid: String,
}

/// What was backed up, for the summary.
#[derive(Default)]
struct Tally {
    views: u64,
    routines: u64,
    triggers: u64,
    events: u64,
}

/// One database of the backup: its definitions, read under the lock, and its tables.
struct Database {
    stored: Stored,
    name: String,
    /// Whether the backup has several databases (then messages name tables with theirs).
    qualify: bool,
    schema: String,
    post: String,
    users: Option<String>,
    /// The tables with rows whose engine has no snapshot.
    unlocked: Vec<Table>,
    /// The tables with rows read from the snapshot.
    snapshot: Vec<Table>,
    /// Data artifacts written so far.
    artifacts: usize,
}

impl Database {
    /// Read the definitions of database `stored` (in the snapshot, under the lock).
    fn read(
        connection: &mut Connection,
        stored: Stored,
        qualify: bool,
        users: Option<String>,
        tally: &mut Tally,
        chunking: &mut Chunking,
    ) -> Result<Self, PluginError> {
        let name = stored.name.clone().unwrap_or_default();
        let (charset, collation) = database_defaults(connection, &name)?;
        use_database(connection, &name)?;
        let mut tables = tables(connection, &name)?;
        let mut columns = copying::stored_columns(connection, &name)?;
        for table in tables.iter_mut().filter(|table| table.has_rows()) {
            // Never an empty list for a table with rows: it would be copied as none.
            table.columns = columns.remove(&table.name).ok_or_else(|| {
                PluginError::Database(format!("table {name}.{}: the server lists no columns for it", table.name))
            })?;
        }
        chunking.split(connection, &name, &mut tables)?;
        let mut schema = String::from(PREAMBLE);
        schema.push_str(&format!("ALTER DATABASE CHARACTER SET {charset} COLLATE {collation};\n"));
        let mut views = Vec::new();
        for table in &tables {
            if table.is_view() {
                views.push(table);
                continue;
            }
            let kind = if table.is_sequence() { "SEQUENCE" } else { "TABLE" };
            let create = show_create(connection, kind, &table.name, 1)?;
            schema.push_str(&format!("\n{create};\n"));
            if table.is_sequence() {
                // The sequence's state, as mariadb-dump restores it.
                let next = connection
                    .value(&format!("SELECT next_not_cached_value FROM {}", ident(&table.name)))
                    .map_err(|e| failure(&format!("reading sequence {}", table.name), e))?
                    .unwrap_or_default();
                schema.push_str(&format!("DO SETVAL({}, {next}, 0);\n", ident(&table.name)));
            }
        }
        schema.push_str(&stand_ins(connection, &name, &views)?);
        let post = post_definitions(connection, &name, &views, tally)?;
        let (unlocked, snapshot) = tables.into_iter().filter(Table::has_rows).partition(|t| !t.transactional);
        Ok(Database { stored, name, qualify, schema, post, users, unlocked, snapshot, artifacts: 0 })
    }

    /// How messages name `table`.
    fn label(&self, table: &Table) -> String {
        if self.qualify { format!("{}.{}", self.name, table.name) } else { table.name.clone() }
    }

    /// The data artifacts of its tables without snapshots (or of those with), numbered
    /// after those planned before, `per_artifact` tables each.
    fn plan(&mut self, unlocked: bool, per_artifact: usize) -> Vec<Planned> {
        let tables = std::mem::take(if unlocked { &mut self.unlocked } else { &mut self.snapshot });
        let mut planned = Vec::new();
        for group in tables.chunks(per_artifact) {
            let ranges: Vec<Option<&String>> = match group {
                [table] if !table.ranges.is_empty() => table.ranges.iter().map(Some).collect(),
                _ => vec![None],
            };
            let last = ranges.len() - 1;
            for (index, range) in ranges.into_iter().enumerate() {
                self.artifacts += 1;
                let parts = group
                    .iter()
                    .map(|table| Part {
                        database: self.name.clone(),
                        table: table.name.clone(),
                        label: self.label(table),
                        range: range.cloned(),
                        completes_table: index == last,
                        columns: table.columns.clone(),
                    })
                    .collect();
                planned.push(Planned { name: self.stored.data(self.artifacts, &group[0].name), parts });
            }
        }
        planned
    }
}

pub fn run(config: &Config) -> Result<Summary, PluginError> {
    let mut connection = config.connect()?;
    let outcome = backup(&mut connection, config);
    // Closing the session releases the lock and ends the transaction on every path;
    // a connection cut by a deadline does the same on the server's side.
    connection.quit();
    outcome
}

fn backup(connection: &mut Connection, config: &Config) -> Result<Summary, PluginError> {
    let mariadb = connection.server.is_mariadb();
    let version = connection.server.display_version().to_owned();
    session(connection, mariadb).map_err(|e| failure("setting up the session", e))?;
    let names = databases(connection, config)?;
    for name in &names {
        // Fails early, before any lock, for a database that is not there.
        database_defaults(connection, name)?;
    }
    // Accounts are not part of the snapshot: read before the lock, which they would prolong.
    let users = names.iter().map(|name| users::read(connection, name, config.users)).collect::<Result<Vec<_>, _>>()?;
    let locked = Held::take(config, mariadb)?;
    connection
        .execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .map_err(|e| failure("opening the consistent snapshot", e))?;
    // Further connections open their snapshots while the lock still holds every commit:
    // the same point. Without the lock there is no such point, so one connection reads.
    let mut others = match &locked {
        Some(_) if config.jobs > 1 => {
            sessions::open_more(config.jobs - 1, "reading tables", || snapshot_session(config, mariadb))
        }
        _ => Vec::new(),
    };
    let position = log_position(connection, locked.is_some(), mariadb);
    let qualify = names.len() > 1;
    let stored = layout::for_backup(names);
    let mut tally = Tally::default();
    let mut chunking = Chunking { bytes: config.chunk_bytes, budget: MAX_DATA_ARTIFACTS };
    let mut databases = Vec::new();
    for (stored, users) in stored.into_iter().zip(users) {
        databases.push(Database::read(connection, stored, qualify, users, &mut tally, &mut chunking)?);
    }
    // Rows as stored, whatever their character set: written back as binary literals,
    // they are the same bytes in the restored columns.
    connection.execute("SET character_set_results = binary").map_err(|e| failure("setting up the session", e))?;
    let tables: usize = databases.iter().map(|d| d.unlocked.len() + d.snapshot.len()).sum();
    let per_artifact = tables.div_ceil(MAX_DATA_ARTIFACTS).max(1);
    let mut copied = Copied { total: tables as u64, ..Copied::default() };
    let mut lanes: Vec<&mut Connection> = std::iter::once(&mut *connection).chain(others.iter_mut()).collect();

    let mut lock_held = None;
    if let Some(held) = locked {
        // Tables without a snapshot are copied while the lock holds them still.
        let planned: Vec<Planned> = databases.iter_mut().flat_map(|d| d.plan(true, per_artifact)).collect();
        copying::run(&mut lanes, &planned, &mut copied)?;
        let (lock, duration) = held.release()?;
        report::info(&format!("{} was held for {:.1} s", lock.name(), duration.as_secs_f64()));
        lock_held = Some((lock, duration));
    } else {
        let unlocked: Vec<(String, &str)> =
            databases.iter().flat_map(|d| d.unlocked.iter().map(move |t| (d.label(t), t.engine.as_str()))).collect();
        if !unlocked.is_empty() {
            let names: Vec<&str> = unlocked.iter().map(|(name, _)| name.as_str()).collect();
            let mut engines: Vec<&str> = unlocked.iter().map(|(_, engine)| *engine).collect();
            engines.sort_unstable();
            engines.dedup();
            report::warn(&format!(
                "tables {} use engines without snapshots ({}) and are copied without a lock: writes during the \
                 backup may leave them inconsistent with the rest (grant RELOAD for a consistent backup)",
                names.join(", "),
                engines.join(", ")
            ));
        }
    }
    if qualify {
        write_artifact(
            layout::INDEX,
            layout::index(&databases.iter().map(|d| d.stored.clone()).collect::<Vec<_>>()).as_bytes(),
        )?;
    }
    for database in &databases {
        write_artifact(&database.stored.schema(), database.schema.as_bytes())?;
    }
    // Without the lock, the tables without snapshots come first, as they would under it.
    let planned: Vec<Planned> = databases
        .iter_mut()
        .flat_map(|d| {
            let mut planned = d.plan(true, per_artifact);
            planned.extend(d.plan(false, per_artifact));
            planned
        })
        .collect();
    copying::run(&mut lanes, &planned, &mut copied)?;
    drop(lanes);
    for database in &databases {
        write_artifact(&database.stored.post(), database.post.as_bytes())?;
        if let Some(users) = &database.users {
            write_artifact(&database.stored.users(), format!("{PREAMBLE}{users}").as_bytes())?;
        }
    }
    connection.execute("COMMIT").map_err(|e| failure("ending the snapshot", e))?;
    for other in others {
        other.quit();
    }

    let names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    Ok(summarize(&version, mariadb, &names, lock_held, &position, &tally, &copied))
}

/// A further connection with the session of the backup and a snapshot of its own,
/// opened while the lock holds every commit.
fn snapshot_session(config: &Config, mariadb: bool) -> Result<Connection, PluginError> {
    let mut connection = config.connect()?;
    session(&mut connection, mariadb)
        .and_then(|()| connection.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
        .and_then(|_| connection.execute("SET character_set_results = binary"))
        .map_err(|e| failure("opening a further snapshot", e))?;
    Ok(connection)
}

/// Splitting big tables into ranges of their primary key, as `mydumper` does: read on
/// several connections, stored and restored as several artifacts.
struct Chunking {
    /// A table with more data than this is split.
    bytes: u64,
    /// Data artifacts the backup may still add without passing [`MAX_DATA_ARTIFACTS`].
    budget: usize,
}

impl Chunking {
    /// Give the big transactional tables of `database` with a one-column integer
    /// primary key their ranges (in the snapshot: the bounds are the snapshot's).
    fn split(&mut self, connection: &mut Connection, database: &str, tables: &mut [Table]) -> Result<(), PluginError> {
        self.budget = self.budget.saturating_sub(tables.len());
        if !tables.iter().any(|t| t.transactional && t.data_length > self.bytes) {
            return Ok(());
        }
        let keys = connection
            .rows(&format!(
                "SELECT s.TABLE_NAME, MIN(s.COLUMN_NAME) FROM information_schema.STATISTICS s \
                 JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA \
                 AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
                 WHERE s.TABLE_SCHEMA = {} AND s.INDEX_NAME = 'PRIMARY' GROUP BY s.TABLE_NAME \
                 HAVING COUNT(*) = 1 AND MIN(c.DATA_TYPE) IN ('tinyint', 'smallint', 'mediumint', 'int', 'bigint')",
                literal(database)
            ))
            .map_err(|e| failure("reading the primary keys", e))?;
        for row in keys {
            let [name, key] = text(row);
            let Some(table) = tables.iter_mut().find(|t| t.name == name && t.transactional) else { continue };
            let pieces = table.data_length.div_ceil(self.bytes.max(1)).min(self.budget as u64 + 1);
            if pieces < 2 {
                continue;
            }
            let bounds = connection
                .rows(&format!("SELECT MIN({0}), MAX({0}) FROM {1}.{2}", ident(&key), ident(database), ident(&name)))
                .map_err(|e| failure(&format!("reading the key range of table {name}"), e))?;
            let Some([Some(min), Some(max)]) = bounds.into_iter().next().and_then(|row| <[_; 2]>::try_from(row).ok())
            else {
                continue;
            };
            let (Ok(min), Ok(max)) = (min.parse::<i128>(), max.parse::<i128>()) else { continue };
            table.ranges = key_ranges(&ident(&key), min, max, pieces as i128);
            self.budget -= table.ranges.len().saturating_sub(1);
        }
        Ok(())
    }
}

/// `pieces` conditions on `key` that together hold every value, the first and the last
/// open-ended, the others spanning equal parts of `min..=max`; none when one would do.
fn key_ranges(key: &str, min: i128, max: i128, pieces: i128) -> Vec<String> {
    let pieces = pieces.max(1);
    let step = ((max - min + pieces) / pieces).max(1);
    let bounds: Vec<i128> = (1..pieces).map(|i| min + i * step).take_while(|bound| *bound <= max).collect();
    if bounds.is_empty() {
        return Vec::new();
    }
    let mut ranges = vec![format!("{key} < {}", bounds[0])];
    for pair in bounds.windows(2) {
        ranges.push(format!("{key} >= {} AND {key} < {}", pair[0], pair[1]));
    }
    ranges.push(format!("{key} >= {}", bounds[bounds.len() - 1]));
    ranges
}

/// The databases of the backup: `database`, then those of option `databases`.
fn databases(connection: &mut Connection, config: &Config) -> Result<Vec<String>, PluginError> {
    let mut names = vec![config.database.clone()];
    match &config.databases {
        None => {}
        Some(Databases::All) => {
            let system = SYSTEM_DATABASES.map(literal).join(", ");
            let rows = connection
                .rows(&format!(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({system}) \
                     ORDER BY SCHEMA_NAME"
                ))
                .map_err(|e| failure("listing the databases", e))?;
            names.extend(rows.into_iter().map(|row| {
                let [name] = text(row);
                name
            }));
        }
        Some(Databases::Named(mappings)) => {
            if let Some(mapping) = mappings.iter().find(|m| m.source != m.target) {
                return Err(PluginError::InvalidSettings(format!(
                    "option databases: {}:{} names a target, which only a restore has (option restore-databases)",
                    mapping.source, mapping.target
                )));
            }
            names.extend(mappings.iter().map(|m| m.source.clone()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    if names.len() > MAX_DATABASES {
        return Err(PluginError::Unsupported(format!(
            "{} databases: one backup holds at most {MAX_DATABASES}; split them over several DatabaseBackups",
            names.len()
        )));
    }
    Ok(names)
}

fn use_database(connection: &mut Connection, name: &str) -> Result<(), PluginError> {
    connection
        .execute(&format!("USE {}", ident(name)))
        .map_err(|e| failure(&format!("selecting database {name}"), e))?;
    Ok(())
}
/// Session settings for reading: values in UTC and in their stored bytes, definitions
/// printed plainly (no `ANSI_QUOTES`), and no server-side timeout on a long read.
fn session(connection: &mut Connection, mariadb: bool) -> Result<(), Error> {
    connection.execute("SET NAMES utf8mb4")?;
    connection.execute("SET time_zone = '+00:00'")?;
    connection.execute("SET sql_mode = ''")?;
    connection.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
    // The host may hold a read back while it uploads; the server's default 60 s would
    // end the session mid-table.
    connection.execute("SET SESSION net_write_timeout = 3600")?;
    // MariaDB's statement limit and MySQL's SELECT limit differ in name and unit.
    connection.execute(if mariadb {
        "SET SESSION max_statement_time = 0"
    } else {
        "SET SESSION max_execution_time = 0"
    })?;
    Ok(())
}

/// The database's default character set and collation; fails if there is no such database.
fn database_defaults(connection: &mut Connection, database: &str) -> Result<(String, String), PluginError> {
    let rows = connection
        .rows(&format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME = {}",
            literal(database)
        ))
        .map_err(|e| failure("looking up the database", e))?;
    match rows.into_iter().next() {
        Some(row) => {
            let [charset, collation] = text(row);
            Ok((charset, collation))
        }
        None => Err(PluginError::Database(format!("there is no database {database:?} (or this user cannot see it)"))),
    }
}

/// How writers are held still while the snapshot opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// MariaDB's `BACKUP STAGE BLOCK_COMMIT`: commits and writes to tables without a
    /// snapshot wait, statements already running go on. A long `UPDATE` neither fails the
    /// backup nor makes every writer queue behind a waiting lock, as it does with
    /// `FLUSH TABLES WITH READ LOCK`.
    BackupStage,
    /// `FLUSH TABLES WITH READ LOCK` (MySQL: its `LOCK INSTANCE FOR BACKUP` blocks DDL
    /// only, not the writes a consistent binary log position needs held).
    GlobalReadLock,
}

impl Lock {
    fn statements(self) -> &'static [&'static str] {
        match self {
            Lock::BackupStage => &["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"],
            Lock::GlobalReadLock => &["FLUSH TABLES WITH READ LOCK"],
        }
    }

    fn release(self) -> &'static str {
        match self {
            Lock::BackupStage => "BACKUP STAGE END",
            Lock::GlobalReadLock => "UNLOCK TABLES",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lock::BackupStage => "the backup lock (BACKUP STAGE BLOCK_COMMIT)",
            Lock::GlobalReadLock => "the global read lock (FLUSH TABLES WITH READ LOCK)",
        }
    }

    /// The summary's `consistency`.
    fn consistency(self) -> &'static str {
        match self {
            Lock::BackupStage => "backup-stage",
            Lock::GlobalReadLock => "global-read-lock",
        }
    }
}

/// The lock of the consistent point, held on a connection of its own: `BACKUP STAGE`
/// commits the transaction of its session, so the snapshot lives on the backup's. Closing
/// the connection, on any path, releases the lock.
struct Held {
    connection: Connection,
    lock: Lock,
    since: Instant,
}

impl Held {
    /// Take the lock, waiting at most `lock-timeout`; `None` (with a warning) when the
    /// user may not take it.
    fn take(config: &Config, mariadb: bool) -> Result<Option<Held>, PluginError> {
        let mut connection = config.connect()?;
        let lock = if mariadb { Lock::BackupStage } else { Lock::GlobalReadLock };
        // This connection idles while the tables without snapshots are copied: a short
        // wait_timeout must not end it (and the lock with it) before that is done.
        let settings = [
            format!("SET SESSION lock_wait_timeout = {}", config.lock_timeout),
            "SET SESSION wait_timeout = GREATEST(@@global.wait_timeout, 3600)".to_owned(),
        ];
        let taken = settings
            .iter()
            .map(String::as_str)
            .chain(lock.statements().iter().copied())
            .try_for_each(|statement| connection.execute(statement).map(|_| ()));
        match taken {
            Ok(()) => Ok(Some(Held { connection, lock, since: Instant::now() })),
            Err(error) => {
                connection.quit();
                match error {
                    Error::Server { code: codes::LOCK_WAIT_TIMEOUT, .. } => Err(PluginError::Database(format!(
                        "{} was not granted within {} s (option lock-timeout): a long statement or an open LOCK \
                         TABLES holds tables; nothing was locked or copied",
                        lock.name(),
                        config.lock_timeout
                    ))),
                    Error::Server {
                        code: codes::SPECIFIC_ACCESS_DENIED | codes::DB_ACCESS_DENIED, message, ..
                    } => {
                        report::warn(&format!(
                            "no lock for a consistent point ({message}): the backup is consistent for transactional \
                             tables only, and the binary log position is recorded only where MariaDB reports the \
                             snapshot's"
                        ));
                        Ok(None)
                    }
                    error => Err(failure(&format!("taking {}", lock.name()), error)),
                }
            }
        }
    }

    /// Release the lock; how long it was held.
    fn release(mut self) -> Result<(Lock, Duration), PluginError> {
        let released = self.connection.execute(self.lock.release());
        self.connection.quit();
        released.map_err(|e| failure(&format!("releasing {}", self.lock.name()), e))?;
        Ok((self.lock, self.since.elapsed()))
    }
}

/// The binary log position of the snapshot, where the server tells it; missing rights
/// or a server without a binary log leave it empty.
fn log_position(connection: &mut Connection, locked: bool, mariadb: bool) -> LogPosition {
    let mut position = LogPosition::default();
    if locked {
        // Nothing commits under the lock, so the current position is the snapshot's.
        // MySQL 8.4 renamed the statement.
        let status = connection.rows("SHOW MASTER STATUS").or_else(|_| connection.rows("SHOW BINARY LOG STATUS"));
        if let Ok(rows) = status
            && let Some(row) = rows.into_iter().next()
        {
            // MySQL's fifth column: the GTID set executed.
            let [file, at, _, _, gtid] = text(row);
            position = LogPosition { file, position: at, gtid };
        }
    } else if mariadb && let Ok(rows) = connection.rows("SHOW STATUS LIKE 'binlog_snapshot_%'") {
        // MariaDB records where the binary log was when the snapshot opened.
        for row in rows {
            match (row.first().cloned().flatten().as_deref(), row.get(1).cloned().flatten()) {
                (Some("Binlog_snapshot_file"), Some(value)) => position.file = value,
                (Some("Binlog_snapshot_position"), Some(value)) => position.position = value,
                _ => {}
            }
        }
    }
    if mariadb && locked {
        position.gtid = connection.value("SELECT @@gtid_binlog_pos").ok().flatten().unwrap_or_default();
    }
    position
}

fn tables(connection: &mut Connection, database: &str) -> Result<Vec<Table>, PluginError> {
    let rows = connection
        .rows(&format!(
            "SELECT t.TABLE_NAME, t.TABLE_TYPE, COALESCE(t.ENGINE, ''), COALESCE(e.TRANSACTIONS, 'NO'), \
             COALESCE(t.DATA_LENGTH, 0) FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
             WHERE t.TABLE_SCHEMA = {} ORDER BY t.TABLE_NAME",
            literal(database)
        ))
        .map_err(|e| failure("listing the tables", e))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [name, kind, engine, transactions, data_length] = text(row);
            let data_length = data_length.parse().unwrap_or(0);
            Table {
                name,
                kind,
                engine,
                transactional: transactions == "YES",
                data_length,
                ranges: Vec::new(),
                columns: Vec::new(),
            }
        })
        .collect())
}

/// `SHOW CREATE <kind> name`, column `column` of its one row.
fn show_create(connection: &mut Connection, kind: &str, name: &str, column: usize) -> Result<String, PluginError> {
    let (mut row, doing) = show_create_row(connection, kind, name)?;
    take_definition(&mut row, column, &doing)
}

/// The one row of `SHOW CREATE <kind> name`, and what reading it is called in errors.
fn show_create_row(
    connection: &mut Connection,
    kind: &str,
    name: &str,
) -> Result<(Vec<Option<String>>, String), PluginError> {
    let doing = format!("reading the definition of {} {name}", kind.to_lowercase());
    let row = connection
        .rows(&format!("SHOW CREATE {kind} {}", ident(name)))
        .map_err(|e| failure(&doing, e))?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok((row, doing))
}

/// Column `column` of a `SHOW CREATE` row: the definition, which the server leaves
/// NULL for users who may not see it.
fn take_definition(row: &mut [Option<String>], column: usize, doing: &str) -> Result<String, PluginError> {
    row.get_mut(column).and_then(Option::take).ok_or_else(|| {
        PluginError::Database(format!(
            "{doing}: the server shows no definition (this user may lack the right to see it)"
        ))
    })
}

/// Stand-ins for `views` with the right columns, at the end of `schema.sql`: each view can
/// then be defined in `post.sql` whatever order views depend on each other in, also
/// across the databases of one backup.
fn stand_ins(connection: &mut Connection, database: &str, views: &[&Table]) -> Result<String, PluginError> {
    let mut script = String::new();
    for view in views {
        let columns = connection
            .rows(&format!(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
                 ORDER BY ORDINAL_POSITION",
                literal(database),
                literal(&view.name)
            ))
            .map_err(|e| failure(&format!("listing the columns of view {}", view.name), e))?;
        let columns: Vec<String> = columns
            .into_iter()
            .map(|row| {
                let [column] = text(row);
                format!("1 AS {}", ident(&column))
            })
            .collect();
        let columns = if columns.is_empty() { "1 AS `1`".to_owned() } else { columns.join(", ") };
        script.push_str(&format!("CREATE VIEW {} AS SELECT {columns};\n", ident(&view.name)));
    }
    Ok(script)
}

/// `post.sql`: views (replacing their stand-ins), routines, triggers and events, counted
/// in `tally`.
fn post_definitions(
    connection: &mut Connection,
    database: &str,
    views: &[&Table],
    tally: &mut Tally,
) -> Result<String, PluginError> {
    let mut post = String::from(PREAMBLE);
    for view in views {
        let create = show_create(connection, "VIEW", &view.name, 1)?;
        let create = create.strip_prefix("CREATE ").map_or(create.clone(), |rest| format!("CREATE OR REPLACE {rest}"));
        post.push_str(&format!("\n{create};\n"));
        tally.views += 1;
    }

    let routines = connection
        .rows(&format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {} \
             ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
            literal(database)
        ))
        .map_err(|e| failure("listing the routines", e))?;
    for row in routines {
        let [kind, name] = text(row);
        if kind != "FUNCTION" && kind != "PROCEDURE" {
            return Err(PluginError::Unsupported(format!(
                "{} {name}: only functions and procedures are backed up (MariaDB's Oracle-mode packages are not)",
                kind.to_lowercase()
            )));
        }
        push_compound(&mut post, &definition(connection, &kind, &name, 2)?);
        tally.routines += 1;
    }

    let triggers = connection
        .rows(&format!(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {} \
             ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
            literal(database)
        ))
        .map_err(|e| failure("listing the triggers", e))?;
    for name in triggers.into_iter().filter_map(|row| row.into_iter().next().flatten()) {
        push_compound(&mut post, &definition(connection, "TRIGGER", &name, 2)?);
        tally.triggers += 1;
    }

    let events = connection
        .rows(&format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} ORDER BY EVENT_NAME",
            literal(database)
        ))
        .map_err(|e| failure("listing the events", e))?;
    for name in events.into_iter().filter_map(|row| row.into_iter().next().flatten()) {
        // SHOW CREATE EVENT: name, sql_mode, time_zone, definition.
        push_compound(&mut post, &definition(connection, "EVENT", &name, 3)?);
        tally.events += 1;
    }
    Ok(post)
}

/// A routine's, trigger's or event's `sql_mode` (column 1), definition (column
/// `column`) and, for events, time zone (column 2), as `SHOW CREATE` gives them.
struct Definition {
    mode: String,
    create: String,
    zone: Option<String>,
}

fn definition(connection: &mut Connection, kind: &str, name: &str, column: usize) -> Result<Definition, PluginError> {
    let (mut row, doing) = show_create_row(connection, kind, name)?;
    let create = take_definition(&mut row, column, &doing)?;
    let mode = row.get_mut(1).and_then(Option::take).unwrap_or_default();
    let zone = if kind == "EVENT" { row.get_mut(2).and_then(Option::take) } else { None };
    Ok(Definition { mode, create, zone })
}

/// A definition with a body of several statements, under the `sql_mode` (and time
/// zone) it was created with, delimited as the `mariadb` client reads it.
fn push_compound(text: &mut String, definition: &Definition) {
    let Definition { mode, create, zone } = definition;
    text.push_str(&format!("\nSET sql_mode = {};\n", literal(mode)));
    if let Some(zone) = zone {
        text.push_str(&format!("SET time_zone = {};\n", literal(zone)));
    }
    text.push_str(&format!("DELIMITER ;;\n{create};;\nDELIMITER ;\n"));
    text.push_str("SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n");
    if zone.is_some() {
        text.push_str("SET time_zone = '+00:00';\n");
    }
}

fn write_artifact(name: &str, content: &[u8]) -> Result<(), PluginError> {
    let mut artifact = artifacts::create(name, MEDIA_TYPE)?;
    artifact.write_all(content).map_err(|e| write_error(name, e))?;
    artifact.finish()?;
    Ok(())
}

fn summarize(
    version: &str,
    mariadb: bool,
    databases: &[&str],
    lock_held: Option<(Lock, Duration)>,
    position: &LogPosition,
    tally: &Tally,
    copied: &Copied,
) -> Summary {
    let flavor = if mariadb { "MariaDB" } else { "MySQL" };
    let consistency = lock_held.map_or("snapshot-only", |(lock, _)| lock.consistency());
    let mut attributes = vec![
        ("server_version".into(), version.to_owned()),
        ("flavor".into(), flavor.to_lowercase()),
        ("database".into(), databases.first().copied().unwrap_or_default().to_owned()),
        ("consistency".into(), consistency.into()),
        ("tables".into(), copied.tables.to_string()),
        ("rows".into(), copied.rows.to_string()),
        ("views".into(), tally.views.to_string()),
        ("routines".into(), tally.routines.to_string()),
        ("triggers".into(), tally.triggers.to_string()),
        ("events".into(), tally.events.to_string()),
    ];
    if databases.len() > 1 {
        attributes.push(("databases".into(), databases.join(", ")));
    }
    if let Some((_, held)) = lock_held {
        attributes.push(("lock_held_seconds".into(), format!("{:.3}", held.as_secs_f64())));
    }
    for (key, value) in
        [("binlog_file", &position.file), ("binlog_position", &position.position), ("gtid", &position.gtid)]
    {
        if !value.is_empty() {
            attributes.push((key.into(), value.clone()));
        }
    }
    let at = if position.file.is_empty() {
        String::new()
    } else {
        format!(", binary log {}:{}", position.file, position.position)
    };
    Summary {
        description: format!(
            "{flavor} {version}: {} {}, {} tables ({} rows), {} views, {} routines, {} triggers, {} events{at}",
            if databases.len() > 1 { "databases" } else { "database" },
            databases.join(", "),
            copied.tables,
            copied.rows,
            tally.views,
            tally.routines,
            tally.triggers,
            tally.events
        ),
        attributes,
    }
}
