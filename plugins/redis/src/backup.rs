//! A backup: the server's own RDB over the replication protocol, checked while it
//! streams into the artifact; or, where replication is refused, an RDB assembled from
//! `DUMP` payloads key by key.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use stowage_plugin_sdk::{PluginError, Summary, artifacts, report};

use crate::rdb::{self, Entry, Reader};
use crate::resp::{Connection, Error, Reply};
use crate::{ARTIFACT, Config, MEDIA_TYPE, Method, failure, function_libraries, keyspace, rdb_failure, server_version};

/// The marker that ends a diskless transfer (`$EOF:<40 characters>`).
const EOF_MARK_LENGTH: usize = 40;

/// Keys between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// Keys asked for per `SCAN` (and so per pipeline of `PTTL` + `DUMP`).
const SCAN_COUNT: &[u8] = b"1000";

/// The RDB version of an RDB with nothing in it, which every Redis since 4.0 loads.
const EMPTY_RDB_VERSION: u16 = 9;

/// What the server said no to.
struct Refused(String);

/// What was read, for the summary.
#[derive(Default)]
struct Tally {
    keys: BTreeMap<u64, u64>,
    functions: u64,
    total: u64,
}

impl Tally {
    fn key(&mut self, database: u64, expected: Option<u64>) {
        *self.keys.entry(database).or_default() += 1;
        self.total += 1;
        if self.total.is_multiple_of(PROGRESS_EVERY) {
            report::progress(&format!("db{database}"), self.total, expected, self.total);
        }
    }
}

pub fn run(config: &Config) -> Result<Summary, PluginError> {
    let mut connection = config.connect()?;
    let version = server_version(&mut connection)?;
    let expected = keyspace(&mut connection)?.iter().map(|(_, keys)| keys).sum::<u64>();
    match config.method {
        Method::Scan => scan(connection, &version, expected),
        Method::Replication | Method::Auto => match replicate(connection, &version, expected)? {
            Ok(summary) => Ok(summary),
            Err(Refused(message)) if config.method == Method::Auto => {
                report::warn(&format!(
                    "Redis refuses replication to this user ({message}): reading key by key with SCAN + DUMP \
                     instead; the backup is NOT a point-in-time snapshot (keys written meanwhile may or may not \
                     be in it)"
                ));
                scan(config.connect()?, &version, expected)
            }
            Err(Refused(message)) => Err(PluginError::Unsupported(format!(
                "Redis at {} refuses replication to this user: {message}; option method=scan reads key by key \
                 instead (not point-in-time)",
                config.at()
            ))),
        },
    }
}

/// The replication handshake, then the RDB into the artifact. `Ok(Err(_))` when the
/// server refuses replication before anything was written.
fn replicate(
    mut connection: Connection,
    version: &str,
    expected: u64,
) -> Result<Result<Summary, Refused>, PluginError> {
    // `capa eof` accepts the diskless form; `rdb-only` (7.0+) asks for the RDB alone,
    // without the command stream and without keeping a replication buffer for us.
    match connection.command(&[b"REPLCONF", b"capa", b"eof"]) {
        Err(Error::Server(message)) => return Ok(Err(Refused(message))),
        outcome => outcome.map_err(|e| failure("REPLCONF capa eof", e))?,
    };
    let rdb_only = connection.command(&[b"REPLCONF", b"rdb-only", b"1"]).is_ok();
    connection.send(&[b"PSYNC", b"?", b"-1"]);
    let mut line = next_line(&mut connection)?;
    if let Some(message) = line.strip_prefix("-") {
        return Ok(Err(Refused(message.to_owned())));
    }
    let (replication_id, replication_offset) = match line.strip_prefix("+FULLRESYNC ") {
        Some(rest) => {
            let (id, offset) = rest.split_once(' ').unwrap_or((rest, ""));
            let parsed = (id.to_owned(), offset.to_owned());
            line = next_line(&mut connection)?;
            parsed
        }
        None => (String::new(), String::new()),
    };
    let transfer = line
        .strip_prefix('$')
        .ok_or_else(|| PluginError::Database(format!("PSYNC: expected the RDB transfer, the server sent {line:?}")))?;
    let mut artifact = artifacts::create(ARTIFACT, MEDIA_TYPE)?;
    let mut tally = Tally::default();
    let (rdb_version, checksum_checked, rdb_bytes) = match transfer.strip_prefix("EOF:") {
        Some(mark) => {
            let mark = mark.as_bytes().to_vec();
            if mark.len() != EOF_MARK_LENGTH {
                return Err(PluginError::Database(format!("PSYNC: an EOF marker of {} bytes", mark.len())));
            }
            let (outcome, input) = read_rdb(connection.raw(), &mut artifact, &mut tally, expected)?;
            let mut trailer = vec![0; EOF_MARK_LENGTH];
            input.read_exact(&mut trailer).map_err(|e| failure("reading the end of the RDB transfer", Error::Io(e)))?;
            if trailer != mark {
                return Err(PluginError::Database(
                    "the RDB transfer did not end with its EOF marker where the RDB ended".into(),
                ));
            }
            outcome
        }
        None => {
            let length: u64 =
                transfer.parse().map_err(|_| PluginError::Database(format!("PSYNC: an RDB length of {transfer:?}")))?;
            let mut limited = connection.raw().take(length);
            let (outcome, input) = read_rdb(&mut limited, &mut artifact, &mut tally, expected)?;
            if input.limit() != 0 {
                return Err(PluginError::Database(format!(
                    "the RDB ended {} bytes before the {length} bytes the server announced",
                    input.limit()
                )));
            }
            outcome
        }
    };
    artifact.finish()?;
    let mut summary = summarize(version, rdb_version, &tally, "replication", rdb_bytes, checksum_checked);
    summary.attributes.push(("replication_id".into(), replication_id));
    summary.attributes.push(("replication_offset".into(), replication_offset));
    summary.attributes.push(("rdb_only".into(), rdb_only.to_string()));
    Ok(Ok(summary))
}

