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

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use stowage_plugin_sdk::artifacts::ArtifactWriter;
use stowage_plugin_sdk::{PluginError, Summary, artifacts, report};

use crate::layout::{self, Stored};
use crate::protocol::{Column, Connection, Error, codes, text, types};
use crate::script::{PREAMBLE, ident, literal, push_binary_string, push_hex};
use crate::{Config, Databases, MEDIA_TYPE, SYSTEM_DATABASES, failure, users};

/// An `INSERT` is cut after this many bytes of values (the server's default
/// `max_allowed_packet` is 16 MiB on MariaDB and 64 MiB on MySQL).
const INSERT_BYTES: usize = 1 << 20;

/// Rows between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// Bytes buffered before an artifact write.
const WRITE_BUFFER: usize = 256 << 10;

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
    tables: u64,
    rows: u64,
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
    ) -> Result<Self, PluginError> {
        let name = stored.name.clone().unwrap_or_default();
        let (charset, collation) = database_defaults(connection, &name)?;
        use_database(connection, &name)?;
        let tables = tables(connection, &name)?;
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
}

/// Copying tables into data artifacts, with the progress of the whole backup.
struct Copy {
    /// Tables with rows in every database.
    total: u64,
    /// Tables per data artifact: one, or more past [`MAX_DATA_ARTIFACTS`] tables.
    per_artifact: usize,
    tally: Tally,
}

impl Copy {
    /// Copy `tables` of `database` into its next data artifacts.
    fn tables(
        &mut self,
        connection: &mut Connection,
        database: &mut Database,
        unlocked: bool,
    ) -> Result<(), PluginError> {
        let tables = std::mem::take(if unlocked { &mut database.unlocked } else { &mut database.snapshot });
        if tables.is_empty() {
            return Ok(());
        }
        use_database(connection, &database.name)?;
        for group in tables.chunks(self.per_artifact) {
            database.artifacts += 1;
            let name = database.stored.data(database.artifacts, &group[0].name);
            let mut artifact = BufWriter::with_capacity(WRITE_BUFFER, artifacts::create(&name, MEDIA_TYPE)?);
            artifact.write_all(PREAMBLE.as_bytes()).map_err(|e| write_error(&name, e))?;
            for table in group {
                let label = database.label(table);
                let rows = self.rows(connection, table, &label, &name, &mut artifact)?;
                self.tally.tables += 1;
                self.tally.rows += rows;
                report::progress(&label, self.tally.tables, Some(self.total), self.tally.rows);
            }
            let artifact = artifact.into_inner().map_err(|e| write_error(&name, e.into_error()))?;
            artifact.finish()?;
        }
        Ok(())
    }

