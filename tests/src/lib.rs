//! The integration-test harness: real servers started on loopback as child processes,
//! and helpers to run the `stowage` binary the way a user does.
//!
//! Servers come from the project's set-up scripts (`./dev setup`), installed under
//! `STOWAGE_CACHE` (default `/var/cache/stowage`). A missing server is a test failure
//! with a message saying which set-up step to run, never a silent skip.

pub mod bench;
pub mod cluster;
pub mod faults;
pub mod kube;
pub mod kubelet;
pub mod mariadb;
pub mod podman;
pub mod postgres;
pub mod redis;
pub mod registry;
pub mod seaweedfs;
pub mod stowage;
pub mod tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

/// Errors of the harness; tests unwrap them.
pub type Result<T> = anyhow::Result<T>;

/// The cache directory of the set-up scripts.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STOWAGE_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/stowage"))
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Poll `ready` until it is true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{what} was not ready after {timeout:?}")
}

/// The stdout of a finished command, or its output as the error.
pub fn checked(output: Output, what: &str) -> Result<String> {
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
