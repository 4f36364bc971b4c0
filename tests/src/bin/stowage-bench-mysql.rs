//! `./dev bench`: a MariaDB database of at least STOWAGE_BENCH_GIB GiB (default 1) in
//! sysbench-shaped tables, backed up to the same S3 server three ways, one after the
//! other in one run, with time, throughput and peak memory side by side:
//!
//! - `stowage backup` with the mysql plugin (zstd level 3), on one connection (`jobs=1`)
//!   and on two sharing one consistent point (`jobs=2`);
//! - `mariadb-dump --single-transaction --quick | zstd -3`, uploaded as 8 MiB parts;
//! - `mydumper` (2 threads, compressed) into a directory, then its files uploaded.
//!
//! Then each is restored into an empty database: `stowage restore` (the plain keys of
//! big tables built after their rows, the default, and loaded with them,
//! `keys-after-data=off`), download | `zstd -d` | `mariadb`, and download + `myloader`
//! (2 threads), with the binary log as the others keep it (`--enable-binlog`) and as myloader leaves it by default (off for
//! its sessions; a restore then reaches no replica). Every restored database
//! is checked equal to the source (`CHECKSUM TABLE` of every table). Before each timed
//! run the server settles: the history the run before left purged, the pages it dirtied
//! written.
//!
//! Peak memory is that of the client processes, not of the server.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use stowage_tests::bench::{self, BUCKET, MIB, Outcome, Watch};
use stowage_tests::mariadb::{Mariadb, PASSWORD, USER};
use stowage_tests::seaweedfs::SeaweedFs;

const TABLES: u32 = 8;

/// Bytes one sysbench row takes in InnoDB, about (for sizing the dataset).
const ROW_BYTES: f64 = 185.0;

/// `CHECKSUM TABLE` of every table, for comparing databases.
fn checksums(server: &Mariadb, database: &str) -> anyhow::Result<String> {
    let tables: Vec<String> = (1..=TABLES).map(|n| format!("sbtest{n}")).collect();
    let sums = server.sql(database, &format!("CHECKSUM TABLE {}", tables.join(", ")))?;
    // The database name leads each line.
    Ok(sums.lines().map(|line| line.split_once('.').map_or(line, |(_, rest)| rest)).collect::<Vec<_>>().join("\n"))
}

/// One `information_schema.GLOBAL_STATUS` or `INNODB_METRICS` number of the server.
fn server_number(server: &Mariadb, query: &str) -> anyhow::Result<u64> {
    let value = server.sql("", query)?;
    value.trim().parse().with_context(|| format!("{query}: {value:?}"))
}

/// Wait until InnoDB has purged all the history the run before left (at most five
/// minutes), then written the pages it dirtied, the purge's included (at most one), so
/// that no timed run pays for the one before it. A restore leaves 1 GiB of pages to
/// write behind, and one loaded row by row (the `mariadb` client's, a transaction per
/// `INSERT`) a purge of every row, which took a core from the next run for a minute.
/// The history counts transactions, not rows: only none left is settled.
fn settle(server: &Mariadb) -> anyhow::Result<()> {
    let history = "SELECT COUNT FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len'";
    let dirty = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'";
    let started = Instant::now();
    while server_number(server, history)? > 0 {
        anyhow::ensure!(started.elapsed().as_secs() < 300, "InnoDB did not purge its history in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    server.sql("", "SET GLOBAL innodb_max_dirty_pages_pct = 0")?;
    let started = Instant::now();
    while server_number(server, dirty)? > 0 && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    server.sql("", "SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT")?;
    Ok(())
}

/// How the clients log in: the long options that mariadb, mariadb-dump, mydumper and
/// myloader all take.
fn login_args(server: &Mariadb) -> Vec<String> {
    vec![
        "--host=127.0.0.1".into(),
        format!("--port={}", server.port),
        format!("--user={USER}"),
        format!("--password={PASSWORD}"),
    ]
}

/// mydumper into a directory, then every file uploaded under `mydumper/`.
async fn mydumper_backup(server: &Mariadb, s3: &SeaweedFs) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut mydumper = Command::new("mydumper");
    mydumper
        .args(login_args(server))
        .args(["--database", "bench", "--threads", "2", "--compress", "--outputdir"])
        .arg(dir.path());
    let peak = bench::run_watched(mydumper, "mydumper (apt install mydumper)").await?;
    bench::upload_dir(s3, dir.path(), "mydumper/").await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Outcome {
        tool: "mydumper -t 2 -c + upload",
        seconds,
        stored: bench::stored_bytes(s3, "mydumper/").await?,
        peak,
    })
}

/// Download what mydumper stored and load it with myloader; without `binlog`, as myloader
/// does by default, with the binary log off for its sessions (`SET SQL_LOG_BIN=0`), which
/// `stowage restore` and the `mariadb` client leave on.
async fn myloader_restore(
    server: &Mariadb,
    s3: &SeaweedFs,
    database: &str,
    binlog: bool,
) -> anyhow::Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    bench::download_dir(s3, "mydumper/", dir.path()).await?;
    let mut myloader = Command::new("myloader");
    myloader
        .args(login_args(server))
        .args(["--source-db", "bench", "--database", database, "--threads", "2"])
        .args(binlog.then_some("--enable-binlog"))
        .arg("--directory")
        .arg(dir.path());
    let peak = bench::run_watched(myloader, "myloader").await?;
    Ok((started.elapsed().as_secs_f64(), peak))
}

