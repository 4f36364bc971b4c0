//! `./dev bench`: back up a PostgreSQL database of about STOWAGE_BENCH_GIB GiB (default
//! 1.4): pgbench's tables (`pgbench -i`, scale 50 per GiB) and a table of jsonb, text and
//! bytea documents with a secondary index, to the same S3 server four ways, one after the
//! other in one run, and print time, throughput and peak memory side by side:
//!
//! - `stowage backup` with the postgres plugin (zstd level 3, 8 MiB parts, 4 in flight),
//!   on one session (`jobs=1`) and on two sharing one snapshot (`jobs=2`);
//! - `pg_dump | zstd -3`, uploaded as 8 MiB multipart parts, 4 in flight (what
//!   `aws s3 cp -` does);
//! - `pg_dump -Fd -j 2` (two sessions, its built-in compression) into a directory, then
//!   its files uploaded.
//!
//! Then it restores the stowage backups and the native dumps into empty databases
//! (`stowage restore` against download | `zstd -d` | `psql` and download + `pg_restore
//! -j 2`) and checks every table's row count.
//!
//! Peak memory is the sum of the client processes' VmHWM (the server's backends are not
//! counted); the native pipelines' upload buffers (up to 4 parts of 8 MiB in flight) are
//! added to theirs.

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;
use stowage_tests::bench::{self, MIB, Outcome, Watch};
use stowage_tests::postgres::{PASSWORD, Postgres, SCRAM_USER};
use stowage_tests::seaweedfs::SeaweedFs;

/// Write out the pages the run before dirtied now, not during the next tool measured
/// (the first tool after the fill came out 3 s slower than the same tool later).
fn settle(postgres: &Postgres) -> anyhow::Result<()> {
    postgres.psql("postgres", "CHECKPOINT")?;
    anyhow::ensure!(std::process::Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

/// The tables of the database, each with its row count, one per line.
const ROW_COUNTS: &str = "SELECT 'pgbench_accounts ' || count(*) FROM pgbench_accounts
    UNION ALL SELECT 'pgbench_branches ' || count(*) FROM pgbench_branches
    UNION ALL SELECT 'pgbench_tellers ' || count(*) FROM pgbench_tellers
    UNION ALL SELECT 'pgbench_history ' || count(*) FROM pgbench_history
    UNION ALL SELECT 'documents ' || count(*) FROM documents";

/// Fill database `bench` with about `gib` GiB: pgbench's tables and their keys, and
/// documents (about 1 KiB each) with a key and an index on a jsonb field; returns its
/// size on disk.
fn fill(postgres: &Postgres, gib: f64) -> anyhow::Result<u64> {
    let scale = (gib * 50.0).round().max(1.0);
    let mut pgbench = postgres.program("pgbench", "bench");
    pgbench.args(["-i", "-q", "-s"]).arg(scale.to_string()).stdout(Stdio::null()).stderr(Stdio::null());
    anyhow::ensure!(pgbench.status()?.success(), "pgbench -i failed");
    let documents = (gib * 300_000.0).round() as u64;
    postgres.psql(
        "bench",
        &format!(
            "CREATE TABLE documents (id bigint PRIMARY KEY, body jsonb NOT NULL, note text, digest bytea);
             INSERT INTO documents SELECT i,
                    jsonb_build_object('customer', 'customer ' || (i % 5000), 'lines',
                        jsonb_build_array(md5(i::text), md5((i + 1)::text), i * 1.5), 'paid', i % 3 = 0),
                    repeat(md5((i * 7)::text), 12),
                    decode(repeat(md5((i * 11)::text), 4), 'hex')
             FROM generate_series(1, {documents}) AS i;
             CREATE INDEX documents_customer ON documents ((body ->> 'customer'));
             VACUUM ANALYZE documents"
        ),
    )?;
    Ok(postgres.psql("bench", "SELECT pg_database_size('bench')")?.trim().parse()?)
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

/// `pg_dump -Fd -j 2` into a directory, then every file uploaded under `directory/`.
async fn backup_directory(s3: &SeaweedFs, postgres: &Postgres) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let dump = dir.path().join("dump");
    let started = Instant::now();
    let mut pg_dump = postgres.client("pg_dump", "bench");
    pg_dump.args(["-Fd", "-j", "2", "-f"]).arg(&dump);
    let peak = bench::run_watched(pg_dump, "pg_dump -Fd -j 2").await?;
    bench::upload_dir(s3, &dump, "directory/").await?;
    Ok(Outcome {
        tool: "pg_dump -Fd -j 2 + upload",
        seconds: started.elapsed().as_secs_f64(),
        stored: bench::stored_bytes(s3, "directory/").await?,
        peak,
    })
}

/// Download what `pg_dump -Fd` stored and replay it with `pg_restore -j 2` (two sessions,
/// as `jobs=2`).
async fn restore_directory(s3: &SeaweedFs, postgres: &Postgres) -> anyhow::Result<(f64, u64)> {
    postgres.psql("postgres", "CREATE DATABASE restored_directory")?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    bench::download_dir(s3, "directory/", dir.path()).await?;
    let mut pg_restore = postgres.client("pg_restore", "restored_directory");
    pg_restore.args(["-j", "2"]).arg(dir.path());
    let peak = bench::run_watched(pg_restore, "pg_restore -j 2").await?;
    Ok((started.elapsed().as_secs_f64(), peak))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let gib: f64 = std::env::var("STOWAGE_BENCH_GIB").ok().map(|v| v.parse()).transpose()?.unwrap_or(1.4);
    println!("==> PostgreSQL 15 and SeaweedFS on loopback");
    let postgres = Postgres::start()?;
    let s3 = SeaweedFs::start()?;
    s3.create_bucket(bench::BUCKET).await?;
    postgres.psql("postgres", "CREATE DATABASE bench")?;
    println!("==> filling database bench with about {gib} GiB (pgbench -i, documents)");
    let size = fill(&postgres, gib)?;
    let rows = postgres.psql("bench", ROW_COUNTS)?;
    println!("    {:.0} MiB on disk; rows: {}", size as f64 / MIB, rows.trim().replace('\n', ", "));

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
    let pg_dump = postgres.client("pg_dump", "bench");
    outcomes
        .push(bench::native_backup(&s3, "pg_dump | zstd -3 + upload", "native/plain.sql.zst", pg_dump, true).await?);
    settle(&postgres)?;
    println!("==> pg_dump -Fd -j 2 + upload");
    outcomes.push(backup_directory(&s3, &postgres).await?);
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
    let directory_restore = restore_directory(&s3, &postgres).await?;
    for database in ["restored_stowage_1", "restored_stowage_2", "restored_native", "restored_directory"] {
        let restored = postgres.psql(database, ROW_COUNTS)?;
        anyhow::ensure!(restored == rows, "{database} has other row counts: {restored}");
    }
    restores.push(("download | zstd -d | psql", native_restore));
    restores.push(("download + pg_restore -j 2", directory_restore));
    bench::print_comparison(
        "the database on disk",
        size,
        &outcomes,
        &restores,
        "into an empty database (stowage creates its own), with every key and index; row counts checked",
    );
    Ok(())
}
