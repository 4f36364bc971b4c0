//! A restore into a running server: the RDB is read entry by entry and each key becomes
//! one `RESTORE key ttl payload ABSTTL`, each function library one `FUNCTION RESTORE`,
//! sent in pipelines. Values are never decoded: a payload is the value's bytes as the
//! RDB stores them, with the RDB version and a CRC-64, exactly what `DUMP` produces.

use std::collections::{BTreeMap, VecDeque};

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report, target_not_empty};

use crate::rdb::{self, Entry, Reader};
use crate::resp::{Connection, Decimal, Reply};
use crate::{ARTIFACT, Config, failure, function_libraries, keyspace, rdb_failure, server_version};

/// Commands per batch.
const PIPELINE_COMMANDS: usize = 512;
/// Bytes of commands per batch: what the plugin holds before sending.
const PIPELINE_BYTES: usize = 4 * 1024 * 1024;
/// Batches sent before the replies of the oldest are read.
const BATCHES_IN_FLIGHT: usize = 8;

/// Keys between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// What each command in flight was, for the message if it fails.
enum Sent {
    Select(u64),
    Function,
    Key { database: u64, key: Vec<u8> },
}

impl Sent {
    /// The command, for a message: built only when one is needed, as replies are many.
    fn describe(&self) -> String {
        match self {
            Sent::Select(database) => format!("SELECT {database}"),
            Sent::Function => "FUNCTION RESTORE".into(),
            Sent::Key { database, key } => format!("RESTORE of key {} in db{database}", rdb::printable(key)),
        }
    }
}

/// Commands go out in batches, and up to [`BATCHES_IN_FLIGHT`] batches are sent before
/// the replies of the oldest are read: while Redis works through them the plugin reads
/// the backup and prepares the next, so neither waits for the other's slower stretches
/// (big hashes are slow to parse here, many small keys slow to insert there). Redis keeps
/// reading while its replies wait for us, so a deep pipeline cannot deadlock.
struct Pipeline<'a> {
    connection: &'a mut Connection,
    /// The batch being prepared.
    batch: Vec<Sent>,
    /// Batches sent, oldest first, whose replies are not read yet.
    in_flight: VecDeque<Vec<Sent>>,
    /// The RDB's version and the target's, for the message when the target is older.
    versions: (u16, String),
}

