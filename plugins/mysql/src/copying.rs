//! Copying the rows of tables into data artifacts as batched `INSERT`s, on the backup's
//! connection and on more whose snapshots opened while the same lock held every commit
//! still: one point for every table. The plugin has one thread: it takes turns, a batch
//! of rows from each connection, while every server thread goes on sending its table.

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use stowage_plugin_sdk::artifacts::{self, ArtifactWriter};
use stowage_plugin_sdk::{PluginError, report};

use crate::protocol::{Column, Connection, Error, codes, text, types};
use crate::script::{Strings, ident, literal, push_hex};
use crate::{MEDIA_TYPE, failure};

/// An `INSERT` is cut after this many bytes of values (the server's default
/// `max_allowed_packet` is 16 MiB on MariaDB and 64 MiB on MySQL).
const INSERT_BYTES: usize = 1 << 20;

/// Rows between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// Bytes buffered before an artifact write.
const WRITE_BUFFER: usize = 256 << 10;

/// Rows read from one connection before the next one's turn.
const ROWS_PER_TURN: usize = 1000;

/// One table's rows in a data artifact.
#[derive(Debug)]
pub struct Part {
    pub database: String,
    pub table: String,
    /// How messages name the table.
    pub label: String,
    /// The rows of a range of its primary key (a `WHERE` condition), or all.
    pub range: Option<String>,
    /// Whether this is its table's last range (or whole): the table counts as copied then.
    pub completes_table: bool,
    /// Its columns that hold stored values, as the lock saw them.
    pub columns: Vec<StoredColumn>,
}

/// A data artifact and the tables it holds, in order.
#[derive(Debug)]
pub struct Planned {
    pub name: String,
    pub parts: Vec<Part>,
}

/// Tables and rows copied so far, of `total` tables.
#[derive(Debug, Default)]
pub struct Copied {
    pub tables: u64,
    pub rows: u64,
    pub total: u64,
}

pub fn write_error(name: &str, error: std::io::Error) -> PluginError {
    PluginError::Artifact(format!("writing {name}: {error}"))
}

/// A table's rows being read.
struct Reading {
    columns: Vec<Column>,
    encodings: Vec<Encoding>,
    /// `INSERT INTO t (columns) VALUES`, which every batch starts with.
    insert: String,
    /// The `INSERT` being filled.
    statement: Vec<u8>,
    /// How its strings are written.
    strings: Strings,
    rows: u64,
}

impl Reading {
    /// Start reading the rows of `part`; `None` for a table without stored columns.
    fn start(connection: &mut Connection, part: &Part, strings: Strings) -> Result<Option<Self>, PluginError> {
        let columns = &part.columns;
        if columns.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        // MariaDB prints a FLOAT with 6 digits; as a DOUBLE it prints every digit
        // the stored value has, and the restore rounds it back to the same FLOAT.
        let read: Vec<String> = columns
            .iter()
            .map(|c| if c.float { format!("CAST({} AS DOUBLE)", ident(&c.name)) } else { ident(&c.name) })
            .collect();
        let mut select = format!("SELECT {} FROM {}.{}", read.join(","), ident(&part.database), ident(&part.table));
        if let Some(range) = &part.range {
            select.push_str(&format!(" WHERE {range}"));
        }
        let columns = connection.start_rows(select.as_bytes()).map_err(|e| copy_failure(&part.label, e))?;
        let encodings =
            columns.iter().zip(&part.columns).map(|(column, stored)| Encoding::of(column, stored)).collect();
        Ok(Some(Reading {
            columns,
            encodings,
            insert: format!("INSERT INTO {} ({}) VALUES\n", ident(&part.table), list.join(",")),
            statement: Vec::with_capacity(INSERT_BYTES + (64 << 10)),
            strings,
            rows: 0,
        }))
    }

