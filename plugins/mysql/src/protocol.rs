//! The MySQL client/server protocol, as much of it as a dump and a replay need: the
//! handshake (with TLS started by an SSL request), the login (the server's switch
//! between authentication plugins, `caching_sha2_password`'s full authentication; the
//! plugins' answers are in [`crate::auth`]), and text
//! queries whose rows stream to a callback without being collected.
//!
//! MariaDB and MySQL speak the same protocol here; where they differ, the code says so.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use stowage_plugin_sdk::sessions::Session;
use stowage_plugin_tls::{HandshakeError, TlsSettings, Transport};

use crate::auth::{self, ServerKey};

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_LONG_FLAG: u32 = 4;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_PLUGIN_AUTH_LENENC_DATA: u32 = 0x20_0000;
const CLIENT_DEPRECATE_EOF: u32 = 0x100_0000;

/// utf8mb4_general_ci: known to every MySQL since 5.5 and every MariaDB.
const UTF8MB4: u8 = 45;
const MAX_PACKET: u32 = 1 << 30;
/// A payload of this length continues in the next packet.
const FULL_PACKET: usize = 0xff_ffff;
const COM_QUERY: u8 = 0x03;
/// Bytes read from the server at a time.
const READ_BUFFER: usize = 64 << 10;
const COM_QUIT: u8 = 0x01;

/// A failure talking to the server.
#[derive(Debug)]
pub enum Error {
    /// The connection failed or was lost.
    Io(io::Error),
    /// The server answered with an error packet.
    Server { code: u16, state: String, message: String },
    /// The server sent something this client cannot read.
    Protocol(String),
    /// TLS could not be set up.
    Tls(String),
    /// The server asks for something this client does not do.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(error) => write!(f, "{error}"),
            Error::Server { code, state, message } => write!(f, "ERROR {code} ({state}): {message}"),
            Error::Protocol(message) | Error::Tls(message) | Error::Unsupported(message) => f.write_str(message),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Io(error)
    }
}

/// Server error codes the plugin reacts to.
pub mod codes {
    /// Access denied for user (wrong password or unknown user).
    pub const ACCESS_DENIED: u16 = 1045;
    /// Access denied to a database.
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// Lock wait timeout exceeded.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// Unknown column.
    pub const BAD_FIELD: u16 = 1054;
    /// A privilege such as RELOAD is missing.
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    /// A table's definition changed after the transaction's snapshot.
    pub const TABLE_DEF_CHANGED: u16 = 1412;
    /// A command is denied on a table (SELECT on the mysql schema, for one).
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    /// TLS, and whether it is required (else used when the server offers it).
    pub tls: Option<(TlsSettings, bool)>,
    /// The RSA key that encrypts the password for `caching_sha2_password`'s full
    /// authentication without TLS; none: that login is refused.
    pub server_key: Option<ServerKey>,
}

/// What the server said about itself in its greeting.
#[derive(Debug, Clone)]
pub struct Server {
    /// As sent, e.g. `5.5.5-10.11.6-MariaDB-0+deb12u1` (MariaDB prefixes `5.5.5-`).
    pub version: String,
    pub tls: bool,
}

impl Server {
    /// The version without MariaDB's replication prefix.
    pub fn display_version(&self) -> &str {
        self.version.strip_prefix("5.5.5-").unwrap_or(&self.version)
    }

    pub fn is_mariadb(&self) -> bool {
        self.version.contains("MariaDB")
    }
}

/// One column of a result set.
#[derive(Debug, Clone)]
pub struct Column {
    /// The field type (`types`).
    pub kind: u8,
}

/// Column types, as the protocol numbers them.
pub mod types {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const YEAR: u8 = 13;
    pub const BIT: u8 = 16;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const GEOMETRY: u8 = 255;
}

impl Column {
    /// Whether the text form of a value is a numeric literal SQL reads back exactly.
    pub fn is_numeric(&self) -> bool {
        use types::*;
        matches!(self.kind, DECIMAL | TINY | SHORT | LONG | FLOAT | DOUBLE | LONGLONG | INT24 | YEAR | NEWDECIMAL)
    }
}

