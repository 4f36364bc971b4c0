//! A streaming reader of Redis's RDB format (versions 5 to 12, Redis 3.0 to 7.4): it
//! walks the structure entry by entry with bounded memory, checks the CRC-64 trailer,
//! passes every byte on to a sink (the backup's artifact), and on request captures each
//! value's bytes exactly as stored, which with the RDB version and a CRC is the payload
//! `RESTORE` takes. Values are never decoded: only their lengths are followed.
//!
//! The layout is Redis's `src/rdb.c` (`rdbSaveRio`, `rdbSaveObject`); the value types of
//! each version are named in [`skip_value`].

use std::fmt;
use std::io::{self, Read, Write};

use crate::crc64::Crc64;

/// The oldest version with a checksum trailer, and the newest this reader knows.
pub const VERSIONS: std::ops::RangeInclusive<u16> = 5..=12;

/// Initial capacity of a captured value.
const CAPTURE_CAPACITY: usize = 256;
/// Bytes skipped per read when a value is not captured.
const SKIP_CHUNK: usize = 64 * 1024;

/// Top-level opcodes (`RDB_OPCODE_*`).
const OPCODE_SLOT_INFO: u8 = 244;
const OPCODE_FUNCTION2: u8 = 245;
const OPCODE_FUNCTION_PRE_GA: u8 = 246;
const OPCODE_MODULE_AUX: u8 = 247;
const OPCODE_IDLE: u8 = 248;
const OPCODE_FREQ: u8 = 249;
const OPCODE_AUX: u8 = 250;
const OPCODE_RESIZEDB: u8 = 251;
const OPCODE_EXPIRETIME_MS: u8 = 252;
const OPCODE_EXPIRETIME: u8 = 253;
const OPCODE_SELECTDB: u8 = 254;
const OPCODE_EOF: u8 = 255;

/// Special string encodings (`RDB_ENC_*`).
const ENCODING_INT8: u8 = 0;
const ENCODING_INT16: u8 = 1;
const ENCODING_INT32: u8 = 2;
const ENCODING_LZF: u8 = 3;

#[derive(Debug)]
pub enum RdbError {
    /// Reading the input failed.
    Io(io::Error),
    /// Writing to the sink failed.
    Sink(io::Error),
    /// The input ended inside the RDB, after this many bytes.
    Truncated(u64),
    /// The bytes are not a valid RDB.
    Corrupt(String),
    /// A valid RDB holding something this plugin cannot restore (module types, value
    /// types of a newer Redis).
    Unsupported(String),
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbError::Io(error) | RdbError::Sink(error) => write!(f, "{error}"),
            RdbError::Truncated(offset) => write!(f, "the RDB ends early, at byte {offset}"),
            RdbError::Corrupt(message) | RdbError::Unsupported(message) => write!(f, "{message}"),
        }
    }
}

impl From<io::Error> for RdbError {
    fn from(error: io::Error) -> Self {
        RdbError::Io(error)
    }
}

/// One entry of the RDB, in file order.
#[derive(Debug)]
pub enum Entry {
    /// An `AUX` field (`redis-ver`, `repl-id`, ...).
    Aux { name: String, value: String },
    /// The keys that follow belong to this database.
    SelectDb(u64),
    /// A function library; `payload` is its `FUNCTION RESTORE` payload without the
    /// version and CRC (when captured).
    Function { payload: Vec<u8> },
    /// A key. `payload` is its type byte and value as stored (when captured): the
    /// `RESTORE` payload without the version and CRC.
    Key { key: Vec<u8>, expire_at_ms: Option<i64>, idle_seconds: Option<u64>, frequency: Option<u8>, payload: Vec<u8> },
    /// The end; the checksum was verified (or the writer had checksums off).
    End { checksum_checked: bool },
}

/// A buffer for one captured value, starting with `first`; sized for a typical small
/// value plus the version and CRC a restore appends, so most never grow.
fn capture_buffer(first: u8) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(CAPTURE_CAPACITY);
    buffer.push(first);
    buffer
}

/// Reads entries from `input`, copying every byte to `sink`.
pub struct Reader<R, W> {
    input: R,
    sink: W,
    crc: Crc64,
    offset: u64,
    capture: Option<Vec<u8>>,
    capture_values: bool,
    scratch: Vec<u8>,
    version: u16,
    finished: bool,
}

