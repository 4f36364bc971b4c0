//! The images of `./dev images` (scripts/images.sh), loaded into a podman of the test's
//! own (private storage under a temporary directory) and run as a cluster runs them.
//!
//! Checked on this machine (Debian 12, podman 4.3, cgroups v1 in hybrid mode): crun
//! refuses hybrid cgroups, and podman's default ulimits fail with `setrlimit
//! RLIMIT_NOFILE: Operation not permitted`; runc with the cgroupfs manager and explicit
//! ulimits runs containers, so that is what every run here uses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::Result;
use crate::stowage::Run;

/// Where `./dev test` puts the archives (`STOWAGE_IMAGE_DIR`, as scripts/images.sh).
pub fn image_dir() -> PathBuf {
    std::env::var_os("STOWAGE_IMAGE_DIR").map(PathBuf::from).unwrap_or_else(|| crate::cache_dir().join("images"))
}

/// A podman with its own image storage, removed with it.
#[derive(Debug)]
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Result<Self> {
        anyhow::ensure!(
            Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success()),
            "podman is missing: run ./dev setup"
        );
        Ok(Podman { dir: tempfile::tempdir()? })
    }

    /// A podman command on this instance's storage.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"]);
        command
    }

    fn checked(mut command: Command, what: &str) -> Result<String> {
        let output = command.output().with_context(|| format!("running podman {what}"))?;
        crate::checked(output, &format!("podman {what}"))
    }

    /// `podman load` of an archive, as a user installs the image.
    pub fn load(&self, archive: &Path) -> Result<String> {
        anyhow::ensure!(archive.is_file(), "{} is missing: run ./dev images", archive.display());
        let mut command = self.command();
        command.arg("load").arg("--input").arg(archive);
        Self::checked(command, "load")
    }

    /// `podman image inspect --format FORMAT IMAGE`.
    pub fn inspect(&self, image: &str, format: &str) -> Result<String> {
        let mut command = self.command();
        command.args(["image", "inspect", "--format", format, image]);
        Ok(Self::checked(command, "image inspect")?.trim().to_owned())
    }

    /// Run `image` to completion as a Job's Pod runs it: read-only root file system with
    /// a writable /tmp, no capabilities, the host's network (the test servers listen on
    /// loopback), `env` and `args`.
    pub fn run(&self, image: &str, env: &[(String, String)], entrypoint: Option<&str>, args: &[&str]) -> Result<Run> {
        let mut command = self.command();
        command
            .args(["run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"])
            .args(["--security-opt", "no-new-privileges"])
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        if let Some(entrypoint) = entrypoint {
            command.args(["--entrypoint", entrypoint]);
        }
        command.arg(image).args(args);
        Ok(command.output().context("running podman run")?.into())
    }
}