    /// Append the rows of `table` (called `label`) to artifact `name` as batched
    /// `INSERT`s; returns how many.
    fn rows(
        &self,
        connection: &mut Connection,
        table: &Table,
        label: &str,
        name: &str,
        artifact: &mut BufWriter<ArtifactWriter>,
    ) -> Result<u64, PluginError> {
        let columns = stored_columns(connection, &table.name, label)?;
        if columns.is_empty() {
            return Ok(0);
        }
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let list = list.join(",");
        // MariaDB prints a FLOAT with 6 digits; as a DOUBLE it prints every digit
        // the stored value has, and the restore rounds it back to the same FLOAT.
        let read: Vec<String> = columns
            .iter()
            .map(|c| if c.float { format!("CAST({} AS DOUBLE)", ident(&c.name)) } else { ident(&c.name) })
            .collect();
        let read = read.join(",");
        let insert = format!("INSERT INTO {} ({list}) VALUES\n", ident(&table.name));
        let mut encodings = Vec::new();
        let mut statement: Vec<u8> = Vec::with_capacity(INSERT_BYTES + (64 << 10));
        let mut write_failed: Option<std::io::Error> = None;
        let mut affected = 0;
        let mut rows = 0u64;
        let select = format!("SELECT {read} FROM {}", ident(&table.name));
        let outcome = connection.query(
            select.as_bytes(),
            |defs, values| {
                if encodings.is_empty() {
                    encodings = defs.iter().map(Encoding::of).collect();
                }
                statement.extend_from_slice(if statement.is_empty() { insert.as_bytes() } else { b",\n" });
                push_row(&mut statement, &encodings, values);
                rows += 1;
                if statement.len() >= INSERT_BYTES {
                    statement.extend_from_slice(b";\n");
                    if let Err(error) = artifact.write_all(&statement) {
                        // Stop reading: the rest of the result is not awaited.
                        write_failed = Some(error);
                        return Err(Error::Protocol("the artifact could not be written".into()));
                    }
                    statement.clear();
                }
                if rows.is_multiple_of(PROGRESS_EVERY) {
                    report::progress(label, self.tally.tables, Some(self.total), self.tally.rows + rows);
                }
                Ok(())
            },
            &mut affected,
        );
        if let Err(error) = outcome {
            return Err(match write_failed {
                Some(error) => write_error(name, error),
                None => copy_failure(label, error),
            });
        }
        if !statement.is_empty() {
            statement.extend_from_slice(b";\n");
            artifact.write_all(&statement).map_err(|e| write_error(name, e))?;
        }
        Ok(rows)
    }
}

fn write_error(name: &str, error: std::io::Error) -> PluginError {
    PluginError::Artifact(format!("writing {name}: {error}"))
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
    let position = log_position(connection, locked.is_some(), mariadb);
    let qualify = names.len() > 1;
    let stored = layout::for_backup(names);
    let mut copy = Copy { total: 0, per_artifact: 1, tally: Tally::default() };
    let mut databases = Vec::new();
    for (stored, users) in stored.into_iter().zip(users) {
        databases.push(Database::read(connection, stored, qualify, users, &mut copy.tally)?);
    }
    // Rows as stored, whatever their character set: written back as binary literals,
    // they are the same bytes in the restored columns.
    connection.execute("SET character_set_results = binary").map_err(|e| failure("setting up the session", e))?;
    let tables: usize = databases.iter().map(|d| d.unlocked.len() + d.snapshot.len()).sum();
    copy.total = tables as u64;
    copy.per_artifact = tables.div_ceil(MAX_DATA_ARTIFACTS).max(1);

    let mut lock_held = None;
    if let Some(held) = locked {
        // Tables without a snapshot are copied while the lock holds them still.
        for database in &mut databases {
            copy.tables(connection, database, true)?;
        }
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
    for database in &mut databases {
        write_artifact(&database.stored.schema(), database.schema.as_bytes())?;
        // Without the lock, the tables without snapshots come first, as they would under it.
        copy.tables(connection, database, true)?;
        copy.tables(connection, database, false)?;
        write_artifact(&database.stored.post(), database.post.as_bytes())?;
        if let Some(users) = &database.users {
            write_artifact(&database.stored.users(), format!("{PREAMBLE}{users}").as_bytes())?;
        }
    }
    connection.execute("COMMIT").map_err(|e| failure("ending the snapshot", e))?;

    let names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    Ok(summarize(&version, mariadb, &names, lock_held, &position, &copy.tally))
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
            "SELECT t.TABLE_NAME, t.TABLE_TYPE, COALESCE(t.ENGINE, ''), COALESCE(e.TRANSACTIONS, 'NO') \
             FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE \
             WHERE t.TABLE_SCHEMA = {} ORDER BY t.TABLE_NAME",
            literal(database)
        ))
        .map_err(|e| failure("listing the tables", e))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [name, kind, engine, transactions] = text(row);
            Table { name, kind, engine, transactional: transactions == "YES" }
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

