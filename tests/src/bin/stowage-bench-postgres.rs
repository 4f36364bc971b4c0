//! `./dev bench`: back up one PostgreSQL table of at least STOWAGE_BENCH_GIB GiB (default 1)
//! to the same S3 server three ways, one after the other in one run, and print time,
//! throughput and peak memory side by side:
//!
//! - `stowage backup` with the postgres plugin (zstd level 3, 8 MiB parts, 4 in flight);
//! - `pg_dump | zstd -3`, uploaded as 8 MiB multipart parts, 4 in flight (what
//!   `aws s3 cp -` does);
//! - `pg_dump -Fc` (its built-in compression), uploaded the same way.
//!
//! Then it restores the stowage backup and the `pg_dump | zstd` dump into empty databases
//! (`stowage restore` against download | `zstd -d` | `psql`) and checks the row counts.
//!
//! Peak memory is the sum of the client processes' VmHWM (the server's backend is the
//! same for all three and not counted); the native pipelines' upload buffers (up to 4
//! parts of 8 MiB in flight) are added to theirs.

use std::io::{Read, Write};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use stowage_tests::postgres::{PASSWORD, Postgres, SCRAM_USER};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::command;
use tokio::task::JoinSet;

const BUCKET: &str = "bench";
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;
const MIB: f64 = (1 << 20) as f64;

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
struct Watch {
    peaks: Vec<(u32, u64)>,
}

impl Watch {
    fn new(pids: &[u32]) -> Self {
        Watch { peaks: pids.iter().map(|&pid| (pid, 0)).collect() }
    }

    fn sample(&mut self) {
        for (pid, peak) in &mut self.peaks {
            *peak = (*peak).max(peak_rss(*pid));
        }
    }

    fn total(&self) -> u64 {
        self.peaks.iter().map(|(_, peak)| peak).sum()
    }
}

struct Outcome {
    tool: &'static str,
    seconds: f64,
    stored: u64,
    peak: u64,
}

/// Fill `bench` until it holds `bytes` on disk.
fn create_table(postgres: &Postgres, bytes: u64) -> anyhow::Result<u64> {
    postgres.psql(
        "bench",
        "CREATE TABLE bench (id bigint PRIMARY KEY, name text, payload text, amount numeric(12,2), at timestamptz)",
    )?;
    let mut start = 0u64;
    loop {
        let size: u64 = postgres.psql("bench", "SELECT pg_relation_size('bench')")?.trim().parse()?;
        if size >= bytes {
            postgres.psql("bench", "VACUUM ANALYZE bench")?;
            return Ok(size);
        }
        let end = start + 1_000_000;
        postgres.psql(
            "bench",
            &format!(
                "INSERT INTO bench SELECT i, 'customer ' || md5(i::text), repeat(md5((i * 7)::text), 4),
                        (i % 100000) / 100.0, timestamptz '2026-01-01' + i * interval '1 second'
                 FROM generate_series({start}, {end} - 1) AS i"
            ),
        )?;
        start = end;
    }
}

async fn stored_bytes(s3: &SeaweedFs, prefix: &str) -> anyhow::Result<u64> {
    let listed = s3.client().list_objects_v2().bucket(BUCKET).prefix(prefix).send().await?;
    Ok(listed.contents().iter().filter_map(|object| object.size()).map(|size| size as u64).sum())
}

/// Environment for `stowage` with a warm plugin cache (the native tools compile nothing;
/// a cold compile of the postgres plugin takes about 0.25 s).
fn stowage_env(s3: &SeaweedFs, cache: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = s3.env();
    env.push(("STOWAGE_DATABASE_PASSWORD".into(), PASSWORD.into()));
    env.push(("STOWAGE_LOG".into(), "warn".into()));
    env.push(("STOWAGE_CACHE_DIR".into(), cache.display().to_string()));
    let warmed = command(["plugin", "inspect", "--plugin", "postgres"], &env)?.output()?;
    anyhow::ensure!(warmed.status.success(), "stowage plugin inspect failed");
    Ok(env)
}

/// Run `stowage` to completion; returns seconds and peak memory.
async fn stowage_watched(args: &[&str], env: &[(String, String)]) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut child = command(args, env)?.stdout(Stdio::null()).spawn()?;
    let mut watch = Watch::new(&[child.id()]);
    let status = loop {
        watch.sample();
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(status.success(), "stowage {} failed", args[0]);
    Ok((started.elapsed().as_secs_f64(), watch.total()))
}

async fn run_stowage(s3: &SeaweedFs, postgres: &Postgres, env: &[(String, String)]) -> anyhow::Result<Outcome> {
    let url = postgres.url(SCRAM_USER, "bench");
    let repo = format!("s3://{BUCKET}/stowage");
    let (seconds, peak) =
        stowage_watched(&["backup", "--plugin", "postgres", "--database", &url, "--repo", &repo], env).await?;
    Ok(Outcome { tool: "stowage (postgres plugin)", seconds, stored: stored_bytes(s3, "stowage/").await?, peak })
}

async fn restore_stowage(postgres: &Postgres, env: &[(String, String)]) -> anyhow::Result<(f64, u64)> {
    let url = postgres.url(SCRAM_USER, "restored_stowage");
    let repo = format!("s3://{BUCKET}/stowage");
    stowage_watched(&["restore", "--plugin", "postgres", "--database", &url, "--repo", &repo], env).await
}

