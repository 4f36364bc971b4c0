//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution server) over
//! HTTPS on a loopback port; components are pushed with `stowage plugin push`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::checked;
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

/// A front door for a registry that sends blob downloads elsewhere, as registries backed
/// by object stores and CDNs do: every request goes to the registry, except blob GETs,
/// which are redirected (307) to a second HTTPS server on another port (another origin)
/// that records whether a request carried an `Authorization` header, then serves the blob.
const FRONT: &str = r#"
import base64, http.server, ssl, sys, threading, urllib.error, urllib.request
cert, key, ca, registry_port, front_port, cdn_port, seen, login = sys.argv[1:]
client = ssl.create_default_context(cafile=ca)

def upstream(path, headers, method):
    request = urllib.request.Request(f"https://localhost:{registry_port}{path}", headers=headers, method=method)
    try:
        return urllib.request.urlopen(request, context=client)
    except urllib.error.HTTPError as error:
        return error

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, response, method):
        body = response.read()
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() in ("content-type", "docker-content-digest", "www-authenticate"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass

class Front(Handler):
    def do_GET(self):
        if "/blobs/sha256:" in self.path:
            self.send_response(307)
            self.send_header("Location", f"https://localhost:{cdn_port}/cdn{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")

    def forward(self, method):
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")}
        self.reply(upstream(self.path, headers, method), method)

class Cdn(Handler):
    def do_GET(self):
        with open(seen, "a") as log:
            log.write(f"{self.path} authorization={'Authorization' in self.headers}\n")
        credentials = "Basic " + base64.b64encode(login.encode()).decode()
        self.reply(upstream(self.path[len("/cdn"):], {"Authorization": credentials}, "GET"), "GET")

def serve(port, handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()

threading.Thread(target=serve, args=(cdn_port, Cdn), daemon=True).start()
serve(front_port, Front)
"#;

/// A private registry behind a front door that redirects blob downloads to another origin.
#[derive(Debug)]
pub struct RedirectingRegistry {
    pub registry: Registry,
    front: Child,
    pub port: u16,
    seen: PathBuf,
}

impl RedirectingRegistry {
    pub fn start(user: &str, password: &str) -> Result<Self> {
        let registry = Registry::start_private(user, password)?;
        let port = free_port()?;
        let mut cdn_port = free_port()?;
        while cdn_port == port {
            cdn_port = free_port()?;
        }
        let seen = registry.dir.path().join("cdn-requests.log");
        let file = |name: &str| registry.dir.path().join(name);
        let front = Command::new("python3")
            .args(["-c", FRONT])
            .arg(file("server.crt"))
            .arg(file("server.key"))
            .arg(registry.ca_file())
            .args([registry.port.to_string(), port.to_string(), cdn_port.to_string()])
            .arg(&seen)
            .arg(format!("{user}:{password}"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting the redirecting front door")?;
        let front = RedirectingRegistry { registry, front, port, seen };
        wait_until("the front door listens", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && TcpStream::connect(("127.0.0.1", cdn_port)).is_ok()
        })?;
        Ok(front)
    }

    /// `localhost:PORT` of the front door, as references name it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Trust and credentials for the front door.
    pub fn env(&self) -> Vec<(String, String)> {
        let (user, password) = self.registry.login.as_deref().and_then(|l| l.split_once(':')).unwrap_or_default();
        let config = serde_json::json!({"auths": {self.host(): {"username": user, "password": password}}});
        vec![
            ("SSL_CERT_FILE".to_owned(), self.registry.ca_file().display().to_string()),
            ("STOWAGE_REGISTRY_AUTH".to_owned(), config.to_string()),
        ]
    }

    /// The requests that reached the other origin, one line each: `PATH authorization=BOOL`.
    pub fn redirected_requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.seen).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for RedirectingRegistry {
    fn drop(&mut self) {
        let _ = self.front.kill();
        let _ = self.front.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
