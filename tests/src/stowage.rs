//! Running the `stowage` binary as a user would.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::Context;

use crate::Result;

/// The `stowage` binary: `STOWAGE_RUNNER_BINARY` if set (the benchmarks run the release
/// build, as deployed), else the one of the same build as the running program.
pub fn binary() -> Result<PathBuf> {
    match std::env::var_os("STOWAGE_RUNNER_BINARY") {
        Some(binary) => Ok(binary.into()),
        None => workspace_binary("stowage"),
    }
}

/// A binary of this workspace from the same build as the running program (built by
/// `cargo build --bins`): tests run from `<profile>/deps/`, binaries from `<profile>/`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe.parent().context("program location")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().context("program location")?;
    }
    let binary = profile_dir.join(name);
    anyhow::ensure!(binary.is_file(), "{} is missing: build it with `cargo build --bins`", binary.display());
    Ok(binary)
}

/// Directory of the built plugin components (`generator.wasm`, ...).
pub fn plugin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("STOWAGE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("target/plugins/wasm32-wasip2/release"));
    anyhow::ensure!(dir.is_dir(), "no plugins in {}: run ./dev build", dir.display());
    Ok(dir)
}

/// Precompiled plugins shared by the runs of one test session (`./dev test` empties it
/// first), so that each plugin build is compiled once rather than once per run (2 s for
/// the database plugins in this debug build). Tests of the cache set their own.
pub fn plugin_cache() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::cache_dir().join("test-plugin-cache");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The path of a built plugin (`./dev demo` builds `postgres` only).
pub fn plugin(name: &str) -> Result<PathBuf> {
    let dir = plugin_dir()?;
    let path = dir.join(format!("{name}.wasm"));
    anyhow::ensure!(path.is_file(), "no {name}.wasm in {}: run ./dev build", dir.display());
    Ok(path)
}

/// What a `stowage` run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    /// The exit code; unset when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fail the test with the output unless the command succeeded.
    pub fn ok(self) -> Result<Self> {
        anyhow::ensure!(self.success, "stowage failed:\n{}", self.stderr);
        Ok(self)
    }

    /// Fail the test unless the command failed.
    pub fn failed(self) -> Result<Self> {
        anyhow::ensure!(!self.success, "stowage unexpectedly succeeded:\n{}{}", self.stdout, self.stderr);
        Ok(self)
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A `stowage` command with a clean environment plus `env`.
pub fn command<I, S>(args: I, env: &[(String, String)]) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(binary()?);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STOWAGE_PLUGIN_PATH", plugin_dir()?)
        .env("STOWAGE_CACHE_DIR", plugin_cache()?);
    command.envs(env.iter().map(|(k, v)| (k, v))).args(args);
    Ok(command)
}

/// Run `stowage` to completion.
pub fn run<I, S>(args: I, env: &[(String, String)]) -> Result<Run>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ok(command(args, env)?.output()?.into())
}