impl<R: Read, W: Write> Reader<R, W> {
    /// Read the header. With `capture_values`, [`Entry::Key`] and [`Entry::Function`]
    /// carry their payloads (the memory of the largest value); without, values are
    /// skipped in bounded memory.
    pub fn new(input: R, sink: W, capture_values: bool) -> Result<Self, RdbError> {
        let mut reader = Reader {
            input,
            sink,
            crc: Crc64::default(),
            offset: 0,
            capture: None,
            capture_values,
            scratch: vec![0; SKIP_CHUNK],
            version: 0,
            finished: false,
        };
        let header = reader.bytes(9)?;
        let version = std::str::from_utf8(&header[5..]).ok().and_then(|digits| digits.parse::<u16>().ok());
        match (&header[..5], version) {
            (b"REDIS", Some(version)) if VERSIONS.contains(&version) => reader.version = version,
            (b"REDIS", Some(version)) => {
                return Err(RdbError::Unsupported(format!(
                    "RDB version {version}: this plugin reads versions {} to {}",
                    VERSIONS.start(),
                    VERSIONS.end()
                )));
            }
            _ => return Err(RdbError::Corrupt("the stream does not start with an RDB header (REDIS0000)".into())),
        }
        Ok(reader)
    }

    /// The RDB version of the header.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The input and the sink, once the end was read.
    pub fn into_parts(self) -> (R, W) {
        (self.input, self.sink)
    }

