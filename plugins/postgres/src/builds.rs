//! The post-data section of a parallel restore. Its index and key builds, most of its
//! time, run on every session at once, as `pg_restore -j` runs them; the rest follows
//! on one session, in one transaction.
//!
//! Only the builds of one table's indexes run in parallel: `CREATE INDEX`, which takes its
//! table in SHARE mode and so runs beside the other index builds of that table, and a
//! key's `ALTER TABLE ONLY ... ADD CONSTRAINT`, which takes its table alone (and, on an
//! inheritance parent, its children after it: a wait, never a deadlock, as no build
//! locks a parent after its child). A table's builds start in the section's order (its
//! keys before its other indexes), never beside one that locks them out, and the
//! biggest tables start first. Every build commits on its own: a session holding a
//! build's lock until a later commit could wait on a session that waits on it, which no
//! server sees as a deadlock. The builds go ahead of the section's other statements:
//! what needs an index (index partitions, foreign keys, replica identities, clustering,
//! materialized views) comes after them anyway, and the rest (sequence values, `NOT
//! VALID` checks, comments, privileges, ...) is independent of them.

use std::collections::{HashMap, VecDeque};
use std::io::BufReader;

use stowage_plugin_sdk::{PluginError, artifacts, report, sessions};

use crate::protocol::Connection;
use crate::replay::{self, Loaded, Replaying, statement_failure};
use crate::scope::Scope;
use crate::script::{self, Entry, ScriptReader};
use crate::{READ_BUFFER, artifact_error, failure};

/// An index or key build.
#[derive(Debug)]
struct Build {
    what: String,
    sql: String,
    /// Whether it takes its table alone.
    exclusive: bool,
}

impl Build {
    /// Statement `what` about an object of `scope` as a build, with its table, if it is one.
    fn of(what: &str, sql: &str, scope: Option<&Scope>) -> Option<(String, Self)> {
        let relation = scope?.relation.clone()?;
        let exclusive = if what.starts_with("INDEX ") && sql.starts_with("CREATE ") {
            false
        } else if what.starts_with("CONSTRAINT ") && sql.starts_with("ALTER TABLE ONLY ") {
            true
        } else {
            return None;
        };
        Some((relation, Build { what: what.to_owned(), sql: sql.to_owned(), exclusive }))
    }
}

/// The builds of one table, in the section's order, and those running.
#[derive(Debug)]
struct Table {
    rows: u64,
    waiting: VecDeque<Build>,
    running: usize,
    running_exclusive: bool,
}

impl Table {
    /// Take the next build if it may start now.
    fn next(&mut self) -> Option<Build> {
        let exclusive = self.waiting.front()?.exclusive;
        if self.running_exclusive || (exclusive && self.running > 0) {
            return None;
        }
        self.running += 1;
        self.running_exclusive = exclusive;
        self.waiting.pop_front()
    }

    fn finished(&mut self) {
        self.running -= 1;
        self.running_exclusive = false;
    }
}

/// What a session is doing: a build of table `table` (an index of [`Schedule::tables`]).
struct Running {
    table: usize,
    build: Build,
}

/// The builds by table, biggest first.
struct Schedule {
    tables: Vec<Table>,
    /// Tables before this one have no build waiting.
    first_waiting: usize,
}

impl Schedule {
    fn new(builds: Vec<(String, Build)>, loaded: &Loaded) -> Self {
        let mut tables: Vec<Table> = Vec::new();
        let mut by_relation: HashMap<String, usize> = HashMap::new();
        for (relation, build) in builds {
            let index = *by_relation.entry(relation).or_insert_with_key(|relation| {
                let rows = loaded.relation_rows.get(relation).copied().unwrap_or_default();
                tables.push(Table { rows, waiting: VecDeque::new(), running: 0, running_exclusive: false });
                tables.len() - 1
            });
            tables[index].waiting.push_back(build);
        }
        // Stable: among tables of one size, the section's order.
        tables.sort_by_key(|table| std::cmp::Reverse(table.rows));
        Schedule { tables, first_waiting: 0 }
    }

    /// The next build that may start, from the biggest table that has one.
    fn next(&mut self) -> Option<Running> {
        while self.tables.get(self.first_waiting).is_some_and(|table| table.waiting.is_empty()) {
            self.first_waiting += 1;
        }
        let start = self.first_waiting;
        self.tables[start..]
            .iter_mut()
            .enumerate()
            .find_map(|(offset, table)| Some(Running { table: start + offset, build: table.next()? }))
    }
}

/// Replay post-data on `main` and the `others` sessions (`main` runs what is not a
/// build), none of which has a transaction open; `loaded` says how big each table is.
pub fn run(
    main: &mut Connection,
    others: &mut [Connection],
    replaying: Replaying<'_>,
    loaded: &Loaded,
) -> Result<(), PluginError> {
    let mut script = ScriptReader::new(BufReader::with_capacity(READ_BUFFER, artifacts::open(script::POST_DATA)?));
    let (mut settings, mut builds, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(entry) = script.next_entry().map_err(artifact_error)? {
        let Entry::Sql { what, sql, scope } = entry else {
            return Err(PluginError::Artifact(format!("{} holds rows, which it never does", script::POST_DATA)));
        };
        if replaying.skips(&what, scope.as_ref()) {
            continue;
        }
        if what == script::SETTING {
            settings.push(sql);
        } else if let Some(build) = Build::of(&what, &sql, scope.as_ref()) {
            builds.push(build);
        } else {
            rest.push((what, sql));
        }
    }
    let mut sessions: Vec<&mut Connection> = std::iter::once(&mut *main).chain(others.iter_mut()).collect();
    for session in sessions.iter_mut() {
        for setting in &settings {
            replay::execute(session, script::SETTING, setting)?;
        }
    }
    if !builds.is_empty() {
        report::info(&format!("building {} indexes and keys on {} sessions", builds.len(), sessions.len()));
        build_in_parallel(&mut sessions, Schedule::new(builds, loaded))?;
    }
    main.execute("BEGIN").map_err(|e| failure("starting the transaction after the builds", e))?;
    for (what, sql) in rest {
        replay::execute(main, &what, &sql)?;
    }
    main.execute("COMMIT").map_err(|e| failure("committing the restore", e))
}

/// Run every build of `schedule`, each session one at a time, waiting for whichever
/// session finishes first.
fn build_in_parallel(sessions: &mut [&mut Connection], mut schedule: Schedule) -> Result<(), PluginError> {
    let mut running: Vec<Option<Running>> = sessions.iter().map(|_| None).collect();
    loop {
        for (session, slot) in sessions.iter_mut().zip(running.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let Some(next) = schedule.next() else { break };
            session
                .start_statement(&next.build.sql)
                .map_err(|e| statement_failure(&next.build.what, &next.build.sql, e))?;
            *slot = Some(next);
        }
        let Some(index) =
            sessions::first_answering(sessions, &running).map_err(|e| failure("waiting for the builds", e.into()))?
        else {
            return Ok(());
        };
        let Some(Running { table, build }) = running[index].take() else { continue };
        sessions[index].statement_done().map_err(|e| statement_failure(&build.what, &build.sql, e))?;
        schedule.tables[table].finished();
    }
}
