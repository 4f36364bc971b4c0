//! Copying the rows into the data artifacts, on the backup's session and on further
//! sessions that share its snapshot (`pg_export_snapshot`, as `pg_dump -j` does). The
//! plugin has one thread: it takes turns, each reading what one session's socket holds,
//! while every server process goes on producing rows.
//!
//! A further session locks a table before reading it, without waiting: when someone
//! queued a conflicting lock after the backup's session locked the table, waiting would
//! never end (the queued request waits for the backup). That table is then read by the
//! backup's own session, which holds its lock already, instead of failing the backup as
//! `pg_dump -j` does.

use std::collections::{HashSet, VecDeque};

use stowage_plugin_sdk::artifacts::{self, ArtifactWriter};
use stowage_plugin_sdk::{PluginError, report, sessions};

use crate::pieces::{DataArtifact, Part};
use crate::protocol::{Connection, CopyOut, CopyOutError, Error, quote_literal};
use crate::script::{MEDIA_TYPE, ScriptWriter};
use crate::tally::TableRows;
use crate::{Config, artifact_error, failure};

/// Rows between two progress reports.
const PROGRESS_ROWS: u64 = 10_000;

/// SQLSTATE `lock_not_available`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// `server_version_num` of PostgreSQL 17, which added `transaction_timeout`.
const TRANSACTION_TIMEOUT_SINCE: u32 = 170_000;

/// The settings of every session of a backup on a server of `server_version`, in its
/// transaction: no server-side timeout may end a snapshot that a long table needs.
pub fn session_settings(lock_timeout: &str, server_version: u32) -> String {
    let mut settings = format!(
        "SET LOCAL search_path = ''; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {}; \
         SET LOCAL idle_in_transaction_session_timeout = 0",
        quote_literal(lock_timeout)
    );
    if server_version >= TRANSACTION_TIMEOUT_SINCE {
        settings.push_str("; SET LOCAL transaction_timeout = 0");
    }
    settings
}

/// What the data artifacts hold.
#[derive(Debug, Default)]
pub struct Copied {
    pub rows: u64,
    pub bytes: u64,
    pub table_rows: TableRows,
}

/// Open up to `count` sessions on the snapshot `snapshot` names (fewer when the server
/// refuses some).
pub fn join_snapshot(config: &Config, snapshot: &str, server_version: u32, count: usize) -> Vec<Connection> {
    let begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}; {}",
        quote_literal(snapshot),
        session_settings(&config.lock_timeout, server_version)
    );
    sessions::open_more(count, "reading tables", || {
        let mut session = config.connect()?;
        session.execute(&begin).map_err(|e| failure("joining the backup's snapshot", e))?;
        Ok(session)
    })
}

/// A data artifact being written.
struct Task<'p> {
    artifact: &'p DataArtifact<'p>,
    /// The part being read.
    part: usize,
    writer: ScriptWriter<ArtifactWriter>,
    copy: CopyOut,
}

/// One session and what it is reading.
struct Lane<'s, 'p> {
    session: &'s mut Connection,
    /// The backup's own session, which locked every table.
    first: bool,
    /// The tables this session locked (a further session's own locks).
    locked: HashSet<&'p str>,
    task: Option<Task<'p>>,
}

impl<'p> Lane<'_, 'p> {
    /// Lock the tables of `artifact` this session has not locked yet, without waiting;
    /// whether they are locked now.
    fn lock(&mut self, artifact: &'p DataArtifact<'p>) -> Result<bool, PluginError> {
        let missing: Vec<&'p str> = artifact
            .parts
            .iter()
            .map(|part| part.table.quoted.as_str())
            .filter(|table| !self.locked.contains(table))
            .collect();
        if self.first || missing.is_empty() {
            return Ok(true);
        }
        let lock = format!(
            "SAVEPOINT stowage_lock; LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT; RELEASE SAVEPOINT stowage_lock",
            missing.join(", ")
        );
        match self.session.execute(&lock) {
            Ok(()) => {
                self.locked.extend(missing);
                Ok(true)
            }
            Err(Error::Server(error)) if error.code == LOCK_NOT_AVAILABLE => {
                self.session
                    .execute("ROLLBACK TO SAVEPOINT stowage_lock; RELEASE SAVEPOINT stowage_lock")
                    .map_err(|e| failure("giving up a lock", e))?;
                Ok(false)
            }
            Err(error) => Err(failure(&format!("locking the tables of {}", artifact.name), error)),
        }
    }

    /// Start writing `artifact`.
    fn start(&mut self, artifact: &'p DataArtifact<'p>, database: &str) -> Result<(), PluginError> {
        let mut writer = ScriptWriter::new(artifacts::create(&artifact.name, MEDIA_TYPE)?, &artifact.name, database)
            .map_err(artifact_error)?;
        let copy = start_part(self.session, &mut writer, &artifact.parts[0])?;
        self.task = Some(Task { artifact, part: 0, writer, copy });
        Ok(())
    }
}

