//! Throwaway PostgreSQL 15 clusters on loopback ports, with users for every
//! authentication method the plugin supports.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::checked;
use crate::{Result, free_port, wait_until};

/// Where Debian installs PostgreSQL 15 (scripts/setup/services.sh).
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The password of every user with one.
pub const PASSWORD: &str = "stowage-secret";

/// Users and how they log in over TCP (see `pg_hba.conf` below).
pub const SCRAM_USER: &str = "postgres";
pub const MD5_USER: &str = "md5_user";
pub const CLEARTEXT_USER: &str = "cleartext_user";
pub const TRUST_USER: &str = "trust_user";

const HBA: &str = "\
local all all trust
host all trust_user 127.0.0.1/32 trust
host all cleartext_user 127.0.0.1/32 password
# md5 lets users whose password is stored as SCRAM use SCRAM.
host all all 127.0.0.1/32 md5
";

/// With TLS, every TCP connection must be encrypted.
const HBA_TLS_ONLY: &str = "\
local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
";

/// A running cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    server: Child,
    _dir: TempDir,
    pub port: u16,
    /// With TLS: the CA (PEM) that signed the server's certificate, which names `localhost`.
    pub ca: Option<String>,
}

/// A CA that signed nothing here, for tests that expect verification to fail.
pub fn unrelated_ca() -> Result<String> {
    let dir = tempfile::tempdir()?;
    let output = Command::new("openssl")
        .current_dir(dir.path())
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Unrelated CA"])
        .args(["-keyout", "other.key", "-out", "other.crt"])
        .output()?;
    checked(output, "openssl")?;
    Ok(std::fs::read_to_string(dir.path().join("other.crt"))?)
}

/// PostgreSQL refuses to run as root; tests running as root run it as `postgres`.
fn as_server_user(program: &str) -> Result<Command> {
    let root = std::fs::metadata("/proc/self")?.uid() == 0;
    Ok(if root {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    })
}

fn give_to_server_user(path: &Path) -> Result<()> {
    if std::fs::metadata("/proc/self")?.uid() == 0 {
        let status = Command::new("chown").arg("-R").arg("postgres:postgres").arg(path).status()?;
        anyhow::ensure!(status.success(), "chown {} failed", path.display());
    }
    Ok(())
}

