//! A test plugin that misbehaves on purpose. The option `probe` picks what it does in
//! `backup`; the host must stop or refuse each one with a precise error:
//!
//! - `spin`: compute forever.
//! - `block`: connect to the database and wait for bytes that never come.
//! - `hold`: store a finished artifact, then wait for one byte from the database before
//!   succeeding: a backup that runs exactly as long as a test wants.
//! - `allocate`: allocate memory without bound.
//! - `connect`: connect to `target` (an address that is not the database's).
//! - `files`: read files and directories of the host.
//! - `environment`: write what it can see of its environment into an artifact and
//!   succeed, so that a test can check that no storage secret is in it.
//! - `panic`: panic.
//! - `abandon`: write part of an artifact and return success without finishing it.
//! - `fail`: finish an artifact, then fail.
//! - `log-flood`: log about 400 MiB through `report.log` and stdout, with newlines and
//!   terminal escapes in the messages, then succeed.
//! - `huge-summary`: succeed with a 100 MiB description and 100,000 attributes.
//! - `big-writes`: write 1 GiB into one artifact in 96 MiB calls, then succeed.
//! - `many-artifacts`: create artifacts without finishing them until the host refuses.
//! - `recurse`: recurse until the stack is exhausted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use stowage_plugin_sdk::bindings::stowage::plugin::{artifact_sink, report};
use stowage_plugin_sdk::{
    DatabaseSettings, Operation, Options, Plugin, PluginError, PluginMetadata, RestoreOptions, SettingSpec, Summary,
    artifacts, export,
};

fn artifact(name: &str, data: &[u8], finish: bool) -> Result<(), PluginError> {
    let mut writer = artifacts::create(name, "text/plain")?;
    writer.write_all(data).map_err(|e| PluginError::Artifact(e.to_string()))?;
    writer.flush().map_err(|e| PluginError::Artifact(e.to_string()))?;
    if finish {
        writer.finish()?;
    } else {
        // Leak the writer so that it is neither finished nor dropped before returning.
        std::mem::forget(writer);
    }
    Ok(())
}

fn summary(description: String) -> Summary {
    Summary { description, attributes: Vec::new() }
}

/// Never returns, but keeps the optimiser from removing the loop.
fn spin() -> u64 {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
        if counter == u64::MAX {
            return counter;
        }
    }
}

/// Connect to the database and wait for one byte; returns how many came.
fn wait_for_database(settings: &DatabaseSettings) -> Result<usize, PluginError> {
    let address: SocketAddr = settings
        .addresses
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| PluginError::InvalidSettings("no database address".into()))?;
    let mut stream = TcpStream::connect(address).map_err(|e| PluginError::Connection(e.to_string()))?;
    let mut buffer = [0u8; 1];
    stream.read(&mut buffer).map_err(|e| PluginError::Connection(e.to_string()))
}

/// Returns only past a depth no stack holds. Nothing of a frame lives in linear memory,
/// so it is the engine's call stack that runs out, not the guest's shadow stack.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return depth;
    }
    std::hint::black_box(recurse(depth + 1)) ^ depth
}

struct SandboxProbe;

impl Plugin for SandboxProbe {
    fn metadata() -> PluginMetadata {
        let spec = |name: &str, description: &str, required| SettingSpec {
            name: name.into(),
            description: description.into(),
            required,
            default_value: None,
        };
        PluginMetadata {
            name: "sandbox-probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin that misbehaves on purpose".into(),
            operations: vec![Operation::Backup],
            settings: vec![
                spec(
                    "probe",
                    "What to do: spin, block, hold, allocate, connect, files, environment, panic, abandon, fail, \
                     log-flood, huge-summary, big-writes, many-artifacts, recurse",
                    true,
                ),
                spec("target", "Address for the connect probe", false),
            ],
        }
    }

    fn backup(settings: DatabaseSettings) -> Result<Summary, PluginError> {
        let options = Options::new(&settings);
        match options.get("probe").unwrap_or_default() {
            "spin" => Ok(summary(format!("{}", spin()))),
            "block" => Ok(summary(format!("read {} bytes", wait_for_database(&settings)?))),
            "hold" => {
                artifact("held.txt", &vec![b'h'; 3 << 20], true)?;
                Ok(summary(format!("held, then read {} bytes", wait_for_database(&settings)?)))
            }
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "connect" => {
                let target = options.get("target").unwrap_or("127.0.0.1:1");
                let address: SocketAddr =
                    target.parse().map_err(|_| PluginError::InvalidSettings(format!("bad target {target}")))?;
                match TcpStream::connect(address) {
                    Ok(_) => Ok(summary(format!("connected to {target}"))),
                    Err(e) => Err(PluginError::Connection(format!("connect to {target}: {e}"))),
                }
            }
            "files" => {
                let mut seen = Vec::new();
                for path in ["/", "/etc/passwd", "."] {
                    match std::fs::metadata(path) {
                        Ok(_) => seen.push(path),
                        Err(e) => eprintln!("cannot access {path}: {e}"),
                    }
                }
                if seen.is_empty() {
                    Err(PluginError::Other("no file is accessible".into()))
                } else {
                    Ok(summary(format!("accessible: {}", seen.join(", "))))
                }
            }
            "environment" => {
                let mut report = String::new();
                for (name, value) in std::env::vars() {
                    report.push_str(&format!("env {name}={value}\n"));
                }
                for arg in std::env::args() {
                    report.push_str(&format!("arg {arg}\n"));
                }
                report.push_str(&format!("settings {settings:?}\n"));
                artifact("environment.txt", report.as_bytes(), true)?;
                Ok(summary(format!("{} environment variables", std::env::vars().count())))
            }
            "panic" => panic!("the sandbox probe panics on purpose"),
            "abandon" => {
                artifact("abandoned.txt", b"half of an artifact", false)?;
                Ok(summary("returned without finishing".into()))
            }
            "fail" => {
                artifact("finished.txt", b"a complete artifact of a failed backup", true)?;
                Err(PluginError::Database("the sandbox probe fails on purpose".into()))
            }
            "log-flood" => {
                let line =
                    format!("forged\n2026-01-01T00:00:00Z  INFO stowage: backup committed\x1b[2J{}", "x".repeat(1000));
                for _ in 0..200_000 {
                    report::log(report::Level::Info, &line);
                    println!("{line}");
                }
                Ok(summary("flooded".into()))
            }
            "huge-summary" => Ok(Summary {
                description: "d".repeat(100 << 20),
                attributes: (0..100_000).map(|i| (format!("attribute-{i}"), "v".repeat(100))).collect(),
            }),
            "big-writes" => {
                let writer = artifact_sink::create("big.bin", "application/octet-stream")?;
                let chunk = vec![7u8; 96 << 20];
                for _ in 0..11 {
                    writer.write(&chunk)?;
                }
                writer.finish()?;
                Ok(summary("wrote 1 GiB in 96 MiB calls".into()))
            }
            "many-artifacts" => {
                let mut open = Vec::new();
                for i in 0..100_000 {
                    open.push(artifact_sink::create(&format!("open-{i}.bin"), "application/octet-stream")?);
                }
                Ok(summary(format!("{} artifacts open", open.len())))
            }
            "recurse" => Ok(summary(format!("{}", recurse(0)))),
            other => Err(PluginError::InvalidSettings(format!("unknown probe {other:?}"))),
        }
    }

    fn restore(_settings: DatabaseSettings, _options: RestoreOptions) -> Result<Summary, PluginError> {
        Err(PluginError::Unsupported("the sandbox probe cannot restore".into()))
    }
}

export!(SandboxProbe);
