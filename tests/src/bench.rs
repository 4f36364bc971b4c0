//! What the `./dev bench` programs share: running `stowage` and native tool pipelines
//! against the same S3 server while following their peak memory, multipart uploads and
//! downloads as `aws s3 cp -` does them, and the printed comparison.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinSet;

use crate::seaweedfs::SeaweedFs;
use crate::stowage::command;

/// The bucket every bench writes to.
pub const BUCKET: &str = "bench";
/// Part size and parts in flight of the native uploads (as `aws s3 cp -` does them, and
/// as `stowage` starts).
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;
pub const MIB: f64 = (1 << 20) as f64;

/// Peak resident memory of a running process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Follows the peak memory of processes until they exit.
#[derive(Debug)]
pub struct Watch {
    peaks: Vec<(u32, u64)>,
}

impl Watch {
    pub fn new(pids: &[u32]) -> Self {
        Watch { peaks: pids.iter().map(|&pid| (pid, 0)).collect() }
    }

    pub fn sample(&mut self) {
        for (pid, peak) in &mut self.peaks {
            *peak = (*peak).max(peak_rss(*pid));
        }
    }

    pub fn total(&self) -> u64 {
        self.peaks.iter().map(|(_, peak)| peak).sum()
    }
}

/// One tool's run: wall time, bytes stored, peak memory of its client processes.
#[derive(Debug)]
pub struct Outcome {
    pub tool: &'static str,
    pub seconds: f64,
    pub stored: u64,
    pub peak: u64,
}

pub async fn stored_bytes(s3: &SeaweedFs, prefix: &str) -> anyhow::Result<u64> {
    let listed = s3.client().list_objects_v2().bucket(BUCKET).prefix(prefix).send().await?;
    Ok(listed.contents().iter().filter_map(|object| object.size()).map(|size| size as u64).sum())
}

/// Upload every file of `dir` under `prefix` (what `aws s3 cp --recursive` does), for
/// the tools that write a directory.
pub async fn upload_dir(s3: &SeaweedFs, dir: &Path, prefix: &str) -> anyhow::Result<()> {
    let client = s3.client();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let key = format!("{prefix}{}", path.file_name().context("a file without a name")?.to_string_lossy());
        let body = ByteStream::from(std::fs::read(&path)?);
        client.put_object().bucket(BUCKET).key(key).body(body).send().await?;
    }
    Ok(())
}

/// Download every object under `prefix` into `dir`, each named after the rest of its key.
pub async fn download_dir(s3: &SeaweedFs, prefix: &str, dir: &Path) -> anyhow::Result<()> {
    let client = s3.client();
    let listed = client.list_objects_v2().bucket(BUCKET).prefix(prefix).send().await?;
    for object in listed.contents() {
        let key = object.key().context("an object without a key")?;
        let body = client.get_object().bucket(BUCKET).key(key).send().await?.body.collect().await?;
        std::fs::write(dir.join(key.trim_start_matches(prefix)), body.into_bytes())?;
    }
    Ok(())
}

/// Environment for `stowage` with a warm cache of `plugin` compiled (the native tools
/// compile nothing), plus `extra`.
pub fn stowage_env(
    s3: &SeaweedFs,
    cache: &Path,
    plugin: &str,
    extra: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = s3.env();
    env.extend_from_slice(extra);
    env.push(("STOWAGE_LOG".into(), "warn".into()));
    env.push(("STOWAGE_CACHE_DIR".into(), cache.display().to_string()));
    let warmed = command(["plugin", "inspect", "--plugin", plugin], &env)?.output()?;
    anyhow::ensure!(warmed.status.success(), "stowage plugin inspect failed");
    Ok(env)
}

/// Run `command` (stdout discarded) to completion; returns its peak memory.
pub async fn run_watched(mut command: Command, what: &str) -> anyhow::Result<u64> {
    let mut child = command.stdout(Stdio::null()).spawn().with_context(|| format!("starting {what}"))?;
    let mut watch = Watch::new(&[child.id()]);
    let status = loop {
        watch.sample();
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(status.success(), "{what} failed");
    Ok(watch.total())
}

/// Run `stowage` to completion; returns seconds and peak memory.
pub async fn stowage_watched(args: &[&str], env: &[(String, String)]) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let peak = run_watched(command(args, env)?, &format!("stowage {}", args[0])).await?;
    Ok((started.elapsed().as_secs_f64(), peak))
}

/// `stowage backup` into `s3://bench/<repo>`.
pub async fn stowage_backup(
    s3: &SeaweedFs,
    tool: &'static str,
    plugin: &str,
    database: &str,
    repo: &str,
    env: &[(String, String)],
) -> anyhow::Result<Outcome> {
    let url = format!("s3://{BUCKET}/{repo}");
    let (seconds, peak) =
        stowage_watched(&["backup", "--plugin", plugin, "--database", database, "--repo", &url], env).await?;
    Ok(Outcome { tool, seconds, stored: stored_bytes(s3, &format!("{repo}/")).await?, peak })
}