impl Postgres {
    /// initdb, start, and create the test users.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// A cluster that accepts TCP connections only over TLS (see [`Postgres::ca`]).
    pub fn start_tls_only() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self> {
        anyhow::ensure!(Path::new(BIN).join("postgres").is_file(), "PostgreSQL 15 is missing: run ./dev setup");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD)?;
        give_to_server_user(dir.path())?;
        let output = as_server_user(&format!("{BIN}/initdb"))?
            .arg("-D")
            .arg(&data)
            .args(["-U", SCRAM_USER, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()?;
        checked(output, "initdb")?;
        std::fs::write(data.join("pg_hba.conf"), if tls { HBA_TLS_ONLY } else { HBA })?;
        let ca = if tls { Some(crate::tls::certificates(dir.path())?) } else { None };
        give_to_server_user(dir.path())?;

        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let server = as_server_user(&format!("{BIN}/postgres"))?
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(if tls { vec!["-c".to_owned(), "ssl=on".to_owned()] } else { Vec::new() })
            .args(if tls {
                let file = |name: &str| dir.path().join(name).display().to_string();
                vec![
                    "-c".to_owned(),
                    format!("ssl_cert_file={}", file("server.crt")),
                    "-c".to_owned(),
                    format!("ssl_key_file={}", file("server.key")),
                ]
            } else {
                Vec::new()
            })
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let postgres = Postgres { server, _dir: dir, port, ca };
        wait_until("PostgreSQL accepts connections", Duration::from_secs(30), || {
            postgres.psql("postgres", "SELECT 1").is_ok()
        })?;
        postgres.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'md5';
                 CREATE ROLE {MD5_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}';
                 RESET password_encryption;
                 CREATE ROLE {CLEARTEXT_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}';
                 CREATE ROLE {TRUST_USER} LOGIN SUPERUSER;"
            ),
        )?;
        Ok(postgres)
    }

    /// The URL the runner takes (the password goes separately).
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client program of this cluster, as the superuser over TCP, told where by the
    /// environment alone (pgbench reads `-d` as `--debug`).
    pub fn program(&self, program: &str, database: &str) -> Command {
        let mut command = Command::new(format!("{BIN}/{program}"));
        command
            .env("PGPASSWORD", PASSWORD)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SCRAM_USER)
            .env("PGDATABASE", database);
        command
    }

    /// A client command of this cluster, as the superuser over TCP, with `-d` as well
    /// (pg_restore connects only when given one).
    pub fn client(&self, program: &str, database: &str) -> Command {
        let mut command = self.program(program, database);
        command.args(["-d", database]);
        command
    }

    /// Run SQL with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        self.psql_input(database, &["-At"], sql.as_bytes())
    }

    /// Run `input` through psql's standard input (every statement's rows are printed,
    /// not only the last), stopping at the first error, with `options` added.
    pub fn psql_input(&self, database: &str, options: &[&str], input: &[u8]) -> Result<String> {
        let mut child = self
            .client("psql", database)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("psql stdin")?.write_all(input)?;
        checked(child.wait_with_output()?, "psql")
    }

    /// Run a SQL file with psql.
    pub fn psql_file(&self, database: &str, file: &Path) -> Result<String> {
        let output =
            self.client("psql", database).args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"]).arg(file).output()?;
        checked(output, "psql")
    }

    /// `pg_dump --schema-only`, without what legitimately differs between two copies:
    /// comment lines and the random `\restrict` key of pg_dump's output.
    pub fn schema(&self, database: &str) -> Result<String> {
        self.schema_of(database, &[])
    }

    /// [`Postgres::schema`] of what pg_dump's `selection` options (`-n`, `-t`, `-T`) pick.
    pub fn schema_of(&self, database: &str, selection: &[&str]) -> Result<String> {
        let dump = checked(self.client("pg_dump", database).arg("--schema-only").args(selection).output()?, "pg_dump")?;
        Ok(dump
            .lines()
            .filter(|line| {
                !line.starts_with("--") && !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The database's own properties: its settings in stored order, connection limit,
    /// comment, and the privileges others than its owner hold on it.
    pub fn properties(&self, database: &str) -> Result<String> {
        self.psql(
            database,
            "SELECT (SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = d.oid), \
                    d.datconnlimit, shobj_description(d.oid, 'pg_database'), \
                    ARRAY(SELECT format('%s=%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, \
                                        a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END) \
                          FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
                          WHERE a.grantee <> d.datdba ORDER BY 1) \
             FROM pg_database d WHERE d.datname = current_database()",
        )
    }

    /// Per table and materialized view in user schemas: row count and a checksum of the
    /// sorted rows' text, one line each; then per large object its owner, privileges,
    /// comment, size and checksum.
    pub fn contents(&self, database: &str) -> Result<String> {
        let large_objects = self.psql(
            database,
            "SELECT oid, lomowner::regrole, lomacl, obj_description(oid, 'pg_largeobject'), \
                    length(lo_get(oid)), md5(lo_get(oid)) \
             FROM pg_largeobject_metadata ORDER BY oid",
        )?;
        let queries = self.psql(
            database,
            "SELECT format('SELECT %L, count(*), md5(coalesce(string_agg(t::text, E''\\n'' ORDER BY t::text), '''')) \
                            FROM %s t;', c.oid::regclass, c.oid::regclass)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'm') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
             ORDER BY 1",
        )?;
        Ok(self.psql(database, &queries)? + &large_objects)
    }
}

impl Postgres {
    /// Kill the server with SIGKILL, as a crash or an OOM kill would.
    pub fn crash(&mut self) -> Result<()> {
        self.server.kill()?;
        self.server.wait()?;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown; SIGKILL only if it hangs.
        let _ = Command::new("kill").arg("-INT").arg(self.server.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