/// Write the COPY statement of `part` and start reading its rows.
fn start_part(
    session: &mut Connection,
    writer: &mut ScriptWriter<ArtifactWriter>,
    part: &Part<'_>,
) -> Result<CopyOut, PluginError> {
    let table = part.table;
    writer.copy(&entry(&table.name), &table.copy_in(), table.scope.as_ref()).map_err(artifact_error)?;
    session.start_copy_out(&part.copy_out()).map_err(|e| failure(&format!("copying table {}", table.name), e))
}

/// The entry of a table's rows in the data script, the key of its row count.
fn entry(table: &str) -> String {
    format!("TABLE DATA {table}")
}

/// Copy the rows of `planned` into their artifacts on `first` (the backup's session) and
/// `others` (on its snapshot).
pub fn run(
    database: &str,
    first: &mut Connection,
    others: &mut [Connection],
    planned: &[DataArtifact<'_>],
) -> Result<Copied, PluginError> {
    let mut lanes: Vec<Lane> =
        std::iter::once(Lane { session: first, first: true, locked: HashSet::new(), task: None })
            .chain(others.iter_mut().map(|session| Lane { session, first: false, locked: HashSet::new(), task: None }))
            .collect();
    let mut queue: VecDeque<&DataArtifact> = planned.iter().collect();
    // Artifacts whose tables another session could not lock without waiting.
    let mut for_first: VecDeque<&DataArtifact> = VecDeque::new();
    let total = planned.len() as u64;
    let (mut done, mut copied) = (0u64, Copied::default());
    loop {
        let mut busy = false;
        for lane in &mut lanes {
            if lane.task.is_none() {
                let next = if lane.first {
                    for_first.pop_front().or_else(|| queue.pop_front())
                } else {
                    let mut next = None;
                    while let Some(artifact) = queue.pop_front() {
                        if lane.lock(artifact)? {
                            next = Some(artifact);
                            break;
                        }
                        report::warn(&format!(
                            "{}: someone waits for a lock on its table that conflicts with the backup (ALTER \
                             TABLE, say), granted when the backup ends; the backup's own session reads it",
                            artifact.name
                        ));
                        for_first.push_back(artifact);
                    }
                    next
                };
                if let Some(artifact) = next {
                    lane.start(artifact, database)?;
                }
            }
            let Lane { session, task: Some(task), .. } = lane else { continue };
            busy = true;
            let artifact = task.artifact;
            let table = &artifact.parts[task.part].table.name;
            let writer = &mut task.writer;
            let step = session.copy_out_step(&mut task.copy, |row| {
                writer.rows(row)?;
                copied.rows += 1;
                copied.bytes += row.len() as u64;
                if copied.rows % PROGRESS_ROWS == 0 {
                    report::progress(table, done, Some(total), copied.rows);
                }
                Ok(())
            });
            let rows = match step {
                Ok(None) => continue,
                Ok(Some(rows)) => rows,
                Err(CopyOutError::Database(error)) => return Err(failure(&format!("copying table {table}"), error)),
                Err(CopyOutError::Sink(error)) => return Err(artifact_error(error)),
            };
            task.writer.end_rows().map_err(artifact_error)?;
            copied.table_rows.add(&entry(table), rows);
            report::debug(&format!("{}: table {table}, {rows} rows", artifact.name));
            task.part += 1;
            if let Some(part) = artifact.parts.get(task.part) {
                task.copy = start_part(session, &mut task.writer, part)?;
                continue;
            }
            if let Some(task) = lane.task.take() {
                task.writer.into_inner().finish()?;
                done += 1;
                report::progress(table, done, Some(total), copied.rows);
            }
        }
        if !busy {
            return Ok(copied);
        }
    }
}
