//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution server) over
//! HTTPS on a loopback port; components are pushed with `stowage plugin push`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::tls::checked;
use crate::{Result, free_port, wait_until};

/// A running registry; stopped and deleted on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: TempDir,
    pub port: u16,
    /// `user:password` when the registry is private.
    login: Option<String>,
}

/// Writes an htpasswd file with one bcrypt entry (the registry accepts only bcrypt).
const HTPASSWD: &str = r#"
import crypt, sys
path, user, password = sys.argv[1:]
open(path, "w").write(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
"#;

impl Registry {
    /// Start a registry with a certificate for `localhost` from a fresh CA.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A registry that wants HTTP Basic credentials for everything.
    pub fn start_private(user: &str, password: &str) -> Result<Self> {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Result<Self> {
        let binary = Path::new("/usr/bin/docker-registry");
        anyhow::ensure!(binary.is_file(), "docker-registry is missing: run ./dev setup");
        let dir = tempfile::tempdir()?;
        crate::tls::certificates(dir.path())?;
        let port = free_port()?;
        let file = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            file("data"),
            file("server.crt"),
            file("server.key")
        );
        let mut config = config;
        if let Some((user, password)) = login {
            let path = dir.path().join("htpasswd");
            let output = Command::new("python3").args(["-c", HTPASSWD]).arg(&path).args([user, password]).output()?;
            checked(output, "htpasswd")?;
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: stowage-test\n    path: {}\n", path.display()));
        }
        std::fs::write(dir.path().join("config.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let login = login.map(|(user, password)| format!("{user}:{password}"));
        let registry = Registry { child, dir, port, login };
        wait_until("the registry listens", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(registry)
    }

    /// The CA file that makes the registry trusted (for `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `localhost:PORT`, as references name it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The environment that makes `stowage` trust this registry (and log in to it).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("SSL_CERT_FILE".to_owned(), self.ca_file().display().to_string())];
        if let Some(login) = &self.login {
            let (user, password) = login.split_once(':').unwrap_or_default();
            let config = serde_json::json!({"auths": {self.host(): {"username": user, "password": password}}});
            env.push(("STOWAGE_REGISTRY_AUTH".to_owned(), config.to_string()));
        }
        env
    }

    /// Push `component` as `repository:tag` with `stowage plugin push`; returns the
    /// manifest digest (`sha256:...`).
    pub fn push(&self, repository: &str, tag: &str, component: &Path) -> Result<String> {
        let destination = format!("oci://{}/{repository}:{tag}", self.host());
        let component = component.to_str().context("component path")?;
        let pushed = crate::stowage::run(["plugin", "push", component, &destination], &self.env())?.ok()?;
        let pinned = pushed.stdout.trim();
        let digest = pinned.rsplit_once('@').map(|(_, digest)| digest.to_owned());
        digest.with_context(|| format!("stowage plugin push printed {pinned:?}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
