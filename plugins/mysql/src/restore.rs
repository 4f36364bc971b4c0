//! A restore: the artifacts replayed statement by statement, as the `mariadb` client
//! would, into empty databases (created if missing; with replace, dropped and created
//! again), the tables' data on `jobs` connections at once. DDL in MySQL commits as it
//! goes, so a restore that fails returns every target to where it started: dropped if
//! the restore created it, else empty again.

use std::collections::HashMap;
use std::io::BufReader;

use stowage_plugin_sdk::artifacts::{self, ArtifactReader};
use stowage_plugin_sdk::{PluginError, Summary, report, sessions, target_not_empty};

use crate::layout::{self, Stored};
use crate::protocol::{Connection, Error, text};
use crate::script::{Statements, ident, literal, without_definer};
use crate::{Config, Databases, Definers, Mapping, SYSTEM_DATABASES, failure, keys, users};

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

/// One database of the backup being restored, and where.
struct Restoring {
    stored: Stored,
    target: String,
}

/// What a restore has changed on the server so far, for [`undo`] to reverse.
struct Changes {
    /// The targets emptied or created, in order.
    targets: Vec<Touched>,
    /// The ids of the restore's sessions: a failure in one may leave a statement running
    /// on another.
    sessions: Vec<u32>,
}

/// A target database the restore has emptied or created, to undo on failure.
struct Touched {
    target: String,
    before: Target,
    created: bool,
}

pub fn run(config: &Config, replace: bool) -> Result<Summary, PluginError> {
    let listed = artifacts::list();
    let names: Vec<String> = listed.iter().map(|artifact| artifact.name.clone()).collect();
    let sizes: HashMap<String, u64> = listed.into_iter().map(|artifact| (artifact.name, artifact.size)).collect();
    let plan = plan(config, layout::read(&names)?)?;
    // Replace would drop the server's own database; restoring into it mixes a backup into
    // the server's accounts and settings.
    if let Some(system) = plan.iter().find(|database| SYSTEM_DATABASES.contains(&database.target.as_str())) {
        return Err(PluginError::InvalidSettings(format!(
            "{} is the server's own database: restore into another name (option restore-databases, a:a_copy)",
            system.target
        )));
    }
    for Restoring { stored, .. } in &plan {
        for required in [stored.schema(), stored.post()] {
            if !names.contains(&required) {
                return Err(PluginError::Artifact(format!(
                    "the backup has no {required}: it is not a MySQL plugin backup"
                )));
            }
        }
    }
    // Asked for before anything is restored, not found after it all.
    if config.create_users && !plan.iter().any(|database| names.contains(&database.stored.users())) {
        return Err(PluginError::Unsupported(format!(
            "option create-users: the backup has no {}: it was taken with option users=none (the default), or no \
             account held privileges on the database",
            users::ARTIFACT
        )));
    }
    let mut connection = config.connect()?;
    // Every target is looked at before any is changed.
    let mut targets = Vec::new();
    for Restoring { target: name, .. } in &plan {
        let found = match target(&mut connection, name) {
            Ok(found) => found,
            Err(error) => {
                connection.quit();
                return Err(error);
            }
        };
        if let Target::Exists { objects, .. } = found
            && objects > 0
            && !replace
        {
            connection.quit();
            return Err(target_not_empty(&format!(
                "database {name:?} has {objects} tables, views, routines and events"
            )));
        }
        targets.push(found);
    }
    let mut changes = Changes { targets: Vec::new(), sessions: vec![connection.id] };
    let outcome = restore(config, &mut connection, &plan, targets, (&names, &sizes), &mut changes);
    connection.quit();
    let (tables, rows, accounts) = outcome.map_err(|error| undo(config, &changes, error))?;

    let restored: Vec<String> = plan
        .iter()
        .map(|Restoring { stored, target }| match &stored.name {
            Some(name) if name != target => format!("{name} as {target}"),
            _ => target.clone(),
        })
        .collect();
    let several = if restored.len() > 1 { "databases" } else { "database" };
    let mut description = format!("restored {several} {}: {tables} tables ({rows} rows)", restored.join(", "));
    let mut attributes = vec![
        ("database".into(), plan[0].target.clone()),
        ("tables".into(), tables.to_string()),
        ("rows".into(), rows.to_string()),
        ("jobs".into(), config.jobs.to_string()),
    ];
    if plan.len() > 1 {
        let targets: Vec<&str> = plan.iter().map(|database| database.target.as_str()).collect();
        attributes.push(("databases".into(), targets.join(", ")));
    }
    if config.create_users {
        description.push_str(&format!("; {accounts} accounts created"));
        attributes.push(("accounts_created".into(), accounts.to_string()));
    }
    Ok(Summary { description, attributes })
}

