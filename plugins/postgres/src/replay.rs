//! Replaying one section of a backup on a session, a step at a time (a statement, or a
//! batch of rows), so that one thread can load several data artifacts at once.

use std::collections::HashMap;
use std::io::{self, BufReader};

use stowage_plugin_sdk::artifacts::{self, ArtifactReader};
use stowage_plugin_sdk::{PluginError, report};

use crate::pick::Picking;
use crate::protocol::{Connection, Error};
use crate::scope::Scope;
use crate::script::{self, Entry, ScriptReader};
use crate::tally::TableRows;
use crate::{Config, READ_BUFFER, artifact_error, catalog, failure};

/// Characters of a failing statement quoted in the error.
const EXCERPT: usize = 300;

pub fn statement_failure(what: &str, sql: &str, error: Error) -> PluginError {
    let mut excerpt: String = sql.chars().take(EXCERPT).collect();
    if excerpt.len() < sql.len() {
        excerpt.push_str("...");
    }
    failure(&format!("restoring {what} (statement: {excerpt})"), error)
}

/// What a restore's sections for the picked parts (`picking`; all without one) do.
#[derive(Clone, Copy)]
pub struct Replaying<'a> {
    pub config: &'a Config,
    pub picking: Option<&'a Picking<'a>>,
}

impl Replaying<'_> {
    /// Whether statement `what` about an object of `scope` is left out: a part the
    /// restore goes without (owners, privileges), or not picked.
    pub fn skips(&self, what: &str, scope: Option<&Scope>) -> bool {
        catalog::Optional::of(what).is_some_and(|part| self.config.restore_without.contains(&part))
            || self.picking.is_some_and(|picking| !picking.runs(what, scope))
    }
}

/// Run statement `what` of a section on `session`.
pub fn execute(session: &mut Connection, what: &str, sql: &str) -> Result<(), PluginError> {
    let done = session.execute(sql);
    if catalog::is_role_check(what) {
        // Its message names the roles; the statement would add only noise.
        done.map_err(|e| failure("checking the roles the backup uses", e))
    } else {
        done.map_err(|e| statement_failure(what, sql, e))
    }
}

/// The rows loaded so far, per table.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rows: u64,
    pub table_rows: TableRows,
    /// Rows per relation (`schema.name`, as scopes name it), where the backup recorded it:
    /// what a table's index builds have to read.
    pub relation_rows: HashMap<String, u64>,
}

/// A section being replayed.
pub struct Section {
    script: ScriptReader<BufReader<ArtifactReader>>,
    /// Whether the session has the settings every section starts with (a round trip
    /// each, per table otherwise).
    settled: bool,
    /// The table whose rows are being loaded.
    copying: Option<Copying>,
    batch: Vec<u8>,
}

/// Rows of one table being loaded.
struct Copying {
    what: String,
    relation: Option<String>,
    rows: u64,
}

impl Section {
    /// Open section `name` for a session that has the settings already, or not.
    pub fn open(name: &str, settled: bool) -> Result<Self, PluginError> {
        let script = ScriptReader::new(BufReader::with_capacity(READ_BUFFER, artifacts::open(name)?));
        Ok(Section { script, settled, copying: None, batch: Vec::new() })
    }

    /// Run the next statement, or send the next batch of rows; whether the section is done.
    pub fn step(
        &mut self,
        session: &mut Connection,
        replaying: Replaying<'_>,
        loaded: &mut Loaded,
    ) -> Result<bool, PluginError> {
        if let Some(Copying { what, relation, rows }) = &mut self.copying {
            let (read, ended) = self.script.row_batch(&mut self.batch).map_err(artifact_error)?;
            *rows += read;
            loaded.rows += read;
            if !self.batch.is_empty() {
                session.copy_data(&self.batch).map_err(|e| failure(&format!("loading {what}"), e))?;
            }
            if ended {
                session.copy_done().map_err(|e| failure(&format!("loading {what}"), e))?;
                loaded.table_rows.add(what, *rows);
                if let Some(relation) = relation.take() {
                    *loaded.relation_rows.entry(relation).or_default() += *rows;
                }
                report::progress(what, loaded.table_rows.tables(), None, loaded.rows);
                self.copying = None;
            }
            return Ok(false);
        }
        let Some(entry) = self.script.next_entry().map_err(artifact_error)? else {
            return Ok(true);
        };
        match entry {
            Entry::Sql { what, sql, scope } => {
                if replaying.skips(&what, scope.as_ref()) || (self.settled && what == script::SETTING) {
                    return Ok(false);
                }
                execute(session, &what, &sql)?;
            }
            Entry::Copy { what, sql, scope } => {
                if replaying.picking.is_some_and(|picking| !picking.runs(&what, scope.as_ref())) {
                    self.script.rows(|_| Ok::<(), io::Error>(())).map_err(artifact_error)?;
                    return Ok(false);
                }
                session.copy_in(&sql).map_err(|e| statement_failure(&what, &sql, e))?;
                self.copying = Some(Copying { what, relation: scope.and_then(|scope| scope.relation), rows: 0 });
            }
        }
        Ok(false)
    }

    /// Replay the whole section.
    pub fn run(
        mut self,
        session: &mut Connection,
        replaying: Replaying<'_>,
        loaded: &mut Loaded,
    ) -> Result<(), PluginError> {
        while !self.step(session, replaying, loaded)? {}
        Ok(())
    }
}
