//! SeaweedFS, a real S3-compatible server, on loopback ports of its own.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use tempfile::TempDir;

use crate::{Result, cache_dir, free_port, wait_until};

/// What weed mini logs once every component it started is up.
const STARTED: &str = "All enabled components are running";

const ACCESS_KEY: &str = "stowage-test";
const SECRET_KEY: &str = "stowage-test-secret";

/// A running SeaweedFS; stopped and deleted on drop.
#[derive(Debug)]
pub struct SeaweedFs {
    child: Child,
    _dir: TempDir,
    args: Vec<String>,
    s3_port: u16,
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl SeaweedFs {
    /// The `weed` binary installed by `scripts/setup/services.sh`.
    pub fn binary() -> Result<PathBuf> {
        let weed = cache_dir().join("seaweedfs/bin/weed");
        anyhow::ensure!(weed.is_file(), "{} is missing: run ./dev setup", weed.display());
        Ok(weed)
    }

    /// Start a server with one identity allowed everything, and wait until S3 answers.
    pub fn start() -> Result<Self> {
        // Ports are picked free and bound by weed a moment later; a parallel test may take
        // one in between, so a start that loses that race is tried again on new ports.
        // weed does not always say so (a gRPC listener's failure is a bare fatal stack),
        // so every failed start is tried again; a server that cannot start fails three times.
        let mut attempt = 1;
        loop {
            match Self::start_once() {
                Ok(server) => return Ok(server),
                Err(error) if attempt < 3 => {
                    eprintln!("SeaweedFS did not start (attempt {attempt}); trying new ports: {error:#}");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn start_once() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "identities": [{
                    "name": "stowage",
                    "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]
                }]
            })
            .to_string(),
        )?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let s3_port = free_port()?;
        let mut args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-master.telemetry=false".into(),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", config.display()),
            format!("-s3.port={s3_port}"),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "metricsPort",
        ] {
            args.push(format!("-{flag}={}", free_port()?));
        }
        let child = Self::spawn(dir.path(), &args)?;
        let mut server = SeaweedFs { child, _dir: dir, args, s3_port, endpoint: format!("http://127.0.0.1:{s3_port}") };
        server.wait_ready(0)?;
        Ok(server)
    }

    fn spawn(dir: &std::path::Path, args: &[String]) -> Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("weed.log"))?;
        let mut command = Command::new(Self::binary()?);
        command.env("GOMEMLIMIT", "512MiB").args(args);
        command.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
        command.spawn().context("starting weed")
    }

    /// How many times weed has said (in its log) that every component runs.
    fn starts_logged(&self) -> usize {
        std::fs::read_to_string(self._dir.path().join("weed.log")).map(|log| log.matches(STARTED).count()).unwrap_or(0)
    }

    /// Wait until this weed, started after `earlier` logged starts, serves S3. A bare
    /// connect is not enough: a parallel test's server may hold the port picked for this
    /// one, which then exits; that start fails and [`SeaweedFs::start`] tries new ports.
    fn wait_ready(&mut self, earlier: usize) -> Result<()> {
        let port = self.s3_port;
        let mut exited = None;
        let ready = wait_until("SeaweedFS S3", Duration::from_secs(30), || {
            let answers = self.starts_logged() > earlier && TcpStream::connect(("127.0.0.1", port)).is_ok();
            // Still running once it answers: an S3 port held by another server ends it.
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            answers
        });
        if let Some(status) = exited {
            anyhow::bail!("weed exited ({status}): {}", self.log_tail());
        }
        ready.with_context(|| self.log_tail())
    }

    /// Kill the server (as a crash would) and start it again on the same data and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let earlier = self.starts_logged();
        self.child = Self::spawn(self._dir.path(), &self.args)?;
        self.wait_ready(earlier)
    }

    /// `host:port` of the S3 endpoint.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.s3_port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// An S3 client for the server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "stowage-tests"))
            .http_client(Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Create a bucket and wait until objects can be stored in it: a bucket is only
    /// metadata, and under load the volume server may register with the master later.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let client = self.client();
        let mut last_error = None;
        let mut created = false;
        for _ in 0..300 {
            if !created {
                match client.create_bucket().bucket(name).send().await {
                    Ok(_) => created = true,
                    Err(error) => last_error = Some(aws_sdk_s3::error::DisplayErrorContext(error).to_string()),
                }
            }
            if created {
                let probe = client.put_object().bucket(name).key(".stowage-probe").body(b"ready".to_vec().into());
                match probe.send().await {
                    Ok(_) => {
                        client.delete_object().bucket(name).key(".stowage-probe").send().await?;
                        return Ok(());
                    }
                    Err(error) => last_error = Some(aws_sdk_s3::error::DisplayErrorContext(error).to_string()),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("bucket {name} is not usable: {last_error:?}\n{}", self.log_tail())
    }

    /// The environment that lets `stowage` reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