/// Which databases of the backup (`stored`) go where: without option
/// `restore-databases` the first into the named database; with it, those it names.
fn plan(config: &Config, stored: Vec<Stored>) -> Result<Vec<Restoring>, PluginError> {
    let held: Vec<&str> = stored.iter().filter_map(|database| database.name.as_deref()).collect();
    let held = held.join(", ");
    let Some(selection) = &config.restore_databases else {
        if let [first, _, ..] = stored.as_slice() {
            report::info(&format!(
                "the backup holds databases {held}; restoring the first, {}, into {} (option restore-databases \
                 picks others)",
                first.name.as_deref().unwrap_or_default(),
                config.database
            ));
        }
        let first =
            stored.into_iter().next().ok_or_else(|| PluginError::Artifact("the backup holds no database".into()))?;
        return Ok(vec![Restoring { stored: first, target: config.database.clone() }]);
    };
    if stored.iter().any(|database| database.name.is_none()) {
        return Err(PluginError::InvalidSettings(
            "option restore-databases: this backup holds one database; name the database to restore it into \
             instead"
                .into(),
        ));
    }
    let plan: Vec<Restoring> = match selection {
        Databases::All => stored
            .into_iter()
            .map(|stored| {
                let target = stored.name.clone().unwrap_or_default();
                Restoring { stored, target }
            })
            .collect(),
        Databases::Named(mappings) => mappings
            .iter()
            .map(|Mapping { source, target }| {
                let stored = stored.iter().find(|database| database.name.as_deref() == Some(source.as_str()));
                stored.map(|stored| Restoring { stored: stored.clone(), target: target.clone() }).ok_or_else(|| {
                    PluginError::InvalidSettings(format!(
                        "option restore-databases: the backup has no database {source:?}; it holds {held}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(plan)
}

/// Empty or create every target, replay its artifacts, then (option `create-users`)
/// the accounts; `changes` tells [`undo`] what to return. Returns the tables, rows and
/// accounts created.
fn restore(
    config: &Config,
    connection: &mut Connection,
    plan: &[Restoring],
    targets: Vec<Target>,
    (names, sizes): (&[String], &HashMap<String, u64>),
    changes: &mut Changes,
) -> Result<(u64, u64, usize), PluginError> {
    let limit = max_allowed_packet(connection)?;
    for (Restoring { target: database, .. }, before) in plan.iter().zip(targets) {
        let created = match &before {
            Target::Missing => {
                connection
                    .execute(&format!("CREATE DATABASE {}", ident(database)))
                    .map_err(|e| failure(&format!("creating database {database}"), e))?;
                report::info(&format!("created database {database}"));
                true
            }
            Target::Exists { objects: 0, .. } => false,
            Target::Exists { objects, charset, collation } => {
                report::warn(&format!(
                    "replacing the {objects} tables, views, routines and events of database {database}"
                ));
                recreate(connection, database, charset, collation)
                    .map_err(|e| failure(&format!("emptying database {database}"), e))?;
                false
            }
        };
        changes.targets.push(Touched { target: database.clone(), before, created });
    }
    // Every database's tables (and view stand-ins) first, then the data, then views,
    // routines, triggers and events: a definition may use another database of the backup.
    let data: Vec<Vec<String>> = plan.iter().map(|database| database.stored.data_series(names)).collect();
    let mut progress = Progress { done: 0, total: data.iter().map(|series| series.len() as u64 + 2).sum(), rows: 0 };
    for Restoring { stored, target } in plan {
        replay(connection, limit, target, &stored.schema(), Definers::Keep)?;
        progress.artifact_done(&stored.schema(), 0);
    }
    for (Restoring { stored, target }, series) in plan.iter().zip(&data) {
        load_data(config, connection, limit, (stored, target), (series, sizes), &mut progress, &mut changes.sessions)?;
    }
    for Restoring { stored, target } in plan {
        replay(connection, limit, target, &stored.post(), config.definers)?;
        progress.artifact_done(&stored.post(), 0);
        check_foreign_keys(connection)?;
    }
    // Counted on the server: past 4,096 tables an artifact holds several.
    let mut tables = 0;
    for Restoring { target, .. } in plan {
        tables += tables_with_rows(connection, target)?;
    }
    let accounts = if config.create_users { create_users(connection, limit, plan, names)? } else { 0 };
    Ok((tables, progress.rows, accounts))
}

/// The tables of `database` that hold rows (not views or sequences), as a backup counts them.
fn tables_with_rows(connection: &mut Connection, database: &str) -> Result<u64, PluginError> {
    let count = connection
        .value(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
             AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')",
            literal(database)
        ))
        .map_err(|e| failure(&format!("counting the tables of {database}"), e))?
        .unwrap_or_default();
    count.parse().map_err(|_| PluginError::Database(format!("counting the tables of {database}: {count:?}")))
}

/// Apply the `users.sql` of every restored database (option `create-users`) in it;
/// returns how many accounts it created. If it fails, the accounts it created are
/// dropped again (grants it added to accounts that were there stay: docs/mysql.md).
fn create_users(
    connection: &mut Connection,
    limit: usize,
    plan: &[Restoring],
    names: &[String],
) -> Result<usize, PluginError> {
    let counting = |e| failure("listing the server's accounts", e);
    let before = users::accounts(connection).map_err(counting)?;
    let applied = plan
        .iter()
        .filter(|database| names.contains(&database.stored.users()))
        .try_for_each(|database| replay(connection, limit, &database.target, &database.stored.users(), Definers::Keep));
    let created: Vec<(String, String)> = users::accounts(connection)
        .map_err(counting)?
        .into_iter()
        .filter(|account| !before.contains(account))
        .collect();
    if let Err(error) = applied {
        for (user, host) in &created {
            let dropped = connection.execute(&users::drop_statement(user, host));
            if let Err(drop_error) = dropped {
                report::warn(&format!("account {user}@{host}, created by the failed restore, is left: {drop_error}"));
            }
        }
        return Err(error);
    }
    Ok(created.len())
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

/// Restore progress over every artifact of every database.
struct Progress {
    done: u64,
    total: u64,
    rows: u64,
}

impl Progress {
    fn artifact_done(&mut self, name: &str, rows: u64) {
        self.done += 1;
        self.rows += rows;
        report::progress(name, self.done, Some(self.total), self.rows);
    }
}

/// Replay artifact `name` on `connection`, in `database`; `definers` as option
/// `definers` says.
fn replay(
    connection: &mut Connection,
    limit: usize,
    database: &str,
    name: &str,
    definers: Definers,
) -> Result<(), PluginError> {
    prepare(connection, database)?;
    Load::open(name, limit)?.with_definers(definers).run(connection)
}

/// Load the `data` artifacts (plain sizes in `sizes`) into `database` on up to `jobs`
/// connections at once (an artifact each); the plain keys of big tables are built after
/// their data (option `keys-after-data`, see [`keys`]). The ids of the sessions it
/// opens go to `sessions`.
fn load_data(
    config: &Config,
    connection: &mut Connection,
    limit: usize,
    (stored, database): (&Stored, &str),
    (data, sizes): (&[String], &HashMap<String, u64>),
    progress: &mut Progress,
    sessions: &mut Vec<u32>,
) -> Result<(), PluginError> {
    prepare(connection, database)?;
    let deferred = match config.keys_after_data {
        Some(threshold) => {
            // A table's artifacts share what they are named after (`data_table`).
            let mut by_table: HashMap<&str, u64> = HashMap::new();
            for name in data {
                *by_table.entry(stored.data_table(name)).or_default() += sizes.get(name).copied().unwrap_or(0);
            }
            let stored_bytes = |table: &str| {
                let named = stored.data(0, table);
                by_table.get(stored.data_table(&named)).copied().unwrap_or(0)
            };
            keys::defer(connection, threshold, stored_bytes)?
        }
        None => Vec::new(),
    };
    let wanted = config.jobs.min(data.len().max(1)) - 1;
    let mut others = sessions::open_more(wanted, "loading tables", || {
        config.connect().and_then(|mut other| prepare(&mut other, database).map(|()| other))
    });
    sessions.extend(others.iter().map(|other| other.id));
    let mut connections: Vec<&mut Connection> = std::iter::once(&mut *connection).chain(others.iter_mut()).collect();
    let mut slots: Vec<Option<Load>> = connections.iter().map(|_| None).collect();
    let mut pending: Vec<&String> = data.iter().collect();
    loop {
        // Every idle connection takes the next artifact it may load and sends its first
        // statement.
        for index in 0..connections.len() {
            while slots[index].is_none() {
                // Never two ranges of one table at once: MariaDB's bulk insert into an
                // empty table locks all of it until the transaction ends.
                let loading: Vec<&str> = slots.iter().flatten().map(|load| stored.data_table(&load.name)).collect();
                let Some(next) = pending.iter().position(|name| !loading.contains(&stored.data_table(name))) else {
                    break;
                };
                let mut load = Load::open(pending.remove(next), limit)?.exact();
                if load.step(&mut *connections[index])? {
                    // An artifact without statements.
                    commit(&mut *connections[index], &load.name)?;
                    progress.artifact_done(&load.name, load.rows);
                } else {
                    slots[index] = Some(load);
                }
            }
        }
        // Whichever statement ends first gets its connection's next one, read while the
        // other server threads work.
        let Some(index) = sessions::first_answering(&mut connections, &slots)
            .map_err(|e| PluginError::Connection(format!("waiting for the server to load the data: {e}")))?
        else {
            break;
        };
        let Some(load) = &mut slots[index] else { continue };
        if load.step(&mut *connections[index])? {
            commit(&mut *connections[index], &load.name)?;
            progress.artifact_done(&load.name, load.rows);
            slots[index] = None;
        }
    }
    keys::build(&mut connections, deferred)?;
    for other in others {
        other.quit();
    }
    Ok(())
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
    // Before the USE: a data artifact may have left the session in binary
    // (`script::Strings`), in which MySQL 8 would misread a utf8mb4 name. A session may
    // wait for hours while another loads one big table before it builds keys; and one
    // that loaded nothing builds them under the artifacts' sql_mode too.
    connection
        .execute("SET NAMES utf8mb4, autocommit = 0, wait_timeout = 31536000, sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
        .map_err(|e| failure("setting up the session", e))?;
    connection.execute(&format!("USE {}", ident(database))).map_err(|e| failure("selecting the database", e))?;
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
    /// Whether definitions keep their `DEFINER`.
    definers: Definers,
    /// Whether a statement that leaves a warning fails the load: rows the server
    /// changed on their way in (the artifacts' `sql_mode` is not strict).
    exact: bool,
    /// The statement sent and not yet answered.
    running: Option<Vec<u8>>,
    rows: u64,
}

impl Load {
    fn open(name: &str, limit: usize) -> Result<Self, PluginError> {
        let reader = BufReader::with_capacity(READ_BUFFER, artifacts::open(name)?);
        Ok(Load {
            name: name.to_owned(),
            limit,
            statements: Statements::new(reader),
            definers: Definers::Keep,
            exact: false,
            running: None,
            rows: 0,
        })
    }

    fn with_definers(self, definers: Definers) -> Self {
        Load { definers, ..self }
    }

    /// Rows to be loaded as they were backed up: a warning fails the load.
    fn exact(self) -> Self {
        Load { exact: true, ..self }
    }

    /// Read the next statement while the server runs the one sent before, then wait
    /// for that one and send this; `true` once the artifact is done.
    fn step(&mut self, connection: &mut Connection) -> Result<bool, PluginError> {
        let next = self.statements.next_statement();
        if let Some(sent) = self.running.take() {
            self.rows += connection.finish().map_err(|error| statement_failure(&self.name, &sent, error))?;
            if self.exact && connection.warnings() > 0 {
                return Err(changed_rows(&self.name, connection));
            }
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
                let statement = match self.definers {
                    Definers::Keep => statement,
                    Definers::CurrentUser => without_definer(&statement).into_owned(),
                };
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

/// The error for rows the server stored otherwise than they were backed up, with its
/// first warnings.
fn changed_rows(artifact: &str, connection: &mut Connection) -> PluginError {
    let count = connection.warnings();
    let shown = match connection.rows("SHOW WARNINGS LIMIT 3") {
        Ok(rows) => rows.into_iter().map(|row| text::<3>(row)[2].clone()).collect::<Vec<_>>().join("; "),
        Err(error) => format!("SHOW WARNINGS failed: {error}"),
    };
    PluginError::Database(format!(
        "{artifact}: the server did not store rows as they were backed up ({count} warnings: {shown})"
    ))
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

/// After a failed restore, stop its sessions and return every target it touched to
/// where it started; the error says where each was left.
fn undo(config: &Config, changes: &Changes, error: PluginError) -> PluginError {
    let Changes { targets: touched, sessions } = changes;
    if touched.is_empty() {
        return error;
    }
    let left: Vec<String> = match config.connect() {
        Ok(mut connection) => {
            // A statement still running on another session (a key build may take hours)
            // holds its table, and the DROP below would wait for it. A session that has
            // ended already is unknown to the server: nothing to stop.
            for id in sessions {
                let _ = connection.execute(&format!("KILL CONNECTION {id}"));
            }
            let left = touched.iter().rev().map(|touched| undo_one(&mut connection, touched)).collect();
            connection.quit();
            left
        }
        Err(undo) => touched
            .iter()
            .rev()
            .map(|Touched { target, .. }| {
                format!("database {target} is left partly restored ({}); drop it", undo.message())
            })
            .collect(),
    };
    error.noting(&left.join("; "))
}

/// Return one target to where it started; where it was left.
fn undo_one(connection: &mut Connection, touched: &Touched) -> String {
    let Touched { target: database, before, created } = touched;
    let done = match before {
        Target::Exists { charset, collation, .. } if !created => recreate(connection, database, charset, collation),
        _ => connection.execute(&format!("DROP DATABASE {}", ident(database))).map(|_| ()),
    };
    match (done, created) {
        (Ok(()), true) => format!("database {database} was dropped again"),
        (Ok(()), false) => format!("database {database} was left empty"),
        (Err(undo), _) => {
            format!("database {database} is left partly restored ({}); drop it", failure("undoing", undo).message())
        }
    }
}
