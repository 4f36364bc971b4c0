//! The artifact format: SQL scripts that `psql` replays on its own, in this order:
//! `pre-data.sql` (schema objects), one `data.NNNNN.<table>.sql` per table (its `COPY ...
//! FROM stdin` block), `large-objects.sql` (their contents), `post-data.sql` (sequence
//! values, constraints, indexes, triggers, comments). Backups of plugin versions before
//! per-table artifacts have one `data.sql` holding every table and the large objects.
//!
//! Every statement is preceded by a header comment, `-- stowage:sql <bytes> <what>` or
//! `-- stowage:copy <bytes> <what>`, giving the exact length of the statement that follows
//! so the restore finds statement boundaries without parsing SQL (function bodies contain
//! semicolons). After a `copy` statement come the rows in COPY text format and a line
//! `\.`, which a row can never be (COPY escapes backslashes). A header may follow a line
//! `-- stowage:in ...` that says where the statement's object belongs ([`Scope`]). psql
//! ignores them all.
//! The format is described for people in `docs/postgres.md`.

use std::io::{self, BufRead, Write};

use stowage_plugin_sdk::artifacts;

use crate::scope::Scope;

/// The schema objects, replayed first.
pub const PRE_DATA: &str = "pre-data.sql";
/// The series of data artifacts, one per table, replayed in name order.
pub const DATA: &str = "data";
/// The contents of large objects, after the tables.
pub const LARGE_OBJECTS: &str = "large-objects.sql";
/// What comes after the data, replayed last.
pub const POST_DATA: &str = "post-data.sql";

/// The sections of a backup whose artifacts are `names`, in replay order (the roles
/// artifact is not a section); `None` if it lacks the schema sections.
pub fn replay_order(names: &[String]) -> Option<Vec<String>> {
    let has = |name: &str| names.iter().any(|n| n == name);
    if !has(PRE_DATA) || !has(POST_DATA) {
        return None;
    }
    // An older backup's single `data.sql` is in the series too.
    let data = artifacts::series(names, DATA);
    let large_objects = has(LARGE_OBJECTS).then(|| LARGE_OBJECTS.to_owned());
    Some(std::iter::once(PRE_DATA.to_owned()).chain(data).chain(large_objects).chain([POST_DATA.to_owned()]).collect())
}

/// Media type of every artifact.
pub const MEDIA_TYPE: &str = "application/sql";

/// Session settings at the top of every section, so each replays on its own.
/// Those that change how values are read are the ones the backup wrote them with.
const SETTINGS: [&str; 12] = [
    "SET statement_timeout = 0;",
    "SET lock_timeout = 0;",
    "SET idle_in_transaction_session_timeout = 0;",
    "SET client_encoding = 'UTF8';",
    "SET standard_conforming_strings = on;",
    "SET datestyle = 'ISO';",
    "SET intervalstyle = 'postgres';",
    "SET xmloption = content;",
    "SET row_security = off;",
    "SET check_function_bodies = false;",
    "SET client_min_messages = warning;",
    "SELECT pg_catalog.set_config('search_path', '', false);",
];

/// What the session settings at the top of every section are described as.
pub const SETTING: &str = "SETTING";

const HEADER: &str = "-- stowage:";
/// What a header line that says which tables a data artifact holds starts with.
const DATA_INDEX: &str = "data ";
/// What a header line that says where the next entry's object belongs starts with.
const SCOPE: &str = "in ";
const END_OF_ROWS: &[u8] = b"\\.\n";

/// Rows sent to the server in one message when restoring.
const ROW_BATCH: usize = 256 * 1024;

/// Writes one section.
pub struct ScriptWriter<W: Write> {
    out: W,
}