impl Pipeline<'_> {
    fn push(&mut self, arguments: &[&[u8]], sent: Sent) -> Result<(), PluginError> {
        self.connection.send(arguments);
        self.batch.push(sent);
        if self.batch.len() >= PIPELINE_COMMANDS || self.connection.pending() >= PIPELINE_BYTES {
            self.connection.flush().map_err(|e| failure("sending RESTORE commands", e))?;
            self.in_flight.push_back(std::mem::take(&mut self.batch));
            self.settle(BATCHES_IN_FLIGHT)?;
        }
        Ok(())
    }

    /// Send what is left and read every reply.
    fn finish(&mut self) -> Result<(), PluginError> {
        self.in_flight.push_back(std::mem::take(&mut self.batch));
        self.settle(0)
    }

    /// Read the replies of the oldest batches until at most `keep` are in flight. After a
    /// failure the replies of the others are read too and dropped: the commands that
    /// clean up after it must each read their own reply, not one of these.
    fn settle(&mut self, keep: usize) -> Result<(), PluginError> {
        while self.in_flight.len() > keep {
            let Some(oldest) = self.in_flight.pop_front() else { break };
            if let Err(error) = self.read_replies(oldest) {
                while let Some(rest) = self.in_flight.pop_front() {
                    // A lost connection fails each at once; the cleanup says so.
                    let _ = self.read_replies(rest);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Read the replies of `batch`; the first error reply fails the restore.
    fn read_replies(&mut self, batch: Vec<Sent>) -> Result<(), PluginError> {
        let mut first_error = None;
        for sent in batch {
            match self.connection.reply().map_err(|e| failure(&sent.describe(), e))? {
                Reply::Error(message) if first_error.is_none() => {
                    first_error = Some(self.explain(&sent.describe(), message))
                }
                _ => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn explain(&self, what: &str, message: String) -> PluginError {
        let (rdb_version, target) = &self.versions;
        if message.contains("payload version") {
            PluginError::Unsupported(format!(
                "{what}: {message}: the backup holds RDB version {rdb_version}, newer than Redis {target} reads"
            ))
        } else if message.starts_with("ERR DB index is out of range") {
            PluginError::Unsupported(format!(
                "{what}: {message}: the target has fewer databases (`databases`) than the source"
            ))
        } else {
            PluginError::Database(format!("{what}: {message}"))
        }
    }
}

pub fn run(config: &Config, replace: bool) -> Result<Summary, PluginError> {
    if !artifacts::list().iter().any(|artifact| artifact.name == ARTIFACT) {
        return Err(PluginError::Unsupported(format!(
            "the backup has no {ARTIFACT}: it was not written by this plugin"
        )));
    }
    let mut connection = config.connect()?;
    let target_version = server_version(&mut connection)?;
    let keys: u64 = keyspace(&mut connection)?.iter().map(|(_, keys)| keys).sum();
    let libraries = function_libraries(&mut connection)?;
    let at = config.at();
    if keys > 0 || libraries > 0 {
        if !replace {
            return Err(target_not_empty(&format!(
                "Redis at {at} has {keys} keys and {libraries} function libraries (replace flushes it first)"
            )));
        }
        // Nothing is flushed before the whole backup has been read and its checksums
        // verified: a damaged backup must not cost the target its data.
        verify()?;
        report::warn(&format!("flushing the {keys} keys and {libraries} function libraries of Redis at {at}"));
        flush(&mut connection)?;
    }
    match load(&mut connection, &target_version) {
        Ok(summary) => Ok(summary),
        Err(error) => {
            // The target was empty: leave it so rather than half restored.
            let emptied = flush(&mut connection).is_ok();
            report::warn(if emptied {
                "the restore failed: the target was emptied again"
            } else {
                "the restore failed and the target could not be emptied again: it holds part of the backup"
            });
            Err(error)
        }
    }
}

fn flush(connection: &mut Connection) -> Result<(), PluginError> {
    connection.command(&[b"FLUSHALL", b"SYNC"]).map_err(|e| failure("FLUSHALL", e))?;
    if function_libraries(connection)? > 0 {
        connection.command(&[b"FUNCTION", b"FLUSH", b"SYNC"]).map_err(|e| failure("FUNCTION FLUSH", e))?;
    }
    Ok(())
}

fn artifact_lost(message: String) -> PluginError {
    PluginError::Artifact(message)
}

/// Read the whole RDB once, checking its structure and checksums, sending nothing.
fn verify() -> Result<(), PluginError> {
    let doing = "verifying the backup before flushing the target";
    let mut reader = Reader::new(artifacts::open(ARTIFACT)?, std::io::sink(), false)
        .map_err(|e| rdb_failure(doing, e, artifact_lost))?;
    while !matches!(reader.next_entry().map_err(|e| rdb_failure(doing, e, artifact_lost))?, Entry::End { .. }) {}
    Ok(())
}

fn load(connection: &mut Connection, target_version: &str) -> Result<Summary, PluginError> {
    let doing = "reading the backup";
    let mut reader = Reader::new(artifacts::open(ARTIFACT)?, std::io::sink(), true)
        .map_err(|e| rdb_failure(doing, e, artifact_lost))?;
    let rdb_version = reader.version();
    let mut pipeline = Pipeline {
        connection,
        batch: Vec::new(),
        in_flight: VecDeque::new(),
        versions: (rdb_version, target_version.to_owned()),
    };
    let mut database = 0;
    let mut keys: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut functions = 0u64;
    let mut source_version = String::from("unknown");
    loop {
        match reader.next_entry().map_err(|e| rdb_failure(doing, e, artifact_lost))? {
            Entry::Aux { name, value } => {
                if name == "redis-ver" {
                    source_version = value;
                }
            }
            Entry::SelectDb(number) => {
                database = number;
                let number_text = number.to_string();
                pipeline.push(&[b"SELECT", number_text.as_bytes()], Sent::Select(number))?;
            }
            Entry::Function { payload } => {
                let payload = rdb::restore_payload(payload, rdb_version);
                pipeline.push(&[b"FUNCTION", b"RESTORE", &payload], Sent::Function)?;
                functions += 1;
            }
            Entry::Key { key, expire_at_ms, idle_seconds, frequency, payload, .. } => {
                let payload = rdb::restore_payload(payload, rdb_version);
                let ttl = Decimal::from(expire_at_ms.unwrap_or(0).max(0).unsigned_abs());
                let mut arguments: Vec<&[u8]> = vec![b"RESTORE", &key, ttl.as_bytes(), &payload];
                if expire_at_ms.is_some() {
                    // An absolute time: the key expires when it would have in the source
                    // (a key already past it is not created).
                    arguments.push(b"ABSTTL");
                }
                let idle = idle_seconds.map(Decimal::from);
                if let Some(idle) = &idle {
                    arguments.extend([b"IDLETIME".as_slice(), idle.as_bytes()]);
                }
                let frequency = frequency.map(|frequency| Decimal::from(u64::from(frequency)));
                if let Some(frequency) = &frequency {
                    arguments.extend([b"FREQ".as_slice(), frequency.as_bytes()]);
                }
                pipeline.push(&arguments, Sent::Key { database, key: key.clone() })?;
                *keys.entry(database).or_default() += 1;
                total += 1;
                if total.is_multiple_of(PROGRESS_EVERY) {
                    report::progress(&format!("db{database}"), total, None, total);
                }
            }
            Entry::End { .. } => break,
        }
    }
    pipeline.finish()?;
    report::progress("done", total, Some(total), total);
    let mut attributes = vec![
        ("source_version".into(), source_version.clone()),
        ("target_version".into(), target_version.to_owned()),
        ("rdb_version".into(), rdb_version.to_string()),
        ("keys".into(), total.to_string()),
        ("functions".into(), functions.to_string()),
    ];
    attributes.extend(keys.iter().map(|(database, count)| (format!("keys_db{database}"), count.to_string())));
    Ok(Summary {
        description: format!(
            "Redis {target_version}: {total} keys in {} databases and {functions} function libraries restored \
             (written by Redis {source_version})",
            keys.len()
        ),
        attributes,
    })
}
