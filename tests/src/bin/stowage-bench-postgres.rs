//! `./dev bench`: back up one PostgreSQL table of at least STOWAGE_BENCH_GIB GiB (default 1)
//! to the same S3 server four ways, one after the other in one run, and print time,
//! throughput and peak memory side by side:
//!
//! - `stowage backup` with the postgres plugin (zstd level 3, 8 MiB parts, 4 in flight),
//!   on one session (`jobs=1`) and on two sharing one snapshot (`jobs=2`);
//! - `pg_dump | zstd -3`, uploaded as 8 MiB multipart parts, 4 in flight (what
//!   `aws s3 cp -` does);
//! - `pg_dump -Fc` (its built-in compression), uploaded the same way.
//!
//! Then it restores the stowage backups and the native dumps into empty databases
//! (`stowage restore` against download | `zstd -d` | `psql` and download + `pg_restore
//! -j 2`) and checks the row counts. The table has a primary key and two more indexes.
//!
//! Peak memory is the sum of the client processes' VmHWM (the server's backend is the
//! same for all three and not counted); the native pipelines' upload buffers (up to 4
//! parts of 8 MiB in flight) are added to theirs.

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;
use stowage_tests::bench::{self, MIB, Outcome, Watch};
use stowage_tests::postgres::{PASSWORD, Postgres, SCRAM_USER};
use stowage_tests::seaweedfs::SeaweedFs;

/// Fill `bench` until it holds `bytes` on disk.
/// Write out the pages the run before dirtied now, not during the next tool measured
/// (the first tool after the fill came out 3 s slower than the same tool later).
fn settle(postgres: &Postgres) -> anyhow::Result<()> {
    postgres.psql("postgres", "CHECKPOINT")?;
    anyhow::ensure!(std::process::Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

fn create_table(postgres: &Postgres, bytes: u64) -> anyhow::Result<u64> {
    postgres.psql(
        "bench",
        "CREATE TABLE bench (id bigint PRIMARY KEY, name text, payload text, amount numeric(12,2), at timestamptz)",
    )?;
    let mut start = 0u64;
    loop {
        let size: u64 = postgres.psql("bench", "SELECT pg_relation_size('bench')")?.trim().parse()?;
        if size >= bytes {
            // Two secondary indexes besides the key, as tables in production have: a
            // restore builds them after the rows.
            postgres.psql("bench", "CREATE INDEX bench_at ON bench (at); CREATE INDEX bench_name ON bench (name)")?;
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
    bench::download(s3, "native/plain.sql.zst", zstd.stdin.take().context("zstd stdin")?, &mut watch).await?;
    anyhow::ensure!(zstd.wait()?.success() && psql.wait()?.success(), "zstd -d | psql failed");
    Ok((started.elapsed().as_secs_f64(), watch.total()))
}

/// Download the `pg_dump -Fc` object to a file and replay it with `pg_restore -j 2` (two
/// sessions, as `jobs=2`; pg_restore needs a file to work in parallel).
async fn restore_custom(s3: &SeaweedFs, postgres: &Postgres) -> anyhow::Result<(f64, u64)> {
    postgres.psql("postgres", "CREATE DATABASE restored_custom")?;
    let dir = tempfile::tempdir()?;
    let dump = dir.path().join("custom.dump");
    let started = Instant::now();
    let mut watch = Watch::new(&[]);
    bench::download(s3, "native/custom.dump", std::fs::File::create(&dump)?, &mut watch).await?;
    let mut pg_restore = postgres.client("pg_restore", "restored_custom");
    pg_restore.args(["-j", "2"]).arg(&dump);
    let peak = bench::run_watched(pg_restore, "pg_restore -j 2").await?;
    Ok((started.elapsed().as_secs_f64(), peak.max(watch.total())))
}

async fn run_native(
    s3: &SeaweedFs,
    postgres: &Postgres,
    tool: &'static str,
    key: &str,
    custom_format: bool,
) -> anyhow::Result<Outcome> {
    let mut pg_dump = postgres.client("pg_dump", "bench");
    if custom_format {
        pg_dump.arg("-Fc");
    }
    bench::native_backup(s3, tool, key, pg_dump, !custom_format).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let gib: f64 = std::env::var("STOWAGE_BENCH_GIB").ok().map(|v| v.parse()).transpose()?.unwrap_or(1.0);
    println!("==> PostgreSQL 15 and SeaweedFS on loopback");
    let postgres = Postgres::start()?;
    let s3 = SeaweedFs::start()?;
    s3.create_bucket(bench::BUCKET).await?;
    postgres.psql("postgres", "CREATE DATABASE bench")?;
    println!("==> filling table bench with at least {gib} GiB");
    let table = create_table(&postgres, (gib * (1u64 << 30) as f64) as u64)?;
    let rows = postgres.psql("bench", "SELECT count(*) FROM bench")?;
    println!("    {:.0} MiB on disk, {} rows", table as f64 / MIB, rows.trim());

    let cache = tempfile::tempdir()?;
    let password = [("STOWAGE_DATABASE_PASSWORD".to_owned(), PASSWORD.to_owned())];
    let env = bench::stowage_env(&s3, cache.path(), "postgres", &password)?;
    let mut outcomes = Vec::new();
    // One session, then two on one snapshot (option jobs; its tables in pieces of chunk-size).
    let runs = [
        ("stowage (postgres plugin, jobs=1)", "stowage restore, jobs=1", 1),
        ("stowage (postgres plugin, jobs=2)", "stowage restore, jobs=2", 2),
    ];
    for (tool, _, jobs) in runs {
        settle(&postgres)?;
        println!("==> stowage backup, jobs={jobs}");
        let url = format!("{}?jobs={jobs}", postgres.url(SCRAM_USER, "bench"));
        outcomes.push(bench::stowage_backup(&s3, tool, "postgres", &url, &format!("stowage-{jobs}"), &env).await?);
    }
    settle(&postgres)?;
    println!("==> pg_dump | zstd -3 + upload");
    outcomes.push(run_native(&s3, &postgres, "pg_dump | zstd -3 + upload", "native/plain.sql.zst", false).await?);
    settle(&postgres)?;
    println!("==> pg_dump -Fc + upload");
    outcomes.push(run_native(&s3, &postgres, "pg_dump -Fc + upload", "native/custom.dump", true).await?);
    let mut restores = Vec::new();
    for (_, tool, jobs) in runs {
        settle(&postgres)?;
        println!("==> stowage restore, jobs={jobs}");
        let url = format!("{}?jobs={jobs}", postgres.url(SCRAM_USER, &format!("restored_stowage_{jobs}")));
        restores.push((tool, bench::stowage_restore("postgres", &url, &format!("stowage-{jobs}"), &env).await?));
    }
    settle(&postgres)?;
    println!("==> download | zstd -d | psql");
    let native_restore = restore_native(&s3, &postgres).await?;
    settle(&postgres)?;
    println!("==> download + pg_restore -j 2");
    let custom_restore = restore_custom(&s3, &postgres).await?;
    for database in ["restored_stowage_1", "restored_stowage_2", "restored_native", "restored_custom"] {
        let restored = postgres.psql(database, "SELECT count(*) FROM bench")?;
        anyhow::ensure!(restored == rows, "{database} has {} rows, not {}", restored.trim(), rows.trim());
    }
    restores.push(("download | zstd -d | psql", native_restore));
    restores.push(("download + pg_restore -j 2", custom_restore));
    bench::print_comparison(
        "the table on disk",
        table,
        &outcomes,
        &restores,
        "into an empty database (stowage creates its own), with the primary key and two indexes",
    );
    Ok(())
}