    fn fill(&mut self, buffer: &mut [u8], checksummed: bool) -> Result<(), RdbError> {
        self.input.read_exact(buffer).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => RdbError::Truncated(self.offset),
            _ => RdbError::Io(error),
        })?;
        if checksummed {
            self.crc.update(buffer);
        }
        self.sink.write_all(buffer).map_err(RdbError::Sink)?;
        if let Some(capture) = &mut self.capture {
            capture.extend_from_slice(buffer);
        }
        self.offset += buffer.len() as u64;
        Ok(())
    }

    fn bytes(&mut self, count: usize) -> Result<Vec<u8>, RdbError> {
        let mut bytes = vec![0; count];
        self.fill(&mut bytes, true)?;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, RdbError> {
        let mut byte = [0];
        self.fill(&mut byte, true)?;
        Ok(byte[0])
    }

    fn skip(&mut self, mut count: u64) -> Result<(), RdbError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        while count > 0 {
            let n = count.min(scratch.len() as u64) as usize;
            let outcome = self.fill(&mut scratch[..n], true);
            if let Err(error) = outcome {
                self.scratch = scratch;
                return Err(error);
            }
            count -= n as u64;
        }
        self.scratch = scratch;
        Ok(())
    }

    fn corrupt(&self, what: &str) -> RdbError {
        RdbError::Corrupt(format!("{what} at byte {}", self.offset))
    }

    /// A length, or the special encoding a string uses instead.
    fn length_or_encoding(&mut self) -> Result<Length, RdbError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3f)),
            1 => Length::Plain((u64::from(first & 0x3f) << 8) | u64::from(self.byte()?)),
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Length::Plain(u64::from_be_bytes(self.array()?)),
                _ => return Err(self.corrupt("an invalid length")),
            },
            _ => Length::Encoded(first & 0x3f),
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut bytes = [0; N];
        self.fill(&mut bytes, true)?;
        Ok(bytes)
    }

    fn length(&mut self) -> Result<u64, RdbError> {
        match self.length_or_encoding()? {
            Length::Plain(length) => Ok(length),
            Length::Encoded(_) => Err(self.corrupt("an encoded string where a length belongs")),
        }
    }

    /// A string, decoded (integers as decimal text, LZF decompressed).
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        Ok(match self.length_or_encoding()? {
            Length::Plain(length) => self.bytes(self.bounded(length)?)?,
            Length::Encoded(ENCODING_INT8) => (self.byte()? as i8).to_string().into_bytes(),
            Length::Encoded(ENCODING_INT16) => i16::from_le_bytes(self.array()?).to_string().into_bytes(),
            Length::Encoded(ENCODING_INT32) => i32::from_le_bytes(self.array()?).to_string().into_bytes(),
            Length::Encoded(ENCODING_LZF) => {
                let compressed = self.length()?;
                let length = self.length()?;
                let compressed = self.bytes(self.bounded(compressed)?)?;
                let length = self.bounded(length)?;
                lzf_decompress(&compressed, length).ok_or_else(|| self.corrupt("an invalid LZF string"))?
            }
            Length::Encoded(other) => return Err(self.corrupt(&format!("unknown string encoding {other}"))),
        })
    }

    /// A length that fits in memory, for strings that are decoded (keys, AUX fields):
    /// Redis keys are at most 512 MB.
    fn bounded(&self, length: u64) -> Result<usize, RdbError> {
        usize::try_from(length)
            .ok()
            .filter(|&length| length <= 512 * 1024 * 1024)
            .ok_or_else(|| self.corrupt(&format!("a string of {length} bytes")))
    }

    fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.length_or_encoding()? {
            Length::Plain(length) => self.skip(length),
            Length::Encoded(ENCODING_INT8) => self.skip(1),
            Length::Encoded(ENCODING_INT16) => self.skip(2),
            Length::Encoded(ENCODING_INT32) => self.skip(4),
            Length::Encoded(ENCODING_LZF) => {
                let compressed = self.length()?;
                self.length()?;
                self.skip(compressed)
            }
            Length::Encoded(other) => Err(self.corrupt(&format!("unknown string encoding {other}"))),
        }
    }

    fn skip_strings(&mut self, per_item: u64) -> Result<(), RdbError> {
        let count = self.length()?;
        for _ in 0..count.saturating_mul(per_item) {
            self.skip_string()?;
        }
        Ok(())
    }

    /// Follow one value of RDB type `kind` to its end.
    fn skip_value(&mut self, kind: u8, key: &[u8]) -> Result<(), RdbError> {
        match kind {
            // STRING
            0 => self.skip_string(),
            // LIST (linked list, before 3.2), SET
            1 | 2 => self.skip_strings(1),
            // ZSET with scores as text: a length byte, or 253/254/255 for nan/+inf/-inf.
            3 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    let length = self.byte()?;
                    if length < 253 {
                        self.skip(u64::from(length))?;
                    }
                }
                Ok(())
            }
            // HASH
            4 => self.skip_strings(2),
            // ZSET_2: member and a binary double
            5 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    self.skip(8)?;
                }
                Ok(())
            }
            6 | 7 => Err(RdbError::Unsupported(format!(
                "key {}: a module data type; restoring module values needs the module and is not supported",
                printable(key)
            ))),
            // HASH_ZIPMAP, LIST_ZIPLIST, SET_INTSET, ZSET_ZIPLIST, HASH_ZIPLIST,
            // HASH_LISTPACK, ZSET_LISTPACK, SET_LISTPACK (7.2): one blob each.
            9..=13 | 16 | 17 | 20 => self.skip_string(),
            // LIST_QUICKLIST: ziplists
            14 => self.skip_strings(1),
            // LIST_QUICKLIST_2 (7.0): (container, listpack) per node
            18 => {
                for _ in 0..self.length()? {
                    self.length()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            // STREAM_LISTPACKS, _2 (7.0: first id, tombstone, entries added, group
            // entries read), _3 (7.2: consumer active time)
            15 | 19 | 21 => self.skip_stream(kind),
            other => Err(RdbError::Unsupported(format!(
                "key {}: RDB value type {other}, from a newer Redis than this plugin knows (RDB {})",
                printable(key),
                self.version
            ))),
        }
    }

    fn skip_stream(&mut self, kind: u8) -> Result<(), RdbError> {
        self.skip_strings(2)?;
        // length, last id (ms, seq); from 7.0 first id, max deleted id, entries added
        let counters = if kind >= 19 { 8 } else { 3 };
        for _ in 0..counters {
            self.length()?;
        }
        for _ in 0..self.length()? {
            self.skip_string()?; // group name
            self.length()?; // last id ms
            self.length()?; // last id seq
            if kind >= 19 {
                self.length()?; // entries read
            }
            for _ in 0..self.length()? {
                self.skip(16 + 8)?; // id, delivery time
                self.length()?; // delivery count
            }
            for _ in 0..self.length()? {
                self.skip_string()?; // consumer name
                self.skip(if kind >= 21 { 16 } else { 8 })?; // seen (and active) time
                let pending = self.length()?;
                self.skip(pending.saturating_mul(16))?;
            }
        }
        Ok(())
    }

    /// The next entry; after [`Entry::End`], nothing more is read.
    pub fn next_entry(&mut self) -> Result<Entry, RdbError> {
        if self.finished {
            return Err(self.corrupt("a read past the end"));
        }
        let mut expire_at_ms = None;
        let mut idle_seconds = None;
        let mut frequency = None;
        loop {
            let opcode = self.byte()?;
            match opcode {
                OPCODE_AUX => {
                    let name = String::from_utf8_lossy(&self.string()?).into_owned();
                    let value = String::from_utf8_lossy(&self.string()?).into_owned();
                    return Ok(Entry::Aux { name, value });
                }
                OPCODE_SELECTDB => return Ok(Entry::SelectDb(self.length()?)),
                OPCODE_RESIZEDB => {
                    self.length()?;
                    self.length()?;
                }
                OPCODE_SLOT_INFO => {
                    for _ in 0..3 {
                        self.length()?;
                    }
                }
                OPCODE_EXPIRETIME_MS => expire_at_ms = Some(i64::from_le_bytes(self.array()?)),
                OPCODE_EXPIRETIME => expire_at_ms = Some(i64::from(i32::from_le_bytes(self.array()?)) * 1000),
                OPCODE_IDLE => idle_seconds = Some(self.length()?),
                OPCODE_FREQ => frequency = Some(self.byte()?),
                OPCODE_FUNCTION2 => {
                    self.capture = self.capture_values.then(|| capture_buffer(OPCODE_FUNCTION2));
                    let outcome = self.skip_string();
                    let payload = self.capture.take().unwrap_or_default();
                    outcome?;
                    return Ok(Entry::Function { payload });
                }
                OPCODE_FUNCTION_PRE_GA => {
                    return Err(RdbError::Unsupported(
                        "functions in the format of Redis 7.0 release candidates".into(),
                    ));
                }
                OPCODE_MODULE_AUX => {
                    return Err(RdbError::Unsupported(
                        "module auxiliary data: restoring module data needs the module and is not supported".into(),
                    ));
                }
                OPCODE_EOF => {
                    let mut trailer = [0; 8];
                    // The checksum covers everything before itself.
                    self.fill(&mut trailer, false)?;
                    self.finished = true;
                    let stored = u64::from_le_bytes(trailer);
                    if stored == 0 {
                        return Ok(Entry::End { checksum_checked: false });
                    }
                    if stored != self.crc.value() {
                        return Err(RdbError::Corrupt(format!(
                            "the RDB's CRC-64 is {stored:016x}, its contents give {:016x}",
                            self.crc.value()
                        )));
                    }
                    return Ok(Entry::End { checksum_checked: true });
                }
                kind => {
                    let key = self.string()?;
                    self.capture = self.capture_values.then(|| capture_buffer(kind));
                    let outcome = self.skip_value(kind, &key);
                    let payload = self.capture.take().unwrap_or_default();
                    outcome?;
                    return Ok(Entry::Key { key, expire_at_ms, idle_seconds, frequency, payload });
                }
            }
        }
    }
}