    /// Read the next rows into `artifact`; whether the table is done (its last
    /// `INSERT` written).
    fn step(
        &mut self,
        connection: &mut Connection,
        part: &Part,
        name: &str,
        artifact: &mut BufWriter<ArtifactWriter>,
        copied: &mut Copied,
    ) -> Result<bool, PluginError> {
        let mut write_failed: Option<std::io::Error> = None;
        let Reading { columns, encodings, insert, statement, strings, rows } = self;
        let ended = connection.next_rows(columns, ROWS_PER_TURN, |values| {
            statement.extend_from_slice(if statement.is_empty() { insert.as_bytes() } else { b",\n" });
            push_row(statement, encodings, *strings, values);
            *rows += 1;
            copied.rows += 1;
            if statement.len() >= INSERT_BYTES {
                statement.extend_from_slice(b";\n");
                if let Err(error) = artifact.write_all(statement) {
                    // Stop reading: the rest of the result is not awaited.
                    write_failed = Some(error);
                    return Err(Error::Protocol("the artifact could not be written".into()));
                }
                statement.clear();
            }
            if copied.rows.is_multiple_of(PROGRESS_EVERY) {
                report::progress(&part.label, copied.tables, Some(copied.total), copied.rows);
            }
            Ok(())
        });
        let ended = ended.map_err(|error| match write_failed.take() {
            Some(error) => write_error(name, error),
            None => copy_failure(&part.label, error),
        })?;
        if ended && !statement.is_empty() {
            statement.extend_from_slice(b";\n");
            artifact.write_all(statement).map_err(|e| write_error(name, e))?;
        }
        Ok(ended)
    }
}

/// A data artifact being written on one connection.
struct Task<'p> {
    planned: &'p Planned,
    part: usize,
    artifact: BufWriter<ArtifactWriter>,
    strings: Strings,
    reading: Option<Reading>,
}

impl<'p> Task<'p> {
    fn start(connection: &mut Connection, planned: &'p Planned) -> Result<Self, PluginError> {
        let mut artifact = BufWriter::with_capacity(WRITE_BUFFER, artifacts::create(&planned.name, MEDIA_TYPE)?);
        let names = planned.parts.iter().flat_map(|part| {
            std::iter::once(part.table.as_str()).chain(part.columns.iter().map(|column| column.name.as_str()))
        });
        let strings = Strings::for_names(names);
        artifact.write_all(strings.preamble().as_bytes()).map_err(|e| write_error(&planned.name, e))?;
        let mut task = Task { planned, part: 0, artifact, strings, reading: None };
        task.reading = Reading::start(connection, &planned.parts[0], strings)?;
        Ok(task)
    }

