//! Throwaway Redis 7.0 servers (Debian's `redis-server`, scripts/setup/services.sh) on
//! loopback ports, and a comparison of everything a dataset holds.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::{Result, checked, free_port, wait_until};

/// A running server; stopped and deleted on drop.
#[derive(Debug)]
pub struct Redis {
    server: Child,
    dir: TempDir,
    pub port: u16,
    /// With TLS only: the CA (PEM) that signed the server's certificate (for `localhost`).
    pub ca: Option<String>,
}

impl Redis {
    /// A server with nothing in it; `config` are more `redis-server` arguments
    /// (`--name value` pairs).
    pub fn start(config: &[&str]) -> Result<Self> {
        Self::start_in(tempfile::tempdir()?, config, false)
    }

    /// A server that speaks TLS only (`tls-port`, no plaintext port), with a certificate
    /// for `localhost`; clients need no certificate of their own.
    pub fn start_tls_only() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        crate::tls::certificates(dir.path())?;
        Self::start_in(dir, &["--tls-auth-clients", "no"], true)
    }

    /// A server that loads `rdb` as its `dump.rdb` at start, as an operator restores a
    /// Redis by hand.
    pub fn start_from_rdb(rdb: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::copy(rdb, dir.path().join("dump.rdb")).context("copy dump.rdb")?;
        Self::start_in(dir, &[], false)
    }

    fn start_in(dir: TempDir, config: &[&str], tls: bool) -> Result<Self> {
        let port = free_port()?;
        let mut server = Command::new("redis-server");
        if tls {
            let file = |name: &str| dir.path().join(name).display().to_string();
            server.args(["--port", "0", "--tls-port", &port.to_string()]);
            server.args(["--tls-cert-file", &file("server.crt"), "--tls-key-file", &file("server.key")]);
            server.args(["--tls-ca-cert-file", &file("ca.crt")]);
        } else {
            server.args(["--port", &port.to_string()]);
        }
        let server = server
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(config)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (run ./dev setup)")?;
        let ca = if tls { Some(std::fs::read_to_string(dir.path().join("ca.crt"))?) } else { None };
        let redis = Redis { server, dir, port, ca };
        wait_until("Redis accepts connections (and has loaded its RDB)", Duration::from_secs(120), || {
            // A server with requirepass answers NOAUTH: it is up all the same.
            let answer = redis.client().arg("PING").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            answer.is_ok_and(|answer| answer.contains("PONG") || answer.contains("NOAUTH"))
        })?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:port/0`, with `user:password@` when given.
    pub fn url(&self, login: Option<(&str, &str)>) -> String {
        match login {
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// `redis-cli` for this server.
    fn client(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if self.ca.is_some() {
            command.args(["--tls", "--cacert"]).arg(self.dir.path().join("ca.crt"));
        }
        command
    }

    /// One command through `redis-cli` (raw output).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let output = self.client().arg("--raw").args(args).output()?;
        checked(output, &format!("redis-cli {}", args.join(" ")))
    }

    /// Commands, one per line, piped into `redis-cli -n database`; the replies, one per line.
    pub fn pipe(&self, database: u32, commands: &str) -> Result<String> {
        let mut child = self
            .client()
            .args(["-n", &database.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(commands.as_bytes())?;
        let output = child.wait_with_output()?;
        let replies = checked(output, "redis-cli")?;
        anyhow::ensure!(!replies.contains("ERR"), "redis-cli replied with an error:\n{replies}");
        Ok(replies)
    }

    /// Everything the dataset holds, as text that two servers compare by: per database
    /// and key (sorted) its type, encoding, value digest and absolute expiry, the full
    /// state of every stream (groups, consumers, pending entries), the function
    /// libraries with their code, and the whole-dataset digest.
    pub fn state(&self) -> Result<String> {
        let mut state = String::new();
        for database in 0..16 {
            let keys = self.client().args(["-n", &database.to_string(), "--scan"]).output()?;
            let mut keys: Vec<String> = checked(keys, "redis-cli --scan")?.lines().map(str::to_owned).collect();
            keys.sort();
            for key in keys {
                let describe =
                    format!("TYPE {key}\nOBJECT ENCODING {key}\nDEBUG DIGEST-VALUE {key}\nPEXPIRETIME {key}\n");
                let facts = self.pipe(database, &describe)?;
                state.push_str(&format!("db{database} {key}: {}\n", facts.lines().collect::<Vec<_>>().join(" | ")));
                if facts.starts_with("stream") {
                    state.push_str(&self.pipe(database, &format!("XINFO STREAM {key} FULL\n"))?);
                }
            }
        }
        // Functions are listed in hash-table order: compare the lines as a set.
        let mut functions: Vec<String> =
            self.cli(&["FUNCTION", "LIST", "WITHCODE"])?.lines().map(str::to_owned).collect();
        functions.sort();
        state.push_str(&functions.join("\n"));
        state.push_str(&self.cli(&["DEBUG", "DIGEST"])?);
        Ok(state)
    }

    /// A connection that sends raw RESP, for writers that must be fast.
    pub fn connect(&self) -> Result<RawClient> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        Ok(RawClient { reader: BufReader::new(stream.try_clone()?), stream })
    }

    /// CPU seconds the server has used (user + system), from /proc.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.server.id()))?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').context("/proc stat")?.1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    /// SIGKILL the server, as a crash or an OOM kill does.
    pub fn crash(&mut self) -> Result<()> {
        self.server.kill()?;
        self.server.wait()?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A bare RESP connection.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawClient {
    /// Send `commands` (each a list of arguments) at once and read `lines` reply lines.
    pub fn round_trip(&mut self, commands: &[&[&str]], lines: usize) -> Result<Vec<String>> {
        let mut request = String::new();
        for command in commands {
            request.push_str(&format!("*{}\r\n", command.len()));
            for argument in *command {
                request.push_str(&format!("${}\r\n{argument}\r\n", argument.len()));
            }
        }
        self.stream.write_all(request.as_bytes())?;
        let mut replies = Vec::with_capacity(lines);
        for _ in 0..lines {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            replies.push(line.trim_end().to_owned());
        }
        Ok(replies)
    }
}