/// Download the `pg_dump | zstd` object and replay it: `aws s3 cp - | zstd -d | psql`.
async fn restore_native(s3: &SeaweedFs, postgres: &Postgres) -> anyhow::Result<(f64, u64)> {
    postgres.psql("postgres", "CREATE DATABASE restored_native")?;
    let started = Instant::now();
    let mut psql = postgres
        .client("psql", "restored_native")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut zstd = std::process::Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(psql.stdin.take().context("psql stdin")?))
        .spawn()?;
    let mut watch = Watch::new(&[zstd.id(), psql.id()]);
    let mut body = s3.client().get_object().bucket(BUCKET).key("native/plain.sql.zst").send().await?.body;
    let mut input = zstd.stdin.take().context("zstd stdin")?;
    while let Some(bytes) = body.next().await {
        let bytes = bytes?;
        tokio::task::block_in_place(|| input.write_all(&bytes))?;
        watch.sample();
    }
    drop(input);
    anyhow::ensure!(zstd.wait()?.success() && psql.wait()?.success(), "zstd -d | psql failed");
    Ok((started.elapsed().as_secs_f64(), watch.total()))
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

async fn run_native(
    s3: &SeaweedFs,
    postgres: &Postgres,
    tool: &'static str,
    key: &str,
    custom_format: bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut pg_dump = postgres.client("pg_dump", "bench");
    if custom_format {
        pg_dump.arg("-Fc");
    }
    let mut pg_dump = pg_dump.stdout(Stdio::piped()).spawn()?;
    let mut children: Vec<Child> = Vec::new();
    let output = if custom_format {
        pg_dump.stdout.take().context("pg_dump stdout")?
    } else {
        let input = pg_dump.stdout.take().context("pg_dump stdout")?;
        let mut zstd =
            std::process::Command::new("zstd").args(["-3", "-q", "-c"]).stdin(input).stdout(Stdio::piped()).spawn()?;
        let output = zstd.stdout.take().context("zstd stdout")?;
        children.push(zstd);
        output
    };
    children.insert(0, pg_dump);
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let gib: f64 = std::env::var("STOWAGE_BENCH_GIB").ok().map(|v| v.parse()).transpose()?.unwrap_or(1.0);
    println!("==> PostgreSQL 15 and SeaweedFS on loopback");
    let postgres = Postgres::start()?;
    let s3 = SeaweedFs::start()?;
    s3.create_bucket(BUCKET).await?;
    postgres.psql("postgres", "CREATE DATABASE bench")?;
    println!("==> filling table bench with at least {gib} GiB");
    let table = create_table(&postgres, (gib * (1u64 << 30) as f64) as u64)?;
    let rows = postgres.psql("bench", "SELECT count(*) FROM bench")?;
    println!("    {:.0} MiB on disk, {} rows", table as f64 / MIB, rows.trim());

    let cache = tempfile::tempdir()?;
    let env = stowage_env(&s3, cache.path())?;
    let mut outcomes = Vec::new();
    println!("==> stowage backup");
    outcomes.push(run_stowage(&s3, &postgres, &env).await?);
    println!("==> pg_dump | zstd -3 + upload");
    outcomes.push(run_native(&s3, &postgres, "pg_dump | zstd -3 + upload", "native/plain.sql.zst", false).await?);
    println!("==> pg_dump -Fc + upload");
    outcomes.push(run_native(&s3, &postgres, "pg_dump -Fc + upload", "native/custom.dump", true).await?);
    println!("==> stowage restore");
    let stowage_restore = restore_stowage(&postgres, &env).await?;
    println!("==> download | zstd -d | psql");
    let native_restore = restore_native(&s3, &postgres).await?;
    for database in ["restored_stowage", "restored_native"] {
        let restored = postgres.psql(database, "SELECT count(*) FROM bench")?;
        anyhow::ensure!(restored == rows, "{database} has {} rows, not {}", restored.trim(), rows.trim());
    }

    println!("\nbackup of {:.0} MiB", table as f64 / MIB);
    println!("{:<30} {:>9} {:>14} {:>12} {:>14}", "tool", "seconds", "table MiB/s", "stored MiB", "peak RSS MiB");
    for outcome in &outcomes {
        println!(
            "{:<30} {:>9.1} {:>14.1} {:>12.1} {:>14.1}",
            outcome.tool,
            outcome.seconds,
            table as f64 / MIB / outcome.seconds,
            outcome.stored as f64 / MIB,
            outcome.peak as f64 / MIB
        );
    }
    println!("\nrestore into an empty database (with the primary key index)");
    println!("{:<30} {:>9} {:>14} {:>12} {:>14}", "tool", "seconds", "table MiB/s", "", "peak RSS MiB");
    for (tool, (seconds, peak)) in [("stowage restore", stowage_restore), ("download | zstd -d | psql", native_restore)]
    {
        println!(
            "{:<30} {:>9.1} {:>14.1} {:>12} {:>14.1}",
            tool,
            seconds,
            table as f64 / MIB / seconds,
            "",
            peak as f64 / MIB
        );
    }
    Ok(())
}
