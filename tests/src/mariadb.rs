//! Throwaway MariaDB 10.11 servers (Debian's `mariadb-server`, scripts/setup/services.sh)
//! on loopback ports, and a comparison of everything a database holds.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::{Result, checked, free_port, wait_until};

/// The password of [`USER`].
pub const PASSWORD: &str = "stowage-secret";

/// A user with every privilege, who logs in over TCP from 127.0.0.1.
pub const USER: &str = "stowage";

/// A running server with its binary log on; stopped and deleted on drop.
#[derive(Debug)]
pub struct Mariadb {
    server: Child,
    dir: TempDir,
    pub port: u16,
    /// With TLS only: the CA (PEM) that signed the server's certificate (for `localhost`).
    pub ca: Option<String>,
}

impl Mariadb {
    /// An empty server with [`USER`].
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// A server that accepts TCP connections over TLS only (`require_secure_transport`),
    /// with a certificate for `localhost`.
    pub fn start_tls_only() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self> {
        anyhow::ensure!(Path::new("/usr/sbin/mariadbd").is_file(), "MariaDB is missing: run ./dev setup");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let as_root = running_as_root();
        // A temporary directory of its own: servers bootstrapped at once in one /tmp trip
        // over each other's temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        let mut install = Command::new("mariadb-install-db");
        install
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root {
            install.arg("--user=root");
        }
        checked(install.output()?, "mariadb-install-db")?;

        let port = free_port()?;
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut server = Command::new("/usr/sbin/mariadbd");
        server
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", path("socket")))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--log-error={}", path("error.log")))
            .arg(format!("--pid-file={}", path("pid")))
            .arg(format!("--log-bin={}", path("binlog")))
            .args(["--server-id=1", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"])
            // Small and fast: throwaway data needs no durability.
            .args([
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .args(["--sync-binlog=0", "--event-scheduler=OFF"]);
        if as_root {
            server.arg("--user=root");
        }
        let ca = if tls {
            let ca = crate::tls::certificates(dir.path())?;
            server
                .arg(format!("--ssl-cert={}", path("server.crt")))
                .arg(format!("--ssl-key={}", path("server.key")))
                .arg("--require-secure-transport=ON");
            Some(ca)
        } else {
            None
        };
        let server = server.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting mariadbd")?;
        let mariadb = Mariadb { server, dir, port, ca };
        wait_until("MariaDB accepts connections", Duration::from_secs(60), || mariadb.sql("", "SELECT 1").is_ok())
            .with_context(|| mariadb.log())?;
        mariadb.sql(
            "",
            &format!(
                "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
                 GRANT ALL ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;"
            ),
        )?;
        Ok(mariadb)
    }

    /// `mysql://user:password@127.0.0.1:port/database`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{database}", self.port)
    }

    /// The `mariadb` client as root over the socket, in `database` (none if empty).
    pub fn client(&self, database: &str) -> Command {
        let mut command = Command::new("mariadb");
        command.arg(format!("--socket={}", self.dir.path().join("socket").display())).args([
            "-uroot",
            "--default-character-set=utf8mb4",
            "--batch",
            "--skip-column-names",
        ]);
        if !database.is_empty() {
            command.arg(database);
        }
        command
    }

    /// Run `sql` (statements separated by `;`); the rows, tab-separated.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String> {
        let output = self.client(database).arg("-e").arg(sql).output()?;
        checked(output, &format!("mariadb -e {sql:?}"))
    }

    /// Replay a script through the client, as a user restores a dump by hand.
    pub fn replay(&self, database: &str, script: &[u8]) -> Result<String> {
        let mut child =
            self.client(database).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        child.stdin.take().context("stdin")?.write_all(script)?;
        checked(child.wait_with_output()?, "mariadb < script")
    }

    /// Everything `database` holds, as text that two servers compare by: per table its
    /// definition, checksum (every byte of every row, invisible columns included) and
    /// rows; views, routines, triggers, events and the database's defaults. The
    /// checksum of a system-versioned table covers its row timestamps, which a restore
    /// starts again: `versioned` lists those whose checksum is left out.
    pub fn state(&self, database: &str, versioned: &[&str]) -> Result<String> {
        let name = database.replace('\'', "''");
        let tables = self.sql(
            database,
            &format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}' \
                 AND TABLE_TYPE <> 'VIEW' ORDER BY 1"
            ),
        )?;
        let mut state = String::new();
        for table in tables.lines() {
            let quoted = format!("`{}`", table.replace('`', "``"));
            state.push_str(&format!("== {table}\n{}", self.sql(database, &format!("SHOW CREATE TABLE {quoted}"))?));
            if !versioned.contains(&table) {
                state.push_str(&self.sql(database, &format!("CHECKSUM TABLE {quoted} EXTENDED"))?);
            }
            let output = self
                .client(database)
                .arg("--binary-as-hex")
                .arg("-e")
                .arg(format!("SELECT * FROM {quoted}"))
                .output()?;
            let mut rows: Vec<String> = checked(output, "SELECT *")?.lines().map(str::to_owned).collect();
            rows.sort();
            state.push_str(&rows.join("\n"));
            state.push('\n');
        }
        for query in [
            format!(
                "SELECT TABLE_NAME, VIEW_DEFINITION, SECURITY_TYPE, DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{name}' ORDER BY 1"
            ),
            format!(
                "SELECT ROUTINE_TYPE, ROUTINE_NAME, SQL_MODE, ROUTINE_DEFINITION, DTD_IDENTIFIER, IS_DETERMINISTIC, \
                 SQL_DATA_ACCESS, SECURITY_TYPE, DEFINER FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = '{name}' ORDER BY 1, 2"
            ),
            format!(
                "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT, \
                 SQL_MODE, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{name}' ORDER BY 1"
            ),
            format!(
                "SELECT EVENT_NAME, EVENT_DEFINITION, SQL_MODE, TIME_ZONE, STATUS, INTERVAL_VALUE, INTERVAL_FIELD, \
                 STARTS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{name}' ORDER BY 1"
            ),
            format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = '{name}'"
            ),
        ] {
            state.push_str(&self.sql(database, &query)?);
        }
        Ok(state)
    }

    /// A session that runs `sql` in the background until it is killed (for writers and
    /// lock holders).
    pub fn background(&self, database: &str, sql: &str) -> Result<Child> {
        Ok(self.client(database).arg("-e").arg(sql).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?)
    }

    /// Kill the server with SIGKILL, as a crash or an OOM kill would.
    pub fn crash(&mut self) -> Result<()> {
        self.server.kill()?;
        self.server.wait()?;
        Ok(())
    }

    /// The server's error log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// mariadbd refuses to run as root unless told to.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // Throwaway data: no clean shutdown needed.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