/// The first `N` values of a row that [`Connection::rows`] returned, NULL (or a missing
/// column) as empty text.
pub fn text<const N: usize>(row: Vec<Option<String>>) -> [String; N] {
    let mut values = row.into_iter().map(Option::unwrap_or_default);
    std::array::from_fn(|_| values.next().unwrap_or_default())
}

/// A session with a logged-in server.
#[derive(Debug)]
pub struct Connection {
    /// Read through a buffer: a row is a header and a payload, and a read of the socket
    /// is a call out of the component.
    transport: BufReader<Transport>,
    sequence: u8,
    capabilities: u32,
    pub server: Server,
    /// The server's id of this session (what `KILL` takes).
    pub id: u32,
    /// How many warnings the statement finished last left.
    warnings: u16,
    /// The payload of the packet read last (reused).
    packet: Vec<u8>,
}

/// Write `value` as a length-encoded integer.
fn put_lenenc(out: &mut Vec<u8>, value: u64) {
    match value {
        0..=250 => out.push(value as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(value as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(value as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

/// A cursor over one packet's payload.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, at: 0 }
    }

    fn short(&self) -> Error {
        Error::Protocol("the server sent a packet shorter than its fields".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.data.len()).ok_or_else(|| self.short())?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn nul_terminated(&mut self) -> Result<&'a [u8], Error> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|b| *b == 0).ok_or_else(|| self.short())?;
        self.at += end + 1;
        Ok(&rest[..end])
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.data[self.at..];
        self.at = self.data.len();
        rest
    }

    /// A length-encoded integer; `None` is the NULL marker (0xfb).
    fn lenenc(&mut self) -> Result<Option<u64>, Error> {
        Ok(Some(match self.u8()? {
            0xfb => return Ok(None),
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let b = self.bytes(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xfe => {
                let b = self.bytes(8)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            byte => u64::from(byte),
        }))
    }

    /// A length-encoded string; `None` is SQL NULL.
    fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, Error> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => Ok(Some(self.bytes(usize::try_from(n).map_err(|_| self.short())?)?)),
        }
    }
}

/// An error packet's code, state and message.
fn server_error(payload: &[u8]) -> Error {
    let mut fields = Fields::new(payload);
    let parsed = (|| {
        fields.u8()?;
        let code = fields.u16()?;
        let rest = fields.rest();
        let (state, message) = match rest.strip_prefix(b"#") {
            Some(rest) if rest.len() >= 5 => (&rest[..5], &rest[5..]),
            _ => (&b"HY000"[..], rest),
        };
        Ok::<_, Error>(Error::Server {
            code,
            state: String::from_utf8_lossy(state).into_owned(),
            message: String::from_utf8_lossy(message).into_owned(),
        })
    })();
    parsed.unwrap_or_else(|error| error)
}

/// Waited on among the other sessions of a parallel load (see
/// [`stowage_plugin_sdk::sessions::first_answering`]).
impl Session for Connection {
    fn socket(&self) -> &TcpStream {
        self.transport.get_ref().socket()
    }

    fn has_buffered(&self) -> bool {
        !self.transport.buffer().is_empty()
    }

    fn read_more(&mut self) -> io::Result<usize> {
        self.transport.fill_buf().map(<[u8]>::len)
    }
}

impl Connection {
    /// Connect to the first of `addresses` that answers and log in.
    pub fn connect(addresses: &[String], login: &Login, timeout: Duration) -> Result<Self, Error> {
        let mut last = Error::Io(io::Error::new(io::ErrorKind::NotFound, "no database address to connect to"));
        for address in addresses {
            let socket =
                match address.parse().map_err(io::Error::other).and_then(|a| TcpStream::connect_timeout(&a, timeout)) {
                    Ok(socket) => socket,
                    Err(error) => {
                        last = Error::Io(error);
                        continue;
                    }
                };
            return Connection::handshake(socket, login);
        }
        Err(last)
    }

    fn handshake(mut socket: TcpStream, login: &Login) -> Result<Self, Error> {
        let mut sequence = 0;
        let mut greeting = Vec::new();
        read_packet(&mut socket, &mut sequence, &mut greeting)?;
        if greeting.first() == Some(&0xff) {
            return Err(server_error(&greeting));
        }
        let mut fields = Fields::new(&greeting);
        let protocol = fields.u8()?;
        if protocol != 10 {
            return Err(Error::Protocol(format!("the server speaks protocol version {protocol}, not 10")));
        }
        let version = String::from_utf8_lossy(fields.nul_terminated()?).into_owned();
        let id = fields.u32()?;
        let mut scramble = fields.bytes(8)?.to_vec();
        fields.u8()?;
        let mut server_capabilities = u32::from(fields.u16()?);
        let mut plugin = "mysql_native_password".to_owned();
        if fields.at < greeting.len() {
            fields.u8()?; // charset
            fields.u16()?; // status
            server_capabilities |= u32::from(fields.u16()?) << 16;
            let data_length = fields.u8()?;
            fields.bytes(10)?; // reserved (MariaDB: 6 bytes, then its own capabilities)
            if server_capabilities & CLIENT_SECURE_CONNECTION != 0 {
                let n = usize::from(data_length).saturating_sub(8).max(13);
                let part = fields.bytes(n.min(greeting.len() - fields.at))?;
                scramble.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
            }
            if server_capabilities & CLIENT_PLUGIN_AUTH != 0 {
                let name = fields.nul_terminated().unwrap_or_else(|_| fields.rest());
                plugin = String::from_utf8_lossy(name).into_owned();
            }
        }
        if server_capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(Error::Unsupported(format!("server {version} is older than the 4.1 protocol")));
        }
        let wanted = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_DATA
            | CLIENT_DEPRECATE_EOF;
        let mut capabilities = wanted & server_capabilities;
        let mut server = Server { version, tls: false };
        let transport = match &login.tls {
            Some((tls, _)) if server_capabilities & CLIENT_SSL != 0 => {
                capabilities |= CLIENT_SSL;
                // An SSL request is the login packet cut before the user name.
                write_packet(&mut socket, &mut sequence, &login_header(capabilities))?;
                socket.flush()?;
                server.tls = true;
                // The handshake cannot be retried on this connection: offer every cipher.
                stowage_plugin_tls::handshake(socket, tls, true).map_err(|error| match error {
                    HandshakeError::CipherRefused => {
                        Error::Tls("the server accepts none of the TLS cipher suites".into())
                    }
                    HandshakeError::Failed(message) => Error::Tls(message),
                })?
            }
            Some((_, true)) => {
                return Err(Error::Tls(format!(
                    "the server ({}) does not offer TLS, which the tls option requires",
                    server.display_version()
                )));
            }
            _ => Transport::Plain(socket),
        };
        let transport = BufReader::with_capacity(READ_BUFFER, transport);
        let mut connection =
            Connection { transport, sequence, capabilities, server, id, warnings: 0, packet: Vec::new() };
        connection.log_in(login, &plugin, &scramble)?;
        Ok(connection)
    }

    fn log_in(&mut self, login: &Login, plugin: &str, scramble: &[u8]) -> Result<(), Error> {
        let password = login.password.as_deref().unwrap_or_default();
        let mut plugin = plugin.to_owned();
        let mut scramble = scramble.to_vec();
        let response = auth::response(&plugin, password, &scramble).or_else(|_| {
            // The greeting names the server's default; it switches us to the user's own.
            plugin = "mysql_native_password".into();
            auth::response(&plugin, password, &scramble)
        })?;
        let mut packet = login_header(self.capabilities);
        packet.extend_from_slice(login.user.as_bytes());
        packet.push(0);
        if self.capabilities & CLIENT_PLUGIN_AUTH_LENENC_DATA != 0 {
            put_lenenc(&mut packet, response.len() as u64);
        } else {
            packet.push(response.len() as u8);
        }
        packet.extend_from_slice(&response);
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            packet.extend_from_slice(plugin.as_bytes());
            packet.push(0);
        }
        self.write_packet(&packet)?;
        self.transport.get_mut().flush()?;
        loop {
            self.read_packet()?;
            match self.packet.first().copied() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(server_error(&self.packet)),
                Some(0xfe) => {
                    // Auth switch: another plugin, a new scramble.
                    let switch = self.packet.clone();
                    let mut fields = Fields::new(&switch[1..]);
                    plugin = String::from_utf8_lossy(fields.nul_terminated()?).into_owned();
                    // A 20-byte scramble comes with a NUL after it; ed25519's 32-byte
                    // nonce without one, and may end in a zero byte.
                    scramble = match fields.rest() {
                        [scramble @ .., 0] if scramble.len() == 20 => scramble.to_vec(),
                        data => data.to_vec(),
                    };
                    let response = auth::response(&plugin, password, &scramble)?;
                    self.write_packet(&response)?;
                    self.transport.get_mut().flush()?;
                }
                Some(0x01) if plugin == "caching_sha2_password" => match self.packet.get(1) {
                    Some(0x03) => {} // fast authentication succeeded; OK follows
                    Some(0x04) if self.server.tls => {
                        // Full authentication: the password itself, safe inside TLS.
                        let mut clear = password.as_bytes().to_vec();
                        clear.push(0);
                        self.write_packet(&clear)?;
                        self.transport.get_mut().flush()?;
                    }
                    Some(0x04) => {
                        let key = match &login.server_key {
                            Some(ServerKey::Pinned(key)) => key.clone(),
                            Some(ServerKey::Request) => self.request_server_key()?,
                            None => {
                                return Err(Error::Unsupported(format!(
                                    "user {:?} is not in the server's caching_sha2_password cache, and a first \
                                     login without TLS needs the server's RSA key: set option tls, or option \
                                     server-public-key (request, or the key as PEM)",
                                    login.user
                                )));
                            }
                        };
                        let encrypted = auth::encrypted_password(&key, password, &scramble)?;
                        self.write_packet(&encrypted)?;
                        self.transport.get_mut().flush()?;
                    }
                    _ => return Err(Error::Protocol("unexpected caching_sha2_password message".into())),
                },
                _ => return Err(Error::Protocol("unexpected packet during login".into())),
            }
        }
    }

    /// Ask for the server's RSA key during a `caching_sha2_password` login.
    fn request_server_key(&mut self) -> Result<rsa::RsaPublicKey, Error> {
        self.write_packet(&[0x02])?;
        self.transport.get_mut().flush()?;
        self.read_packet()?;
        match self.packet.split_first() {
            Some((0x01, pem)) => auth::public_key(&String::from_utf8_lossy(pem))
                .map_err(|why| Error::Protocol(format!("the server's RSA key: {why}"))),
            Some((0xff, _)) => Err(server_error(&self.packet)),
            _ => Err(Error::Protocol("the server sent no RSA key when asked for it".into())),
        }
    }

    /// Run `sql`, which returns no rows; returns the affected row count.
    pub fn execute(&mut self, sql: &str) -> Result<u64, Error> {
        self.execute_bytes(sql.as_bytes())
    }

    /// [`Connection::execute`] for a statement read from a script, in its own bytes.
    pub fn execute_bytes(&mut self, sql: &[u8]) -> Result<u64, Error> {
        self.send(sql)?;
        self.finish()
    }

    /// Send `sql`, which returns no rows, without waiting: the caller may prepare the
    /// next statement while the server runs this one, then must call
    /// [`Connection::finish`] before anything else.
    pub fn send(&mut self, sql: &[u8]) -> Result<(), Error> {
        self.sequence = 0;
        let mut command = Vec::with_capacity(sql.len() + 1);
        command.push(COM_QUERY);
        command.extend_from_slice(sql);
        self.write_packet(&command)?;
        self.transport.get_mut().flush()?;
        Ok(())
    }

    /// The outcome of the statement [`Connection::send`] sent: the affected row count.
    pub fn finish(&mut self) -> Result<u64, Error> {
        let mut affected = 0;
        self.results(|_, _| Ok(()), &mut affected)?;
        Ok(affected)
    }

    /// Run `sql` and collect its rows as text (NULL as `None`): for small results.
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Error> {
        let mut rows = Vec::new();
        let mut affected = 0;
        self.query(
            sql.as_bytes(),
            |_, values| {
                rows.push(values.iter().map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned())).collect());
                Ok(())
            },
            &mut affected,
        )?;
        Ok(rows)
    }

    /// The first column of the first row of `sql`.
    pub fn value(&mut self, sql: &str) -> Result<Option<String>, Error> {
        Ok(self.rows(sql)?.into_iter().next().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Run `sql`, calling `row` with the result's columns and each row as it arrives
    /// (values borrowed from the packet; `None` is NULL).
    pub fn query(
        &mut self,
        sql: &[u8],
        row: impl FnMut(&[Column], &[Option<&[u8]>]) -> Result<(), Error>,
        affected: &mut u64,
    ) -> Result<(), Error> {
        self.send(sql)?;
        self.results(row, affected)
    }

    /// Read the results of the statement sent last.
    fn results(
        &mut self,
        mut row: impl FnMut(&[Column], &[Option<&[u8]>]) -> Result<(), Error>,
        affected: &mut u64,
    ) -> Result<(), Error> {
        loop {
            self.read_packet()?;
            let more = match self.packet.first().copied() {
                Some(0x00) => self.ok_packet(affected)?,
                Some(0xff) => return Err(server_error(&self.packet)),
                Some(0xfb) => return Err(Error::Unsupported("the server asks for a local file".into())),
                _ => {
                    let defs = self.columns()?;
                    loop {
                        if let Some(more) = self.next_row(&defs, |values| row(&defs, values))? {
                            break more;
                        }
                    }
                }
            };
            if !more {
                return Ok(());
            }
        }
    }

    /// The column definitions of the result set whose column count was just read.
    fn columns(&mut self) -> Result<Vec<Column>, Error> {
        let count = Fields::new(&self.packet).lenenc()?.unwrap_or(0);
        let mut defs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            self.read_packet()?;
            defs.push(column(&self.packet)?);
        }
        if self.capabilities & CLIENT_DEPRECATE_EOF == 0 {
            self.read_packet()?; // EOF after the column definitions
        }
        Ok(defs)
    }

    /// Read the next row of a result set with columns `defs` and hand it to `row`; at
    /// the end, whether more results follow.
    fn next_row(
        &mut self,
        defs: &[Column],
        row: impl FnOnce(&[Option<&[u8]>]) -> Result<(), Error>,
    ) -> Result<Option<bool>, Error> {
        self.read_packet()?;
        match self.packet.first().copied() {
            // A row starting 0xfe would be a value of 16 MiB or more, so longer.
            Some(0xfe) if self.packet.len() < FULL_PACKET => {
                let mut ignored = 0;
                return self.ok_packet(&mut ignored).map(Some);
            }
            Some(0xff) => return Err(server_error(&self.packet)),
            _ => {}
        }
        let mut fields = Fields::new(&self.packet);
        let values = (0..defs.len()).map(|_| fields.lenenc_bytes()).collect::<Result<Vec<_>, _>>()?;
        row(&values)?;
        Ok(None)
    }

    /// Send `sql`, a query with one result set, and read its columns; then
    /// [`Connection::next_rows`] until it ends, nothing else on this connection.
    pub fn start_rows(&mut self, sql: &[u8]) -> Result<Vec<Column>, Error> {
        self.send(sql)?;
        self.read_packet()?;
        match self.packet.first().copied() {
            Some(0xff) => Err(server_error(&self.packet)),
            Some(0x00 | 0xfb) => Err(Error::Protocol("the statement returned no rows".into())),
            _ => self.columns(),
        }
    }

    /// Hand up to `limit` rows of the result set [`Connection::start_rows`] started to
    /// `row`, so that one thread can read several connections' results in turn; whether
    /// the result set has ended.
    pub fn next_rows(
        &mut self,
        defs: &[Column],
        limit: usize,
        mut row: impl FnMut(&[Option<&[u8]>]) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        for _ in 0..limit {
            match self.next_row(defs, &mut row)? {
                Some(false) => return Ok(true),
                Some(true) => return Err(Error::Protocol("more than one result set".into())),
                None => {}
            }
        }
        Ok(false)
    }

    /// Read an OK (or EOF) packet's affected rows; returns whether more results follow.
    fn ok_packet(&mut self, affected: &mut u64) -> Result<bool, Error> {
        let mut fields = Fields::new(&self.packet);
        let header = fields.u8()?;
        let status = if header == 0xfe && self.capabilities & CLIENT_DEPRECATE_EOF == 0 {
            self.warnings = fields.u16()?;
            fields.u16()?
        } else {
            *affected += fields.lenenc()?.unwrap_or(0);
            fields.lenenc()?; // last insert id
            let status = fields.u16()?;
            self.warnings = fields.u16()?;
            status
        };
        const SERVER_MORE_RESULTS_EXIST: u16 = 8;
        Ok(status & SERVER_MORE_RESULTS_EXIST != 0)
    }

    /// How many warnings the statement finished last left.
    pub fn warnings(&self) -> u16 {
        self.warnings
    }

    /// End the session politely.
    pub fn quit(mut self) {
        self.sequence = 0;
        if self.write_packet(&[COM_QUIT]).is_ok() {
            let _ = self.transport.get_mut().flush();
        }
    }

    fn read_packet(&mut self) -> Result<(), Error> {
        read_packet(&mut self.transport, &mut self.sequence, &mut self.packet)
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<(), Error> {
        write_packet(self.transport.get_mut(), &mut self.sequence, payload)
    }
}

/// The login packet's fixed start (alone, it is the SSL request).
fn login_header(capabilities: u32) -> Vec<u8> {
    let mut packet = Vec::with_capacity(128);
    packet.extend_from_slice(&capabilities.to_le_bytes());
    packet.extend_from_slice(&MAX_PACKET.to_le_bytes());
    packet.push(UTF8MB4);
    packet.extend_from_slice(&[0; 23]);
    packet
}

/// Read one logical packet (joining continuation packets) into `packet`.
fn read_packet(stream: &mut impl Read, sequence: &mut u8, packet: &mut Vec<u8>) -> Result<(), Error> {
    packet.clear();
    loop {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).map_err(eof_as_lost)?;
        let length = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        *sequence = header[3].wrapping_add(1);
        let start = packet.len();
        packet.resize(start + length, 0);
        stream.read_exact(&mut packet[start..]).map_err(eof_as_lost)?;
        if length < FULL_PACKET {
            return Ok(());
        }
    }
}