    /// Read the next rows; whether the artifact is finished.
    fn step(&mut self, connection: &mut Connection, copied: &mut Copied) -> Result<bool, PluginError> {
        let planned = self.planned;
        let (part, name) = (&planned.parts[self.part], &planned.name);
        if let Some(reading) = &mut self.reading
            && !reading.step(connection, part, name, &mut self.artifact, copied)?
        {
            return Ok(false);
        }
        if part.completes_table {
            copied.tables += 1;
            report::progress(&part.label, copied.tables, Some(copied.total), copied.rows);
        }
        self.part += 1;
        match planned.parts.get(self.part) {
            Some(next) => {
                self.reading = Reading::start(connection, next, self.strings)?;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    fn finish(self) -> Result<(), PluginError> {
        let name = &self.planned.name;
        let artifact = self.artifact.into_inner().map_err(|e| write_error(name, e.into_error()))?;
        artifact.finish()?;
        Ok(())
    }
}

/// Copy the tables of `planned` into their artifacts on `connections`, an artifact
/// each at a time.
pub fn run(connections: &mut [&mut Connection], planned: &[Planned], copied: &mut Copied) -> Result<(), PluginError> {
    let mut tasks: Vec<Option<Task>> = connections.iter().map(|_| None).collect();
    let mut queue = planned.iter();
    loop {
        let mut busy = false;
        for (connection, slot) in connections.iter_mut().zip(tasks.iter_mut()) {
            if slot.is_none()
                && let Some(next) = queue.next()
            {
                *slot = Some(Task::start(connection, next)?);
            }
            let Some(task) = slot else { continue };
            busy = true;
            if task.step(connection, copied)?
                && let Some(task) = slot.take()
            {
                task.finish()?;
            }
        }
        if !busy {
            return Ok(());
        }
    }
}

/// How a column's text value is written back.
#[derive(Clone, Copy)]
enum Encoding {
    /// A numeric literal, as the server printed it.
    Number,
    /// ASCII the server parses back (dates and times), quoted.
    Quoted,
    /// Types that read a value only from text: MySQL's JSON refuses a binary string,
    /// MariaDB's UUID, INET6 and INET4 take one as their stored bytes.
    Text,
    /// Bits and geometries: the stored bytes as a hexadecimal literal.
    Hex,
    /// Strings of any character set and binary strings: the stored bytes as an escaped
    /// binary string literal, which the column takes byte for byte.
    Bytes,
}

impl Encoding {
    /// For a column of the result, and what the table says of it.
    fn of(column: &Column, stored: &StoredColumn) -> Self {
        const TEMPORAL: [u8; 8] = [7, 10, 11, 12, 14, 17, 18, 19];
        if stored.text_only {
            Encoding::Text
        } else if column.is_numeric() {
            Encoding::Number
        } else if TEMPORAL.contains(&column.kind) {
            Encoding::Quoted
        } else if column.kind == types::JSON {
            Encoding::Text
        } else if column.kind == types::BIT || column.kind == types::GEOMETRY {
            Encoding::Hex
        } else {
            Encoding::Bytes
        }
    }
}

fn copy_failure(table: &str, error: Error) -> PluginError {
    match error {
        // A rebuilt table, or a column dropped in place: the columns were read under the lock.
        Error::Server { code: codes::TABLE_DEF_CHANGED | codes::BAD_FIELD, .. } => PluginError::Database(format!(
            "copying table {table}: it was altered during the backup (after the lock of the consistent point was \
             released); run the backup again"
        )),
        error => failure(&format!("copying table {table}"), error),
    }
}

/// A column that holds stored values.
#[derive(Debug, Clone)]
pub struct StoredColumn {
    name: String,
    /// A single-precision FLOAT.
    float: bool,
    /// MariaDB's UUID, INET6 or INET4, which the result's metadata does not tell from a
    /// string ([`Encoding::Text`]).
    text_only: bool,
}

/// The columns that hold stored values of every table of `database`, in order, invisible
/// ones included: generated ones are computed again on restore. Read under the lock, so
/// that a column dropped before its table is read fails the backup instead of leaving it.
pub fn stored_columns(
    connection: &mut Connection,
    database: &str,
) -> Result<HashMap<String, Vec<StoredColumn>>, PluginError> {
    let rows = connection
        .rows(&format!(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, COALESCE(c.GENERATION_EXPRESSION, '') <> '' \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = {} AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            literal(database)
        ))
        .map_err(|e| failure(&format!("listing the columns of database {database}"), e))?;
    // Every table gets an entry, also one whose columns are all generated.
    let mut columns: HashMap<String, Vec<StoredColumn>> = HashMap::new();
    for row in rows {
        let [table, name, kind, generated] = text(row);
        let stored = columns.entry(table).or_default();
        if generated != "1" {
            let text_only = ["uuid", "inet6", "inet4"].iter().any(|text| kind.eq_ignore_ascii_case(text));
            stored.push(StoredColumn { name, float: kind.eq_ignore_ascii_case("float"), text_only });
        }
    }
    Ok(columns)
}

fn push_row(out: &mut Vec<u8>, encodings: &[Encoding], strings: Strings, values: &[Option<&[u8]>]) {
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
            (Some(value), Encoding::Text) => {
                out.extend_from_slice(b"CONVERT(");
                strings.push(out, value);
                out.extend_from_slice(b" USING utf8mb4)");
            }
            (Some(value), Encoding::Hex) => push_hex(out, value),
            (Some(value), Encoding::Bytes) => strings.push(out, value),
        }
    }
    out.push(b')');
}