/// How a column's text value is written back.
#[derive(Clone, Copy)]
enum Encoding {
    /// A numeric literal, as the server printed it.
    Number,
    /// ASCII the server parses back (dates and times), quoted.
    Quoted,
    /// MySQL's JSON type, which refuses binary strings.
    Json,
    /// Bits and geometries: the stored bytes as a hexadecimal literal.
    Hex,
    /// Strings of any character set and binary strings: the stored bytes as an escaped
    /// binary string literal, which the column takes byte for byte.
    Bytes,
}

impl Encoding {
    fn of(column: &Column) -> Self {
        const TEMPORAL: [u8; 8] = [7, 10, 11, 12, 14, 17, 18, 19];
        if column.is_numeric() {
            Encoding::Number
        } else if TEMPORAL.contains(&column.kind) {
            Encoding::Quoted
        } else if column.kind == types::JSON {
            Encoding::Json
        } else if column.kind == types::BIT || column.kind == types::GEOMETRY {
            Encoding::Hex
        } else {
            Encoding::Bytes
        }
    }
}

fn copy_failure(table: &str, error: Error) -> PluginError {
    match error {
        Error::Server { code: codes::TABLE_DEF_CHANGED, .. } => PluginError::Database(format!(
            "copying table {table}: it was altered during the backup (after the lock of the consistent point was \
             released); run the backup again"
        )),
        error => failure(&format!("copying table {table}"), error),
    }
}

/// A column that holds stored values.
struct StoredColumn {
    name: String,
    /// A single-precision FLOAT.
    float: bool,
}

/// The columns that hold stored values, invisible ones included: generated ones are
/// computed again on restore.
fn stored_columns(connection: &mut Connection, table: &str, label: &str) -> Result<Vec<StoredColumn>, PluginError> {
    let rows = connection
        .rows(&format!(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = {} AND COALESCE(GENERATION_EXPRESSION, '') = '' ORDER BY ORDINAL_POSITION",
            literal(table)
        ))
        .map_err(|e| failure(&format!("listing the columns of table {label}"), e))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let [name, kind] = text(row);
            StoredColumn { name, float: kind.eq_ignore_ascii_case("float") }
        })
        .collect())
}

fn push_row(out: &mut Vec<u8>, encodings: &[Encoding], values: &[Option<&[u8]>]) {
    out.push(b'(');
    for (i, (value, encoding)) in values.iter().zip(encodings).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match (value, encoding) {
            (None, _) => out.extend_from_slice(b"NULL"),
            (Some(value), Encoding::Number) => out.extend_from_slice(value),
            (Some(value), Encoding::Quoted) => {
                out.push(b'\'');
                out.extend_from_slice(value);
                out.push(b'\'');
            }
            (Some(value), Encoding::Json) => {
                out.extend_from_slice(b"CONVERT(");
                push_binary_string(out, value);
                out.extend_from_slice(b" USING utf8mb4)");
            }
            (Some(value), Encoding::Hex) => push_hex(out, value),
            (Some(value), Encoding::Bytes) => push_binary_string(out, value),
        }
    }
    out.push(b')');
}

fn summarize(
    version: &str,
    mariadb: bool,
    databases: &[&str],
    lock_held: Option<(Lock, Duration)>,
    position: &LogPosition,
    tally: &Tally,
) -> Summary {
    let flavor = if mariadb { "MariaDB" } else { "MySQL" };
    let consistency = lock_held.map_or("snapshot-only", |(lock, _)| lock.consistency());
    let mut attributes = vec![
        ("server_version".into(), version.to_owned()),
        ("flavor".into(), flavor.to_lowercase()),
        ("database".into(), databases.first().copied().unwrap_or_default().to_owned()),
        ("consistency".into(), consistency.into()),
        ("tables".into(), tally.tables.to_string()),
        ("rows".into(), tally.rows.to_string()),
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
            tally.tables,
            tally.rows,
            tally.views,
            tally.routines,
            tally.triggers,
            tally.events
        ),
        attributes,
    }
}