/// `stowage restore` of the backup [`stowage_backup`] made into `repo`.
pub async fn stowage_restore(
    plugin: &str,
    database: &str,
    repo: &str,
    env: &[(String, String)],
) -> anyhow::Result<(f64, u64)> {
    let url = format!("s3://{BUCKET}/{repo}");
    stowage_watched(&["restore", "--plugin", plugin, "--database", database, "--repo", &url], env).await
}

/// Upload what `output` produces as one object, in parts, `IN_FLIGHT` at a time.
async fn upload(s3: &SeaweedFs, key: &str, mut output: ChildStdout, watch: &mut Watch) -> anyhow::Result<()> {
    let client = s3.client();
    let upload = client.create_multipart_upload().bucket(BUCKET).key(key).send().await?;
    let upload_id = upload.upload_id().context("upload id")?.to_owned();
    let mut uploads = JoinSet::new();
    let mut parts = Vec::new();
    let mut number = 1;
    loop {
        let mut part = vec![0u8; PART];
        let mut filled = 0;
        while filled < PART {
            let n = tokio::task::block_in_place(|| output.read(&mut part[filled..]))?;
            if n == 0 {
                break;
            }
            filled += n;
            watch.sample();
        }
        if filled == 0 {
            break;
        }
        part.truncate(filled);
        while uploads.len() >= IN_FLIGHT {
            parts.push(uploads.join_next().await.context("upload task")???);
        }
        let (client, key, upload_id) = (client.clone(), key.to_owned(), upload_id.clone());
        uploads.spawn(async move {
            let sent = client
                .upload_part()
                .bucket(BUCKET)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await?;
            anyhow::Ok(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag().map(str::to_owned)).build())
        });
        number += 1;
        if filled < PART {
            break;
        }
    }
    while let Some(part) = uploads.join_next().await {
        parts.push(part??);
    }
    parts.sort_by_key(|part| part.part_number());
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;
    Ok(())
}

/// A native backup: `producer` (a dump tool writing to stdout), through `zstd -3` when
/// `compress`, uploaded as object `key`.
pub async fn native_backup(
    s3: &SeaweedFs,
    tool: &'static str,
    key: &str,
    mut producer: Command,
    compress: bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut producer = producer.stdout(Stdio::piped()).spawn()?;
    let mut output = producer.stdout.take().context("producer stdout")?;
    let mut children: Vec<Child> = vec![producer];
    if compress {
        let mut zstd = Command::new("zstd").args(["-3", "-q", "-c"]).stdin(output).stdout(Stdio::piped()).spawn()?;
        output = zstd.stdout.take().context("zstd stdout")?;
        children.push(zstd);
    }
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let mut watch = Watch::new(&pids);
    upload(s3, key, output, &mut watch).await?;
    for mut child in children {
        anyhow::ensure!(child.wait()?.success(), "{tool} failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    let stored = stored_bytes(s3, key).await?;
    Ok(Outcome { tool, seconds, stored, peak: watch.total() + (IN_FLIGHT * PART) as u64 })
}

/// Download object `key` into `input` (the stdin of `watched`'s first process).
pub async fn download(s3: &SeaweedFs, key: &str, mut input: impl Write, watch: &mut Watch) -> anyhow::Result<()> {
    let mut body = s3.client().get_object().bucket(BUCKET).key(key).send().await?.body;
    while let Some(bytes) = body.next().await {
        let bytes = bytes?;
        tokio::task::block_in_place(|| input.write_all(&bytes))?;
        watch.sample();
    }
    Ok(())
}

/// The side-by-side tables; `size` is what throughput is computed from (table or
/// dataset bytes), `what` names it.
pub fn print_comparison(
    what: &str,
    size: u64,
    backups: &[Outcome],
    restores: &[(&str, (f64, u64))],
    restore_note: &str,
) {
    println!("\nbackup of {:.0} MiB ({what})", size as f64 / MIB);
    println!("{:<36} {:>9} {:>10} {:>12} {:>14}", "tool", "seconds", "MiB/s", "stored MiB", "peak RSS MiB");
    for outcome in backups {
        println!(
            "{:<36} {:>9.1} {:>10.1} {:>12.1} {:>14.1}",
            outcome.tool,
            outcome.seconds,
            size as f64 / MIB / outcome.seconds,
            outcome.stored as f64 / MIB,
            outcome.peak as f64 / MIB
        );
    }
    println!("\nrestore ({restore_note})");
    println!("{:<36} {:>9} {:>10} {:>12} {:>14}", "tool", "seconds", "MiB/s", "", "peak RSS MiB");
    for (tool, (seconds, peak)) in restores {
        println!(
            "{:<36} {:>9.1} {:>10.1} {:>12} {:>14.1}",
            tool,
            seconds,
            size as f64 / MIB / seconds,
            "",
            *peak as f64 / MIB
        );
    }
}