/// Make `what` fit on the header line.
fn one_line(what: &str) -> String {
    what.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

impl<W: Write> ScriptWriter<W> {
    /// Start section `name` of a backup of `database`.
    pub fn new(mut out: W, name: &str, database: &str) -> io::Result<Self> {
        writeln!(out, "-- Stowage backup of PostgreSQL database {}: {name}", one_line(database))?;
        writeln!(out, "-- Replay the sections in order with psql, in one transaction:")?;
        writeln!(out, "--   cat {PRE_DATA} $(ls {DATA}.*.sql | sort) {LARGE_OBJECTS} {POST_DATA} \\")?;
        writeln!(out, "--     | psql --single-transaction -v ON_ERROR_STOP=1 -d TARGET -f -")?;
        writeln!(out, "-- (into a cluster without the backup's roles, {} first)", crate::roles::ARTIFACT)?;
        writeln!(out)?;
        let mut writer = ScriptWriter { out };
        for setting in SETTINGS {
            writer.statement(SETTING, setting, None)?;
        }
        Ok(writer)
    }

    fn scope(&mut self, scope: Option<&Scope>) -> io::Result<()> {
        match scope {
            Some(scope) => writeln!(self.out, "{HEADER}{SCOPE}{}", scope.fields()),
            None => Ok(()),
        }
    }

    /// A line saying that data artifact `artifact` holds the rows of table `scope`.
    pub fn data_index(&mut self, artifact: &str, scope: &Scope) -> io::Result<()> {
        writeln!(self.out, "{HEADER}{DATA_INDEX}{artifact} {}", scope.fields())
    }

    /// One SQL statement (or several that belong together) about an object of `scope`.
    pub fn statement(&mut self, what: &str, sql: &str, scope: Option<&Scope>) -> io::Result<()> {
        self.scope(scope)?;
        writeln!(self.out, "{HEADER}sql {} {}", sql.len(), one_line(what))?;
        self.out.write_all(sql.as_bytes())?;
        self.out.write_all(b"\n\n")
    }

    /// A `COPY ... FROM stdin;` statement into a table of `scope`; rows follow with
    /// [`ScriptWriter::rows`].
    pub fn copy(&mut self, what: &str, sql: &str, scope: Option<&Scope>) -> io::Result<()> {
        self.scope(scope)?;
        writeln!(self.out, "{HEADER}copy {} {}", sql.len(), one_line(what))?;
        self.out.write_all(sql.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Rows in COPY text format, each ending in a newline.
    pub fn rows(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    /// End the rows of the current COPY.
    pub fn end_rows(&mut self) -> io::Result<()> {
        self.out.write_all(END_OF_ROWS)?;
        self.out.write_all(b"\n")
    }

    /// The underlying writer, to finish it.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// What a section holds, one at a time, with where its object belongs (none for objects
/// of no schema, and in backups taken before scopes were recorded).
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Sql {
        what: String,
        sql: String,
        scope: Option<Scope>,
    },
    /// Rows follow; read them with [`ScriptReader::rows`].
    Copy {
        what: String,
        sql: String,
        scope: Option<Scope>,
    },
}

/// Reads one section.
pub struct ScriptReader<R: BufRead> {
    input: R,
    line: Vec<u8>,
    /// The data artifacts the section named and the tables each holds.
    data_index: Vec<(String, Scope)>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl<R: BufRead> ScriptReader<R> {
    pub fn new(input: R) -> Self {
        ScriptReader { input, line: Vec::new(), data_index: Vec::new() }
    }

    /// The next entry, skipping comments and blank lines; `None` at the end.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let mut scope = None;
        loop {
            self.line.clear();
            if self.input.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            let line = String::from_utf8_lossy(&self.line);
            let Some(header) = line.trim_end().strip_prefix(HEADER) else {
                continue;
            };
            if let Some(fields) = header.strip_prefix(SCOPE) {
                scope = Some(
                    Scope::parse(fields)
                        .ok_or_else(|| invalid(format!("malformed scope line {:?}", line.trim_end())))?,
                );
                continue;
            }
            if let Some(fields) = header.strip_prefix(DATA_INDEX) {
                let entry = fields
                    .split_once(' ')
                    .and_then(|(artifact, table)| Some((artifact.to_owned(), Scope::parse(table)?)))
                    .ok_or_else(|| invalid(format!("malformed data index line {:?}", line.trim_end())))?;
                self.data_index.push(entry);
                continue;
            }
            let mut fields = header.splitn(3, ' ');
            let kind = fields.next().unwrap_or_default().to_owned();
            let length = fields.next().and_then(|n| n.parse::<usize>().ok());
            let length = match (kind.as_str(), length) {
                (_, Some(length)) => length,
                ("sql" | "copy", None) => {
                    return Err(invalid(format!("malformed entry header {:?}", line.trim_end())));
                }
                // An annotation this version does not know: skipped, so that later
                // versions may add some without breaking this restore.
                (_, None) => continue,
            };
            let what = fields.next().unwrap_or_default().to_owned();
            let mut sql = vec![0u8; length];
            self.input.read_exact(&mut sql)?;
            let sql = String::from_utf8(sql).map_err(|_| invalid(format!("{what}: the statement is not UTF-8")))?;
            return match kind.as_str() {
                "sql" => Ok(Some(Entry::Sql { what, sql, scope })),
                "copy" => {
                    self.line.clear();
                    self.input.read_until(b'\n', &mut self.line)?;
                    Ok(Some(Entry::Copy { what, sql, scope }))
                }
                other => Err(invalid(format!("unknown entry kind {other:?}"))),
            };
        }
    }

    /// The data artifacts the section read so far named, with a table each holds
    /// (pre-data names them all; backups taken before this index have none).
    pub fn data_index(&self) -> &[(String, Scope)] {
        &self.data_index
    }

    /// Hand the rows of the current COPY to `send` in batches of whole rows; returns the
    /// number of rows.
    pub fn rows<E: From<io::Error>>(&mut self, mut send: impl FnMut(&[u8]) -> Result<(), E>) -> Result<u64, E> {
        let mut batch = Vec::with_capacity(ROW_BATCH);
        let mut rows = 0;
        loop {
            let (read, ended) = self.row_batch(&mut batch)?;
            rows += read;
            if !batch.is_empty() {
                send(&batch)?;
            }
            if ended {
                return Ok(rows);
            }
        }
    }

    /// Replace `batch` with the next rows of the current COPY, whole rows up to about
    /// [`ROW_BATCH`] bytes; how many, and whether they were the last.
    pub fn row_batch(&mut self, batch: &mut Vec<u8>) -> io::Result<(u64, bool)> {
        batch.clear();
        let mut rows = 0;
        while batch.len() < ROW_BATCH {
            self.line.clear();
            if self.input.read_until(b'\n', &mut self.line)? == 0 {
                return Err(invalid("the rows end without \\.".into()));
            }
            if self.line == END_OF_ROWS {
                return Ok((rows, true));
            }
            rows += 1;
            batch.extend_from_slice(&self.line);
        }
        Ok((rows, false))
    }
}