/// The next line of the handshake; the newlines a master sends while it prepares the
/// RDB only keep the connection alive.
fn next_line(connection: &mut Connection) -> Result<String, PluginError> {
    loop {
        let line = connection.line().map_err(|e| failure("PSYNC", e))?;
        if !line.is_empty() {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Reads one RDB from `input` into `artifact`; returns (RDB version, checksum checked,
/// bytes) and the input, positioned after the RDB.
fn read_rdb<'a, R: Read>(
    input: &'a mut R,
    artifact: &mut artifacts::ArtifactWriter,
    tally: &mut Tally,
    expected: u64,
) -> Result<((u16, bool, u64), &'a mut R), PluginError> {
    let doing = "reading the RDB";
    let connection_lost =
        |message: String| PluginError::Connection(format!("{message}: the connection to Redis was lost"));
    let mut reader = Reader::new(input, artifact, false).map_err(|e| rdb_failure(doing, e, connection_lost))?;
    let mut database = 0;
    let checksum_checked = loop {
        match reader.next_entry().map_err(|e| rdb_failure(doing, e, connection_lost))? {
            Entry::SelectDb(number) => database = number,
            Entry::Key { .. } => tally.key(database, Some(expected)),
            Entry::Function { .. } => tally.functions += 1,
            Entry::Aux { .. } => {}
            Entry::End { checksum_checked } => break checksum_checked,
        }
    };
    let outcome = (reader.version(), checksum_checked, reader.offset());
    let (input, _) = reader.into_parts();
    Ok((outcome, input))
}

/// `SCAN` + `PTTL` + `DUMP` per key, written as an RDB of the same format.
fn scan(mut connection: Connection, version: &str, expected: u64) -> Result<Summary, PluginError> {
    let mut writer = rdb::Writer::new(artifacts::create(ARTIFACT, MEDIA_TYPE)?, version);
    let mut tally = Tally::default();
    let mut rdb_version = None;
    let write_error = |e: std::io::Error| PluginError::Artifact(format!("writing {ARTIFACT}: {e}"));
    // Functions (7.0+): one payload holding every library.
    match connection.command(&[b"FUNCTION", b"DUMP"]) {
        Ok(Reply::Bulk(Some(payload))) => {
            let (body, payload_version) = checked_payload(&payload, "FUNCTION DUMP")?;
            tally.functions = function_libraries(&mut connection)?;
            rdb_version = Some(payload_version);
            writer.functions(body, payload_version).map_err(write_error)?;
        }
        Ok(_) => {}
        // Before 7.0 there are no functions (unknown command).
        Err(Error::Server(message)) if message.contains("unknown command") => {}
        Err(error) => return Err(failure("FUNCTION DUMP", error)),
    }
    // PEXPIRETIME (7.0+) gives the exact expiry; before, PTTL and the server's clock.
    let absolute_expiry =
        version.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|major| major >= 7);
    for (database, _) in keyspace(&mut connection)? {
        let number = database.to_string();
        connection.command(&[b"SELECT", number.as_bytes()]).map_err(|e| failure(&format!("SELECT {database}"), e))?;
        // SCAN may return a key twice (while the table is rehashed); an RDB may not.
        let mut seen = HashSet::new();
        let mut cursor = b"0".to_vec();
        loop {
            let page = connection
                .command(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT])
                .map_err(|e| failure(&format!("SCAN in db{database}"), e))?;
            let (next, keys) = scan_page(page)?;
            let expiry: &[u8] = if absolute_expiry { b"PEXPIRETIME" } else { b"PTTL" };
            if !absolute_expiry {
                connection.send(&[b"TIME"]);
            }
            for key in &keys {
                connection.send(&[expiry, key]);
                connection.send(&[b"DUMP", key]);
            }
            let now_ms = match absolute_expiry {
                true => 0,
                false => server_time_ms(connection.reply().map_err(|e| failure("TIME", e))?)?,
            };
            for key in keys {
                let doing = || format!("DUMP of key {} in db{database}", rdb::printable(&key));
                let expiry = connection.reply().map_err(|e| failure(&doing(), e))?;
                let dump = connection.reply().map_err(|e| failure(&doing(), e))?;
                let (Reply::Integer(expiry), Reply::Bulk(Some(payload))) = (expiry, dump) else {
                    continue; // deleted since SCAN saw it
                };
                // -2: gone, -1: no expiry; otherwise a time, or what is left of it.
                if expiry == -2 || !seen.insert(key.clone()) {
                    continue;
                }
                let expire_at_ms = (expiry >= 0).then(|| now_ms + expiry);
                let (body, payload_version) = checked_payload(&payload, &doing())?;
                rdb_version.get_or_insert(payload_version);
                writer.key(database, &key, expire_at_ms, body, payload_version).map_err(write_error)?;
                tally.key(database, Some(expected));
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    let rdb_version = rdb_version.unwrap_or(EMPTY_RDB_VERSION);
    let (artifact, rdb_bytes) = writer.finish(rdb_version).map_err(write_error)?;
    artifact.finish()?;
    Ok(summarize(version, rdb_version, &tally, "scan", rdb_bytes, true))
}

fn checked_payload<'a>(payload: &'a [u8], what: &str) -> Result<(&'a [u8], u16), PluginError> {
    rdb::split_payload(payload)
        .ok_or_else(|| PluginError::Database(format!("{what}: the payload's CRC-64 does not match its contents")))
}

fn scan_page(page: Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), PluginError> {
    let unexpected = || PluginError::Database("SCAN: an unexpected reply".into());
    let Reply::Array(Some(mut parts)) = page else { return Err(unexpected()) };
    if parts.len() != 2 {
        return Err(unexpected());
    }
    let Reply::Array(Some(keys)) = parts.pop().ok_or_else(unexpected)? else { return Err(unexpected()) };
    let cursor = parts.pop().and_then(Reply::bytes).ok_or_else(unexpected)?;
    Ok((cursor, keys.into_iter().filter_map(Reply::bytes).collect()))
}

/// `TIME`: seconds and microseconds of the server's clock, in milliseconds.
fn server_time_ms(reply: Reply) -> Result<i64, PluginError> {
    let unexpected = || PluginError::Database("TIME: an unexpected reply".into());
    let Reply::Array(Some(parts)) = reply else { return Err(unexpected()) };
    let numbers: Vec<i64> = parts.into_iter().filter_map(|part| part.text()?.parse().ok()).collect();
    match numbers[..] {
        [seconds, micros] => Ok(seconds * 1000 + micros / 1000),
        _ => Err(unexpected()),
    }
}

fn summarize(version: &str, rdb_version: u16, tally: &Tally, method: &str, bytes: u64, checksum: bool) -> Summary {
    let databases = tally.keys.len();
    let point_in_time = method == "replication";
    let mut attributes = vec![
        ("server_version".into(), version.to_owned()),
        ("rdb_version".into(), rdb_version.to_string()),
        ("method".into(), method.to_owned()),
        ("point_in_time".into(), point_in_time.to_string()),
        ("keys".into(), tally.total.to_string()),
        ("functions".into(), tally.functions.to_string()),
        ("rdb_bytes".into(), bytes.to_string()),
        ("rdb_checksum".into(), if checksum { "verified" } else { "absent (rdbchecksum no)" }.to_owned()),
    ];
    attributes.extend(tally.keys.iter().map(|(database, keys)| (format!("keys_db{database}"), keys.to_string())));
    Summary {
        description: format!(
            "Redis {version}: {} keys in {databases} databases, {} function libraries, RDB version {rdb_version} ({})",
            tally.total,
            tally.functions,
            if point_in_time { "point-in-time" } else { "SCAN, not point-in-time" }
        ),
        attributes,
    }
}
