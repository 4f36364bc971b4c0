//! A small PostgreSQL frontend over the one TCP connection the sandbox allows: TLS
//! negotiation (see [`crate::tls`]), startup, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256), simple queries with text results, and COPY in both directions. Message
//! encoding and SCRAM come from `postgres-protocol`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use stowage_plugin_sdk::sessions::Session;
use stowage_plugin_tls::{HandshakeError, Transport};

use crate::tls::{TlsMode, TlsSettings};

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 256 * 1024;

/// How to reach and log in to one database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `ip:port` candidates, tried in order.
    pub addresses: Vec<String>,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub tls: TlsMode,
    /// Prepared unless `tls` is `Disable`.
    pub tls_settings: Option<TlsSettings>,
}

/// An error the server reported, with the fields people need to act on it.
#[derive(Debug, Clone, Default)]
pub struct ServerError {
    pub severity: String,
    /// The SQLSTATE, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    fn from_fields(mut fields: ErrorFields<'_>) -> io::Result<Self> {
        let mut error = ServerError::default();
        while let Some(field) = fields.next()? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        Ok(error)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why talking to the server failed.
#[derive(Debug)]
pub enum Error {
    /// The connection could not be made or broke.
    Io(io::Error),
    /// The server rejected what we asked.
    Server(ServerError),
    /// Login failed before the server said why (no password, unsupported method).
    Authentication(String),
    /// TLS was required and could not be had.
    Tls(String),
    /// The server sent something this client does not expect.
    Protocol(String),
    /// The server accepts none of the cipher suites offered (retried with all of them).
    CipherRefused,
}

impl Error {
    /// The SQLSTATE when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server(error) => Some(&error.code),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Io(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "the server closed the connection")
            }
            Error::Io(error) => write!(f, "{error}"),
            Error::Server(error) => error.fmt(f),
            Error::Authentication(message) | Error::Tls(message) | Error::Protocol(message) => f.write_str(message),
            Error::CipherRefused => f.write_str("the server accepts none of the offered TLS cipher suites"),
        }
    }
}

/// One text-format result row; `None` is SQL NULL.
pub type Row = Vec<Option<String>>;

/// Ask for TLS when the options want it (the SSLRequest precedes the startup message).
/// `any_cipher` offers every cipher suite rather than the fast one alone.
fn negotiate_tls(mut socket: TcpStream, options: &ConnectOptions, any_cipher: bool) -> Result<Transport, Error> {
    let Some(settings) = &options.tls_settings else {
        return Ok(Transport::Plain(socket));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    socket.write_all(&request)?;
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer)?;
    match answer[0] {
        b'S' => stowage_plugin_tls::handshake(socket, settings, any_cipher).map_err(|error| match error {
            HandshakeError::CipherRefused => Error::CipherRefused,
            HandshakeError::Failed(message) => Error::Tls(message),
        }),
        b'N' if options.tls == TlsMode::Prefer => Ok(Transport::Plain(socket)),
        b'N' => Err(Error::Tls("TLS is required (sslmode) but the server does not accept TLS connections".into())),
        other => Err(Error::Protocol(format!("unexpected answer {other:#x} to the TLS request"))),
    }
}

/// Connect to `address` and settle TLS, retrying with every cipher suite when the server
/// refuses the fast one.
fn open(address: &str, options: &ConnectOptions) -> Result<Transport, Error> {
    match negotiate_tls(TcpStream::connect(address)?, options, false) {
        Err(Error::CipherRefused) => negotiate_tls(TcpStream::connect(address)?, options, true),
        outcome => outcome,
    }
}

/// A logged-in session.
pub struct Connection {
    stream: Transport,
    input: BytesMut,
    output: BytesMut,
    /// `server_version` as reported at startup.
    pub server_version: String,
}

/// Waited on among the other sessions of a parallel restore's builds (see
/// [`stowage_plugin_sdk::sessions::first_answering`]).
impl Session for Connection {
    fn socket(&self) -> &TcpStream {
        self.stream.socket()
    }

    fn has_buffered(&self) -> bool {
        !self.input.is_empty()
    }

    fn read_more(&mut self) -> io::Result<usize> {
        let start = self.input.len();
        self.input.resize(start + READ_SIZE, 0);
        let read = self.stream.read(&mut self.input[start..]);
        self.input.truncate(start + read.as_ref().map_or(0, |n| *n));
        read
    }
}