enum Length {
    Plain(u64),
    Encoded(u8),
}

/// A key as people can read it in a message.
pub fn printable(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(&key[..key.len().min(200)]);
    format!("{text:?}")
}

/// `payload` (type and value, or function opcodes) completed with the RDB version and
/// CRC, as `DUMP` and `FUNCTION DUMP` produce and `RESTORE` checks.
pub fn restore_payload(mut payload: Vec<u8>, version: u16) -> Vec<u8> {
    payload.extend_from_slice(&version.to_le_bytes());
    let crc = Crc64::of(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// Splits a `DUMP` payload into its body and RDB version, checking its CRC.
pub fn split_payload(payload: &[u8]) -> Option<(&[u8], u16)> {
    let (rest, crc) = payload.split_at_checked(payload.len().checked_sub(8)?)?;
    let (body, version) = rest.split_at_checked(rest.len().checked_sub(2)?)?;
    let crc = u64::from_le_bytes(crc.try_into().ok()?);
    (Crc64::of(rest) == crc).then(|| (body, u16::from_le_bytes([version[0], version[1]])))
}

/// LZF (liblzf), as Redis compresses long strings in RDB files.
fn lzf_decompress(input: &[u8], length: usize) -> Option<Vec<u8>> {
    let mut output = Vec::with_capacity(length);
    let mut i = 0;
    while i < input.len() {
        let control = usize::from(input[i]);
        i += 1;
        if control < 32 {
            let literal = input.get(i..i + control + 1)?;
            output.extend_from_slice(literal);
            i += control + 1;
        } else {
            let mut run = control >> 5;
            if run == 7 {
                run += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((control & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let start = output.len().checked_sub(back)?;
            for k in 0..run + 2 {
                let byte = output[start + k];
                output.push(byte);
            }
        }
        if output.len() > length {
            return None;
        }
    }
    (output.len() == length).then_some(output)
}

/// Writes an RDB of keys that were read one by one (`DUMP`), for backups without the
/// replication protocol; the header waits for the first payload's version.
pub struct Writer<W> {
    output: W,
    server_version: String,
    crc: Crc64,
    version: Option<u16>,
    database: Option<u64>,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// An RDB of keys read from Redis `server_version`.
    pub fn new(output: W, server_version: &str) -> Self {
        let server_version = server_version.to_owned();
        Writer { output, server_version, crc: Crc64::default(), version: None, database: None, written: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.output.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_length(&mut self, length: u64) -> io::Result<()> {
        match length {
            0..=0x3f => self.put(&[length as u8]),
            0x40..=0x3fff => self.put(&[0x40 | (length >> 8) as u8, length as u8]),
            0x4000..=0xffff_ffff => {
                self.put(&[0x80])?;
                self.put(&(length as u32).to_be_bytes())
            }
            _ => {
                self.put(&[0x81])?;
                self.put(&length.to_be_bytes())
            }
        }
    }

    fn put_string(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.put_length(bytes.len() as u64)?;
        self.put(bytes)
    }

    /// The header, once: every payload of one server has the same version.
    fn header(&mut self, version: u16) -> io::Result<()> {
        if self.version.is_none() {
            self.version = Some(version);
            self.put(format!("REDIS{version:04}").as_bytes())?;
            self.put(&[OPCODE_AUX])?;
            self.put_string(b"redis-ver")?;
            self.put_string(&self.server_version.clone().into_bytes())?;
            self.put(&[OPCODE_AUX])?;
            self.put_string(b"stowage-method")?;
            self.put_string(b"scan")?;
        }
        Ok(())
    }

    /// The body of a `FUNCTION DUMP` payload (function opcodes).
    pub fn functions(&mut self, body: &[u8], version: u16) -> io::Result<()> {
        self.header(version)?;
        self.put(body)
    }

    /// A key of `database`, from its `DUMP` payload body (type and value).
    pub fn key(
        &mut self,
        database: u64,
        key: &[u8],
        expire_at_ms: Option<i64>,
        body: &[u8],
        version: u16,
    ) -> io::Result<()> {
        let Some((&kind, value)) = body.split_first() else { return Ok(()) };
        self.header(version)?;
        if self.database != Some(database) {
            self.database = Some(database);
            self.put(&[OPCODE_SELECTDB])?;
            self.put_length(database)?;
        }
        if let Some(at) = expire_at_ms {
            self.put(&[OPCODE_EXPIRETIME_MS])?;
            self.put(&at.to_le_bytes())?;
        }
        self.put(&[kind])?;
        self.put_string(key)?;
        self.put(value)
    }

    /// The end and the checksum; `empty_version` heads an RDB that holds nothing.
    pub fn finish(mut self, empty_version: u16) -> io::Result<(W, u64)> {
        self.header(empty_version)?;
        self.put(&[OPCODE_EOF])?;
        let crc = self.crc.value();
        self.output.write_all(&crc.to_le_bytes())?;
        Ok((self.output, self.written + 8))
    }
}
