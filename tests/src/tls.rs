//! Test certificates made with openssl, and an HTTPS file server that uses them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::{Result, checked, free_port, wait_until};

/// Make a CA (`ca.crt`) and a certificate for `localhost` signed by it (`server.crt`,
/// `server.key`) in `dir`; returns the CA's PEM.
pub fn certificates(dir: &Path) -> Result<String> {
    let openssl = |args: &[&str]| -> Result<()> {
        let output = Command::new("openssl").current_dir(dir).args(args).output().context("running openssl")?;
        checked(output, "openssl").map(drop)
    };
    let new_key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=Stowage test CA", "-keyout", "ca.key", "-out", "ca.crt"],
            &new_key[..],
        ]
        .concat(),
    )?;
    openssl(
        &[&["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"], &new_key[..]].concat(),
    )?;
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    Ok(std::fs::read_to_string(dir.join("ca.crt"))?)
}

/// Serves the files of a directory over HTTPS on a loopback port; stopped on drop.
#[derive(Debug)]
pub struct HttpsServer {
    child: Child,
    certificates: TempDir,
    pub port: u16,
}

const SERVER: &str = r#"
import functools, http.server, ssl, sys
port, root, cert, key = sys.argv[1:]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl HttpsServer {
    /// Serve `root` as `https://localhost:PORT/...` with a certificate from a fresh CA.
    pub fn serve(root: &Path) -> Result<Self> {
        let certificates = tempfile::tempdir()?;
        crate::tls::certificates(certificates.path())?;
        let port = free_port()?;
        let child = Command::new("python3")
            .args(["-c", SERVER, &port.to_string()])
            .arg(root)
            .arg(certificates.path().join("server.crt"))
            .arg(certificates.path().join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the HTTPS server (python3)")?;
        wait_until("the HTTPS server listens", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(HttpsServer { child, certificates, port })
    }

    /// The CA file that makes the server trusted (for `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> PathBuf {
        self.certificates.path().join("ca.crt")
    }

    /// `https://localhost:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/{path}", self.port)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