impl Connection {
    /// Connect to the first address that answers and log in.
    pub fn connect(options: &ConnectOptions) -> Result<Self, Error> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no database address to connect to");
        for address in &options.addresses {
            match open(address, options) {
                Ok(stream) => {
                    let mut connection = Connection {
                        stream,
                        input: BytesMut::with_capacity(READ_SIZE),
                        output: BytesMut::new(),
                        server_version: String::new(),
                    };
                    connection.startup(options)?;
                    return Ok(connection);
                }
                Err(Error::Io(error)) => last = error,
                Err(error) => return Err(error),
            }
        }
        Err(Error::Io(last))
    }

    fn startup(&mut self, options: &ConnectOptions) -> Result<(), Error> {
        let parameters = [
            ("user", options.user.as_str()),
            ("database", options.database.as_str()),
            ("client_encoding", "UTF8"),
            // Every setting that changes how values are written or read, pinned as
            // pg_dump pins them, whatever the database or role sets.
            ("DateStyle", "ISO"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
            ("standard_conforming_strings", "on"),
            // A policy must never hide rows from a backup: with row security on, a
            // user subject to a policy fails instead of backing up fewer rows.
            ("row_security", "off"),
            ("application_name", "stowage"),
        ];
        frontend::startup_message(parameters.iter().copied(), &mut self.output)?;
        self.send()?;
        self.authenticate(options)?;
        loop {
            match self.receive()? {
                Message::ParameterStatus(status) => {
                    if status.name()? == "server_version" {
                        self.server_version = status.value()?.to_owned();
                    }
                }
                Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(Error::Server(ServerError::from_fields(body.fields())?)),
                _ => return Err(Error::Protocol("unexpected message during startup".into())),
            }
        }
    }

    fn authenticate(&mut self, options: &ConnectOptions) -> Result<(), Error> {
        let password = || {
            options.password.as_deref().ok_or_else(|| {
                Error::Authentication(format!(
                    "the server asks a password for user {:?} and none was given",
                    options.user
                ))
            })
        };
        match self.receive()? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut self.output)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(options.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut self.output)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram_offered = false;
                while let Some(mechanism) = mechanisms.next()? {
                    scram_offered |= mechanism == sasl::SCRAM_SHA_256;
                }
                if !scram_offered {
                    return Err(Error::Authentication("the server offers no SASL mechanism this plugin knows".into()));
                }
                self.scram(password()?)?;
            }
            Message::ErrorResponse(body) => return Err(Error::Server(ServerError::from_fields(body.fields())?)),
            _ => {
                return Err(Error::Authentication("the server asks for an authentication method not supported".into()));
            }
        }
        self.send()?;
        match self.receive()? {
            Message::AuthenticationOk => Ok(()),
            Message::ErrorResponse(body) => Err(Error::Server(ServerError::from_fields(body.fields())?)),
            _ => Err(Error::Protocol("unexpected message after the password".into())),
        }
    }

    /// SCRAM-SHA-256 up to the client's final message (left in the output buffer).
    fn scram(&mut self, password: &str) -> Result<(), Error> {
        let mut scram = sasl::ScramSha256::new(password.as_bytes(), sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.output)?;
        self.send()?;
        match self.receive()? {
            Message::AuthenticationSaslContinue(body) => scram.update(body.data())?,
            Message::ErrorResponse(body) => return Err(Error::Server(ServerError::from_fields(body.fields())?)),
            _ => return Err(Error::Protocol("unexpected message during SCRAM".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.output)?;
        self.send()?;
        match self.receive()? {
            Message::AuthenticationSaslFinal(body) => scram
                .finish(body.data())
                .map_err(|e| Error::Authentication(format!("the server's SCRAM proof is invalid: {e}"))),
            Message::ErrorResponse(body) => Err(Error::Server(ServerError::from_fields(body.fields())?)),
            _ => Err(Error::Protocol("unexpected message at the end of SCRAM".into())),
        }
        // The AuthenticationOk that follows is read by `authenticate`.
    }

    fn send(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.output)?;
        self.output.clear();
        Ok(())
    }

    /// The next message if the input holds all of it.
    fn buffered(&mut self) -> Result<Option<Message>, Error> {
        let Some(message) = Message::parse(&mut self.input)? else {
            return Ok(None);
        };
        // A FATAL error ends the session: report it rather than the closed socket.
        if let Message::ErrorResponse(body) = &message {
            let error = ServerError::from_fields(body.fields())?;
            if error.severity == "FATAL" || error.severity == "PANIC" {
                return Err(Error::Server(error));
            }
        }
        Ok(Some(message))
    }

    /// One read from the socket into the input; waits until the server sends something.
    fn fill(&mut self) -> Result<(), Error> {
        if self.read_more()? == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(message) = self.buffered()? {
                return Ok(message);
            }
            self.fill()?;
        }
    }

    /// The first column of the first row `sql` returns, if any row and value.
    pub fn query_value(&mut self, sql: &str) -> Result<Option<String>, Error> {
        Ok(self.query(sql)?.into_iter().next().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Run `sql` (one or more statements) and collect the rows of all results.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, Error> {
        self.start_statement(sql)?;
        self.results()
    }

    /// Send `sql` without waiting for it: [`Connection::statement_done`] collects its
    /// outcome, once [`Connection::socket`] has something to read, say.
    pub fn start_statement(&mut self, sql: &str) -> Result<(), Error> {
        frontend::query(sql, &mut self.output)?;
        Ok(self.send()?)
    }

    /// Wait for the end of the statement [`Connection::start_statement`] sent.
    pub fn statement_done(&mut self) -> Result<(), Error> {
        self.results().map(drop)
    }

    /// The rows of all results of the statements sent, until the server is ready again.
    fn results(&mut self) -> Result<Vec<Row>, Error> {
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            match self.receive()? {
                Message::DataRow(row) => {
                    let buffer = row.buffer();
                    let values = row
                        .ranges()
                        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()?;
                    rows.push(values);
                }
                Message::ErrorResponse(body) => failure = Some(ServerError::from_fields(body.fields())?),
                Message::ReadyForQuery(_) => {
                    return match failure {
                        Some(error) => Err(Error::Server(error)),
                        None => Ok(rows),
                    };
                }
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("COPY is not expected here", &mut self.output)?;
                    self.send()?;
                }
                Message::CopyOutResponse(_) => return Err(Error::Protocol("unexpected COPY output".into())),
                _ => {}
            }
        }
    }

    /// Run statements that return no rows of interest.
    pub fn execute(&mut self, sql: &str) -> Result<(), Error> {
        self.query(sql).map(drop)
    }

    /// Start a `COPY ... TO STDOUT`; then [`Connection::copy_out_step`] until it ends.
    pub fn start_copy_out(&mut self, sql: &str) -> Result<CopyOut, Error> {
        frontend::query(sql, &mut self.output)?;
        self.send()?;
        Ok(CopyOut { rows: 0, failure: None })
    }

    /// Hand the rows (text format, each with its newline) that one read from the socket
    /// completes to `row`, so that one thread can interleave the COPYs of several
    /// connections; the number of rows once the COPY has ended. A `row` error ends the
    /// session's usefulness.
    pub fn copy_out_step(
        &mut self,
        copy: &mut CopyOut,
        mut row: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<Option<u64>, CopyOutError> {
        let mut filled = false;
        loop {
            let message = match self.buffered()? {
                Some(message) => message,
                None if filled => return Ok(None),
                None => {
                    self.fill()?;
                    filled = true;
                    continue;
                }
            };
            match message {
                Message::CopyData(data) => {
                    row(data.data()).map_err(CopyOutError::Sink)?;
                    copy.rows += 1;
                }
                Message::ErrorResponse(body) => {
                    copy.failure = Some(ServerError::from_fields(body.fields()).map_err(Error::from)?)
                }
                Message::ReadyForQuery(_) => {
                    return match copy.failure.take() {
                        Some(error) => Err(Error::Server(error).into()),
                        None => Ok(Some(copy.rows)),
                    };
                }
                _ => {}
            }
        }
    }

    /// Start a `COPY ... FROM STDIN`; then [`Connection::copy_data`] and [`Connection::copy_done`].
    pub fn copy_in(&mut self, sql: &str) -> Result<(), Error> {
        frontend::query(sql, &mut self.output)?;
        self.send()?;
        loop {
            match self.receive()? {
                Message::CopyInResponse(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    let error = ServerError::from_fields(body.fields())?;
                    self.wait_ready()?;
                    return Err(Error::Server(error));
                }
                Message::NoticeResponse(_) => {}
                _ => return Err(Error::Protocol("expected COPY IN".into())),
            }
        }
    }

    /// Send COPY rows (any split into messages is fine).
    pub fn copy_data(&mut self, data: &[u8]) -> Result<(), Error> {
        frontend::CopyData::new(data)?.write(&mut self.output);
        self.send()?;
        Ok(())
    }

    /// End a COPY IN; the server's verdict on all rows comes back here.
    pub fn copy_done(&mut self) -> Result<(), Error> {
        frontend::copy_done(&mut self.output);
        self.send()?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let mut failure = None;
        loop {
            match self.receive()? {
                Message::ErrorResponse(body) => failure = Some(ServerError::from_fields(body.fields())?),
                Message::ReadyForQuery(_) => return failure.map_or(Ok(()), |error| Err(Error::Server(error))),
                _ => {}
            }
        }
    }

    /// Say goodbye; errors do not matter any more.
    pub fn close(mut self) {
        frontend::terminate(&mut self.output);
        let _ = self.send();
    }
}

/// A `COPY ... TO STDOUT` under way on a connection.
#[derive(Debug)]
pub struct CopyOut {
    rows: u64,
    failure: Option<ServerError>,
}

/// Why a COPY TO STDOUT stopped.
#[derive(Debug)]
pub enum CopyOutError {
    /// The database side.
    Database(Error),
    /// Where the rows went.
    Sink(io::Error),
}

impl From<Error> for CopyOutError {
    fn from(error: Error) -> Self {
        CopyOutError::Database(error)
    }
}

/// `name` as a double-quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `body` dollar-quoted with a tag it does not contain (`$stowage$`, `$stowage_$`, ...).
pub fn dollar_quote(body: &str) -> String {
    let mut tag = "$stowage$".to_owned();
    while body.contains(&tag) {
        tag.insert(tag.len() - 1, '_');
    }
    format!("{tag}{body}{tag}")
}

/// `value` as a SQL string literal (standard_conforming_strings on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