/// Write `payload` as one logical packet (split at 16 MiB), in one write: a header sent
/// apart from its payload would wait for the server's delayed acknowledgement (40 ms a
/// statement). Not flushed.
fn write_packet(stream: &mut impl Write, sequence: &mut u8, payload: &[u8]) -> Result<(), Error> {
    let mut frames = Vec::with_capacity(payload.len() + 4 * (payload.len() / FULL_PACKET + 2));
    let mut frame = |chunk: &[u8]| {
        let length = chunk.len() as u32;
        frames.extend_from_slice(&[length as u8, (length >> 8) as u8, (length >> 16) as u8, *sequence]);
        frames.extend_from_slice(chunk);
        *sequence = sequence.wrapping_add(1);
    };
    for chunk in payload.chunks(FULL_PACKET) {
        frame(chunk);
    }
    if payload.len().is_multiple_of(FULL_PACKET) {
        // An empty payload, or one that is a multiple of 16 MiB, ends with an empty packet.
        frame(&[]);
    }
    stream.write_all(&frames)?;
    Ok(())
}

/// An early end of the stream means the server went away.
fn eof_as_lost(error: io::Error) -> Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        Error::Io(io::Error::new(io::ErrorKind::ConnectionAborted, "the server closed the connection"))
    } else {
        Error::Io(error)
    }
}