/// download | zstd -d | mariadb.
async fn native_restore(server: &Mariadb, s3: &SeaweedFs, database: &str) -> anyhow::Result<(f64, u64)> {
    server.sql("", &format!("CREATE DATABASE {database}"))?;
    let started = Instant::now();
    let mut client = Command::new("mariadb")
        .args(login_args(server))
        .arg(database)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut zstd = Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(client.stdin.take().context("mariadb stdin")?)
        .spawn()?;
    let mut watch = Watch::new(&[zstd.id(), client.id()]);
    bench::download(s3, "native/dump.sql.zst", zstd.stdin.take().context("zstd stdin")?, &mut watch).await?;
    anyhow::ensure!(zstd.wait()?.success(), "zstd -d failed");
    anyhow::ensure!(client.wait()?.success(), "mariadb failed");
    Ok((started.elapsed().as_secs_f64(), watch.total()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let gib: f64 = std::env::var("STOWAGE_BENCH_GIB").ok().map(|v| v.parse()).transpose()?.unwrap_or(1.0);
    println!("==> MariaDB 10.11 and SeaweedFS on loopback");
    let server = Mariadb::start()?;
    let s3 = SeaweedFs::start()?;
    s3.create_bucket(BUCKET).await?;
    let rows = (gib * (1u64 << 30) as f64 / ROW_BYTES / f64::from(TABLES)) as u64;
    println!("==> generating {TABLES} sysbench tables of {rows} rows");
    server.sql("", "CREATE DATABASE bench")?;
    for n in 1..=TABLES {
        // sysbench's oltp table, its c and pad filled the way sysbench fills them; with the
        // checks off, InnoDB loads the empty table in bulk and leaves no history to purge.
        server.sql(
            "bench",
            &format!(
                "CREATE TABLE sbtest{n} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, \
                 c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_{n} (k)) ENGINE=InnoDB;
                 SET unique_checks = 0, foreign_key_checks = 0;
                 INSERT INTO sbtest{n} (k, c, pad) SELECT FLOOR(RAND() * {rows}), \
                 LEFT(REPEAT(CONCAT(LPAD(FLOOR(RAND() * 99999999999), 11, '0'), '-'), 10), 119), \
                 LEFT(REPEAT(CONCAT(LPAD(FLOOR(RAND() * 99999999999), 11, '0'), '-'), 5), 59) \
                 FROM seq_1_to_{rows};"
            ),
        )?;
    }
    let size: u64 = server
        .sql("", "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bench'")?
        .trim()
        .parse()?;
    println!("    {:.0} MiB in InnoDB (data and indexes)", size as f64 / MIB);
    let expected = checksums(&server, "bench")?;

    let cache = tempfile::tempdir()?;
    let env = bench::stowage_env(&s3, cache.path(), "mysql", &[])?;
    let url = server.url(USER, PASSWORD, "bench");
    let mut backups = Vec::new();
    // One connection, then two on one consistent point (option jobs).
    let runs = [("stowage (mysql plugin, jobs=1)", 1), ("stowage (mysql plugin, jobs=2)", 2)];
    for (tool, jobs) in runs {
        settle(&server)?;
        println!("==> stowage backup, jobs={jobs}");
        let url = format!("{url}?jobs={jobs}");
        backups.push(bench::stowage_backup(&s3, tool, "mysql", &url, &format!("stowage-{jobs}"), &env).await?);
    }
    settle(&server)?;
    println!("==> mariadb-dump --single-transaction | zstd -3 + upload");
    let mut dump = Command::new("mariadb-dump");
    dump.args(login_args(&server)).args(["--single-transaction", "--quick", "bench"]);
    let native = "mariadb-dump | zstd -3 + upload";
    backups.push(bench::native_backup(&s3, native, "native/dump.sql.zst", dump, true).await?);
    settle(&server)?;
    println!("==> mydumper + upload");
    backups.push(mydumper_backup(&server, &s3).await?);

    settle(&server)?;
    println!("==> stowage restore into an empty database");
    let stowage_restore =
        bench::stowage_restore("mysql", &server.url(USER, PASSWORD, "by_stowage"), "stowage-2", &env).await?;
    settle(&server)?;
    println!("==> stowage restore, keys loaded with the rows (keys-after-data=off)");
    let keys_with_rows = format!("{}?keys-after-data=off", server.url(USER, PASSWORD, "by_stowage_keys"));
    let stowage_keys_with_rows = bench::stowage_restore("mysql", &keys_with_rows, "stowage-2", &env).await?;
    settle(&server)?;
    println!("==> download | zstd -d | mariadb");
    let native_restore = native_restore(&server, &s3, "by_client").await?;
    settle(&server)?;
    println!("==> download + myloader --enable-binlog");
    let myloader_binlog = myloader_restore(&server, &s3, "by_myloader_binlog", true).await?;
    settle(&server)?;
    println!("==> download + myloader (binary log off)");
    let myloader_restore = myloader_restore(&server, &s3, "by_myloader", false).await?;
    for database in ["by_stowage", "by_stowage_keys", "by_client", "by_myloader_binlog", "by_myloader"] {
        anyhow::ensure!(
            checksums(&server, database)? == expected,
            "{database} differs from the source (CHECKSUM TABLE)"
        );
    }
    bench::print_comparison(
        "InnoDB data and indexes of the source",
        size,
        &backups,
        &[
            ("stowage restore", stowage_restore),
            ("stowage restore, keys-after-data=off", stowage_keys_with_rows),
            ("download | zstd -d | mariadb", native_restore),
            ("download + myloader -t 2 --enable-binlog", myloader_binlog),
            ("download + myloader -t 2 (binary log off)", myloader_restore),
        ],
        "the same database; CHECKSUM TABLE of every table checked equal",
    );
    Ok(())
}
