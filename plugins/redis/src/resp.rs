//! A Redis client over the one sandboxed connection: RESP2 commands and replies, with
//! pipelining, and raw reads for the replication stream.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use stowage_plugin_tls::{HandshakeError, TlsSettings, Transport};

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 256 * 1024;

/// A reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a bulk or status reply.
    pub fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(bytes) => bytes,
            Reply::Status(text) => Some(text.into_bytes()),
            _ => None,
        }
    }

    /// A bulk or status reply as text.
    pub fn text(self) -> Option<String> {
        self.bytes().map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// TLS could not be established (or the certificate is not trusted).
    Tls(String),
    /// The server answered with an error reply.
    Server(String),
    /// The server sent something that is not RESP.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(error) => write!(f, "{error}"),
            Error::Tls(message) => write!(f, "{message}"),
            Error::Server(message) => write!(f, "{message}"),
            Error::Protocol(message) => write!(f, "protocol error: {message}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Error::Io(error)
    }
}

/// Who to log in as, and how.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS from the first byte (Redis 6+ `tls-port`), when set.
    pub tls: Option<TlsSettings>,
}

/// A number as decimal digits, without allocating: a restore writes several per key.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl From<u64> for Decimal {
    fn from(mut value: u64) -> Self {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                return Decimal { digits, start };
            }
        }
    }
}

impl From<usize> for Decimal {
    fn from(value: usize) -> Self {
        Decimal::from(value as u64)
    }
}

impl Decimal {
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// A connection; commands are buffered by [`Connection::send`] until a reply is read.
pub struct Connection {
    input: BufReader<Transport>,
    output: Vec<u8>,
}

/// A TCP connection to `address`, encrypted when `tls` is set; a server that refuses
/// the fast cipher suite is asked again with all of them.
fn open(address: &str, tls: Option<&TlsSettings>) -> Result<Transport, Error> {
    let socket = TcpStream::connect(address)?;
    socket.set_nodelay(true)?;
    let Some(settings) = tls else { return Ok(Transport::Plain(socket)) };
    match stowage_plugin_tls::handshake(socket, settings, false) {
        Err(HandshakeError::CipherRefused) => {
            let socket = TcpStream::connect(address)?;
            socket.set_nodelay(true)?;
            stowage_plugin_tls::handshake(socket, settings, true)
        }
        outcome => outcome,
    }
    .map_err(|error| match error {
        HandshakeError::Failed(message) => Error::Tls(message),
        HandshakeError::CipherRefused => Error::Tls("the server accepts none of the offered cipher suites".into()),
    })
}

impl Connection {
    /// Connect to the first address that answers and log in.
    pub fn connect(addresses: &[String], login: &Login) -> Result<Self, Error> {
        let mut last = Error::Io(io::Error::new(io::ErrorKind::NotFound, "no database address to connect to"));
        for address in addresses {
            match open(address, login.tls.as_ref()) {
                Ok(transport) => {
                    let mut connection =
                        Connection { input: BufReader::with_capacity(READ_BUFFER, transport), output: Vec::new() };
                    connection.log_in(login)?;
                    return Ok(connection);
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    fn log_in(&mut self, login: &Login) -> Result<(), Error> {
        let Some(password) = &login.password else { return Ok(()) };
        match &login.user {
            Some(user) => self.command(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
            None => self.command(&[b"AUTH", password.as_bytes()])?,
        };
        Ok(())
    }

    /// Queue a command; it goes out with the next read (or [`Connection::flush`]).
    pub fn send(&mut self, arguments: &[&[u8]]) {
        self.output.push(b'*');
        self.output.extend_from_slice(Decimal::from(arguments.len()).as_bytes());
        self.output.extend_from_slice(b"\r\n");
        for argument in arguments {
            self.output.push(b'$');
            self.output.extend_from_slice(Decimal::from(argument.len()).as_bytes());
            self.output.extend_from_slice(b"\r\n");
            self.output.extend_from_slice(argument);
            self.output.extend_from_slice(b"\r\n");
        }
    }

    /// Bytes queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.output.len()
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        if !self.output.is_empty() {
            let transport = self.input.get_mut();
            transport.write_all(&self.output)?;
            transport.flush()?;
            self.output.clear();
        }
        Ok(())
    }

    /// Send one command and read its reply; an error reply is an [`Error::Server`].
    pub fn command(&mut self, arguments: &[&[u8]]) -> Result<Reply, Error> {
        self.send(arguments);
        match self.reply()? {
            Reply::Error(message) => Err(Error::Server(message)),
            reply => Ok(reply),
        }
    }

    /// Read the next reply (after sending what is queued). Error replies are returned
    /// as [`Reply::Error`], so that a pipeline can tell which command failed.
    pub fn reply(&mut self) -> Result<Reply, Error> {
        self.flush()?;
        let line = self.line()?;
        let (kind, rest) = line.split_first().ok_or_else(|| Error::Protocol("empty reply line".into()))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let number = || text().parse::<i64>().map_err(|_| Error::Protocol(format!("not a number: {:?}", text())));
        Ok(match kind {
            b'+' => Reply::Status(text()),
            b'-' => Reply::Error(text()),
            b':' => Reply::Integer(number()?),
            b'$' => match number()? {
                -1 => Reply::Bulk(None),
                length => {
                    let length = usize::try_from(length).map_err(|_| Error::Protocol("negative length".into()))?;
                    let mut bytes = vec![0; length + 2];
                    self.input.read_exact(&mut bytes)?;
                    bytes.truncate(length);
                    Reply::Bulk(Some(bytes))
                }
            },
            b'*' => match number()? {
                -1 => Reply::Array(None),
                count => {
                    let mut items = Vec::with_capacity(count.clamp(0, 1024) as usize);
                    for _ in 0..count {
                        items.push(self.reply()?);
                    }
                    Reply::Array(Some(items))
                }
            },
            other => return Err(Error::Protocol(format!("unexpected reply type {:?}", *other as char))),
        })
    }

    /// One line without its CRLF (or LF).
    pub fn line(&mut self) -> Result<Vec<u8>, Error> {
        self.flush()?;
        let mut line = Vec::new();
        // A reply line is short; a server that sends a megabyte without a newline is broken.
        (&mut self.input).take(1024 * 1024).read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// The raw byte stream, for the RDB that follows a replication handshake.
    pub fn raw(&mut self) -> &mut BufReader<Transport> {
        &mut self.input
    }
}