/// A column definition packet: only its type matters here.
fn column(payload: &[u8]) -> Result<Column, Error> {
    let mut fields = Fields::new(payload);
    for _ in 0..6 {
        fields.lenenc_bytes()?; // catalog, schema, table, original table, name, original name
    }
    fields.lenenc()?; // length of the fixed fields
    fields.u16()?; // character set
    fields.u32()?; // display length
    Ok(Column { kind: fields.u8()? })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    use super::*;
    use crate::auth::tests::{PUBLIC_KEY, decrypt_password};

    const SCRAMBLE: &[u8; 20] = b"abcdefghijklmnopqrst";
    const PASSWORD: &str = "s3cret pässword";

    /// A MySQL 8 server on a loopback port, as far as the first `caching_sha2_password`
    /// login of a user goes (not cached yet: full authentication); with `sends_key` it
    /// answers a request for its RSA key. Ends with the password it decrypted.
    fn first_login_server(sends_key: bool) -> (String, JoinHandle<Result<String, String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
            let (mut sequence, mut packet) = (0, Vec::new());
            let failed = |error: Error| error.to_string();
            let capabilities = CLIENT_LONG_PASSWORD
                | CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_PLUGIN_AUTH_LENENC_DATA;
            let mut greeting = vec![10];
            greeting.extend_from_slice(b"8.4.3\0");
            greeting.extend_from_slice(&7u32.to_le_bytes());
            greeting.extend_from_slice(&SCRAMBLE[..8]);
            greeting.push(0);
            greeting.extend_from_slice(&(capabilities as u16).to_le_bytes());
            greeting.push(UTF8MB4);
            greeting.extend_from_slice(&2u16.to_le_bytes());
            greeting.extend_from_slice(&((capabilities >> 16) as u16).to_le_bytes());
            greeting.push(21);
            greeting.extend_from_slice(&[0; 10]);
            greeting.extend_from_slice(&SCRAMBLE[8..]);
            greeting.extend_from_slice(b"\0caching_sha2_password\0");
            write_packet(&mut stream, &mut sequence, &greeting).map_err(failed)?;
            read_packet(&mut stream, &mut sequence, &mut packet).map_err(failed)?;
            if !packet.ends_with(b"caching_sha2_password\0") {
                return Err("the login names another plugin".into());
            }
            write_packet(&mut stream, &mut sequence, &[0x01, 0x04]).map_err(failed)?;
            read_packet(&mut stream, &mut sequence, &mut packet).map_err(failed)?;
            if sends_key {
                if packet != [0x02] {
                    return Err(format!("not a request for the key: {packet:?}"));
                }
                let key = [&[0x01], PUBLIC_KEY.as_bytes()].concat();
                write_packet(&mut stream, &mut sequence, &key).map_err(failed)?;
                read_packet(&mut stream, &mut sequence, &mut packet).map_err(failed)?;
            }
            let password = decrypt_password(&packet, SCRAMBLE)?;
            write_packet(&mut stream, &mut sequence, &[0, 0, 0, 2, 0, 0, 0]).map_err(failed)?;
            Ok(password)
        });
        (address, server)
    }

    fn log_in(address: String, server_key: Option<ServerKey>) -> Result<Connection, Error> {
        let login = Login { user: "app".into(), password: Some(PASSWORD.into()), tls: None, server_key };
        Connection::connect(&[address], &login, Duration::from_secs(5))
    }

    #[test]
    fn a_first_login_without_tls_encrypts_the_password_with_the_key_it_asked_for() {
        let (address, server) = first_login_server(true);
        let logged_in = log_in(address, Some(ServerKey::Request));
        assert!(logged_in.is_ok(), "{:?}", logged_in.err());
        assert_eq!(server.join().expect("the server"), Ok(PASSWORD.into()));
    }

    #[test]
    fn a_first_login_without_tls_encrypts_the_password_with_the_pinned_key() {
        let (address, server) = first_login_server(false);
        let key = crate::auth::public_key(PUBLIC_KEY).expect("the key");
        let logged_in = log_in(address, Some(ServerKey::Pinned(key)));
        assert!(logged_in.is_ok(), "{:?}", logged_in.err());
        assert_eq!(server.join().expect("the server"), Ok(PASSWORD.into()));
    }

    #[test]
    fn without_tls_or_a_key_a_first_login_is_refused_before_the_password_leaves() {
        let (address, server) = first_login_server(false);
        let refused = log_in(address, None).expect_err("refused");
        assert!(matches!(&refused, Error::Unsupported(message) if message.contains("server-public-key")), "{refused}");
        let read = server.join().expect("the server");
        assert!(read.as_ref().is_err_and(|why| why.contains("closed")), "{read:?}");
    }
}
