//! The Redis plugin against real Redis 7.0 servers and a real S3 server: every type and
//! encoding round-trips exactly, the stored `dump.rdb` is what a stopped server loads,
//! a backup under writes is one instant, users without replication rights fall back to
//! SCAN with a warning, and a damaged backup never costs a target its data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stowage_tests::redis::Redis;
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, run};
use stowage_tests::wait_until;

fn fixture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/redis/every-type.redis");
    std::fs::read_to_string(path).expect("fixture")
}

fn stowage(args: &[&str], env: &[(String, String)]) -> Run {
    run(args, env).expect("run stowage")
}

/// A server loaded with the fixture; LRU eviction makes the RDB carry idle times.
fn source() -> Redis {
    let redis = Redis::start(&["--maxmemory-policy", "allkeys-lru"]).expect("redis");
    redis.pipe(0, &fixture()).expect("load the fixture");
    redis
}

/// The artifact of backup `id` in file repository `repo`, decompressed.
fn stored_rdb(repo: &Path, id: &str) -> PathBuf {
    let compressed = repo.join("local/default").join(id).join("data/dump.rdb.zst");
    let plain = repo.join(format!("{id}.rdb"));
    let status = std::process::Command::new("zstd").arg("-dqf").arg(&compressed).arg("-o").arg(&plain).status();
    assert!(status.expect("zstd").success(), "decompress {}", compressed.display());
    plain
}

#[test]
fn every_type_and_encoding_round_trips_through_s3() {
    let source = source();
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let env = s3.env();
    let repo = "s3://backups/redis";

    let backup = stowage(&["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", repo], &env);
    backup.ok().expect("backup");

    let target = Redis::start(&[]).expect("target");
    let restore = ["restore", "--plugin", "redis", "--database", &target.url(None), "--repo", repo];
    let restored = stowage(&restore, &env).ok().expect("restore");
    assert!(restored.stdout.contains("30 keys in 3 databases and 1 function libraries"), "{}", restored.stdout);
    let expected = source.state().expect("source state");
    assert_eq!(target.state().expect("target state"), expected);
    assert!(expected.contains("db5 expiring:in-db5: string | embstr"), "{expected}");
    assert!(expected.contains("consumers") && expected.contains("alice"), "{expected}");
    let echo = target.cli(&["FCALL", "fixture_echo", "0", "still works"]).expect("function");
    assert_eq!(echo.trim(), "still works");

    // A non-empty target is refused and keeps what it has...
    target.cli(&["SET", "only-in-target", "1"]).expect("write to target");
    let refused = stowage(&restore, &env).failed().expect("restore into a non-empty server");
    assert!(refused.stderr.contains("has 31 keys and 1 function libraries"), "{}", refused.stderr);
    assert_eq!(target.cli(&["GET", "only-in-target"]).expect("get").trim(), "1");
    // ...unless replace is asked for: then it becomes the backup, nothing more.
    let replace = ["restore", "--replace", "--plugin", "redis", "--database", &target.url(None), "--repo", repo];
    stowage(&replace, &env).ok().expect("restore --replace");
    assert_eq!(target.state().expect("target state"), expected);
}

#[test]
fn the_stored_rdb_is_what_a_stopped_server_loads_in_both_transfer_forms() {
    let source = source();
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let backup = ["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", &repo_url];
    let expected = source.state().expect("source state");
    // On disk first (the server announces the length), then diskless (an EOF marker).
    for diskless in ["no", "yes"] {
        source.cli(&["CONFIG", "SET", "repl-diskless-sync", diskless]).expect("config");
        source.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]).expect("config");
        let id = stowage(&backup, &[]).ok().expect("backup").stdout.trim().to_owned();
        let loaded = Redis::start_from_rdb(&stored_rdb(repo.path(), &id)).expect("server from dump.rdb");
        assert_eq!(loaded.state().expect("loaded state"), expected, "repl-diskless-sync {diskless}");
    }
}

#[test]
fn a_backup_under_writes_is_one_instant() {
    let source = Redis::start(&["--repl-diskless-sync-delay", "0"]).expect("redis");
    // Enough data that the snapshot takes a while to stream.
    source.cli(&["DEBUG", "POPULATE", "300000", "filler", "200"]).expect("populate");
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = source.connect().expect("connect");
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let transaction: [&[&str]; 4] = [&["MULTI"], &["INCR", "counter"], &["RPUSH", "log", "entry"], &["EXEC"]];
            while !stop.load(Ordering::Relaxed) {
                // +OK, +QUEUED, +QUEUED, *2, :counter, :length
                let replies = client.round_trip(&transaction, 6).expect("transaction");
                assert_eq!(replies[4][1..], replies[5][1..], "{replies:?}");
            }
        })
    };
    wait_until("the writer runs", Duration::from_secs(10), || {
        source.cli(&["GET", "counter"]).map(|n| n.trim().parse::<u64>().unwrap_or(0) > 100).unwrap_or(false)
    })
    .expect("writer");

    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    stowage(&["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", &repo_url], &[])
        .ok()
        .expect("backup");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");

    let target = Redis::start(&[]).expect("target");
    stowage(&["restore", "--plugin", "redis", "--database", &target.url(None), "--repo", &repo_url], &[])
        .ok()
        .expect("restore");
    let counter: u64 = target.cli(&["GET", "counter"]).expect("counter").trim().parse().expect("a number");
    let length: u64 = target.cli(&["LLEN", "log"]).expect("log").trim().parse().expect("a number");
    let final_counter: u64 = source.cli(&["GET", "counter"]).expect("counter").trim().parse().expect("a number");
    assert_eq!(counter, length, "the counter and the log agree: one instant");
    assert!(counter > 100 && counter < final_counter, "{counter} of {final_counter}: writes went on");
    assert_eq!(target.cli(&["DBSIZE"]).expect("dbsize").trim(), "300002");
}

#[test]
fn a_user_without_replication_rights_is_read_key_by_key_with_a_warning() {
    let source = source();
    let acl = ["ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-sync", "-psync"];
    source.cli(&acl).expect("acl user");
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let app = source.url(Some(("app", "app-secret")));

    let backup = stowage(&["backup", "--plugin", "redis", "--database", &app, "--repo", &repo_url], &[]);
    let backup = backup.ok().expect("backup by SCAN");
    assert!(backup.stderr.contains("NOT a point-in-time snapshot"), "{}", backup.stderr);
    assert!(backup.stderr.contains("no permissions to run the 'psync' command"), "{}", backup.stderr);
    let target = Redis::start(&[]).expect("target");
    stowage(&["restore", "--plugin", "redis", "--database", &target.url(None), "--repo", &repo_url], &[])
        .ok()
        .expect("restore");
    assert_eq!(target.state().expect("target"), source.state().expect("source"));
    // What SCAN wrote is an RDB a stopped server loads, too.
    let id = backup.stdout.trim();
    let loaded = Redis::start_from_rdb(&stored_rdb(repo.path(), id)).expect("server from dump.rdb");
    assert_eq!(loaded.state().expect("loaded"), source.state().expect("source"));

    let strict =
        ["backup", "--plugin", "redis", "--option", "method=replication", "--database", &app, "--repo", &repo_url];
    let refused = stowage(&strict, &[]).failed().expect("replication only");
    assert!(refused.stderr.contains("refuses replication to this user"), "{}", refused.stderr);
    let wrong = source.url(Some(("app", "wrong")));
    let denied = stowage(&["backup", "--plugin", "redis", "--database", &wrong, "--repo", &repo_url], &[]);
    let denied = denied.failed().expect("wrong password");
    assert!(denied.stderr.contains("authentication failed: user \"app\""), "{}", denied.stderr);
    assert!(!denied.stderr.contains("panicked"), "{}", denied.stderr);
}

#[test]
fn a_damaged_or_truncated_backup_never_flushes_the_target() {
    let source = source();
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let backup = ["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", &repo_url];
    let target = Redis::start(&[]).expect("target");
    target.cli(&["SET", "precious", "data"]).expect("write");
    let flip: fn(&mut Vec<u8>) = |bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
    };
    let truncate: fn(&mut Vec<u8>) = |bytes| bytes.truncate(bytes.len() / 2);
    for damage in [flip, truncate] {
        let id = stowage(&backup, &[]).ok().expect("backup").stdout.trim().to_owned();
        let stored = repo.path().join("local/default").join(&id).join("data/dump.rdb.zst");
        let mut bytes = std::fs::read(&stored).expect("stored artifact");
        damage(&mut bytes);
        std::fs::write(&stored, bytes).expect("damage it");

        let replace =
            ["restore", "--replace", "--plugin", "redis", "--database", &target.url(None), "--repo", &repo_url];
        let failed = stowage(&replace, &[]).failed().expect("restore of a damaged backup");
        assert!(failed.stderr.contains("artifact dump.rdb is corrupt"), "{}", failed.stderr);
        assert!(
            !failed.stderr.contains("flushing"),
            "nothing is flushed before the backup is verified: {}",
            failed.stderr
        );
        assert_eq!(target.cli(&["GET", "precious"]).expect("get").trim(), "data");
        assert_eq!(target.cli(&["DBSIZE"]).expect("dbsize").trim(), "1");
    }
}

#[test]
fn a_target_that_refuses_part_of_the_backup_is_emptied_again() {
    // Keys in database 5, many batches of them: a target with 4 databases refuses the
    // SELECT while later batches are in flight.
    let source = source();
    let many: String = (0..20_000).map(|i| format!("SET many:{i} value-{i}\n")).collect();
    source.pipe(5, &many).expect("keys in db5");
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    stowage(&["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", &repo_url], &[])
        .ok()
        .expect("backup");

    let target = Redis::start(&["--databases", "4"]).expect("target with 4 databases");
    let restore = ["restore", "--plugin", "redis", "--database", &target.url(None), "--repo", &repo_url];
    let failed = stowage(&restore, &[]).failed().expect("restore into too few databases");
    assert!(failed.stderr.contains("SELECT 5") && failed.stderr.contains("fewer databases"), "{}", failed.stderr);
    assert!(failed.stderr.contains("the target was emptied again"), "{}", failed.stderr);
    // Emptied indeed: the cleanup read its own replies, not those of the batches in flight.
    let keyspace = target.cli(&["INFO", "keyspace"]).expect("keyspace");
    assert!(!keyspace.lines().any(|line| line.starts_with("db")), "no keys left: {keyspace}");
    assert_eq!(target.cli(&["FUNCTION", "LIST"]).expect("functions").trim(), "", "no function library left");
}

#[test]
fn an_unreachable_or_dying_server_fails_the_backup_and_commits_nothing() {
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let nobody = format!("redis://127.0.0.1:{}/0", stowage_tests::free_port().expect("port"));
    let refused = stowage(&["backup", "--plugin", "redis", "--database", &nobody, "--repo", &repo_url], &[]);
    let refused = refused.failed().expect("backup of nothing");
    assert!(refused.stderr.contains("cannot connect to the database: Redis at 127.0.0.1:"), "{}", refused.stderr);

    // A transfer slowed down to ~10 s (1 ms per key), and the server killed in the middle.
    let mut source = Redis::start(&["--repl-diskless-sync-delay", "0"]).expect("redis");
    source.cli(&["DEBUG", "POPULATE", "10000", "key", "100"]).expect("populate");
    source.cli(&["CONFIG", "SET", "rdb-key-save-delay", "1000"]).expect("slow down");
    let backup = ["backup", "--plugin", "redis", "--database", &source.url(None), "--repo", &repo_url];
    let running = stowage_tests::stowage::command(backup, &[])
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start stowage");
    wait_until("the transfer runs", Duration::from_secs(60), || {
        let persistence = source.cli(&["INFO", "persistence"]).unwrap_or_default();
        persistence.contains("rdb_bgsave_in_progress:1")
    })
    .expect("transfer");
    std::thread::sleep(Duration::from_secs(1));
    source.crash().expect("kill the server");
    let output = running.wait_with_output().expect("run stowage");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("the connection to Redis was lost"), "{stderr}");
    let listed = stowage(&["list", "--repo", &repo_url], &[]).ok().expect("list");
    assert!(!listed.stdout.contains(" complete "), "{}", listed.stdout);
}

#[test]
fn tls_connections_encrypt_and_verify_what_they_promise() {
    let source = Redis::start_tls_only().expect("redis with TLS");
    let ca = source.ca.clone().expect("CA");
    source.pipe(0, &fixture()).expect("load the fixture");
    let repo = tempfile::tempdir().expect("repo");
    let repo_url = format!("file://{}", repo.path().display());
    let ca_option = format!("tls-ca={ca}");
    let run_with = |verb: &str, host: &str, mode: &str, ca: bool| {
        let url = format!("redis://{host}:{}/0?tls={mode}", source.port);
        let mut args = vec![verb, "--plugin", "redis", "--database", &url, "--repo", &repo_url];
        if ca {
            args.extend(["--option", &ca_option]);
        }
        stowage(&args, &[])
    };
    // The server has no plaintext port, so every success went over TLS.
    run_with("backup", "localhost", "verify-full", true).ok().expect("verify-full");
    run_with("backup", "127.0.0.1", "verify-ca", true).ok().expect("verify-ca");
    run_with("backup", "127.0.0.1", "require", false).ok().expect("require");
    let wrong_name = run_with("backup", "127.0.0.1", "verify-full", true).failed().expect("verify-full by IP");
    assert!(wrong_name.stderr.contains("certificate not valid for name \"127.0.0.1\""), "{}", wrong_name.stderr);
    let no_ca = run_with("backup", "localhost", "verify-ca", false).failed().expect("verify-ca without a CA");
    assert!(no_ca.stderr.contains("needs its CA in option tls-ca"), "{}", no_ca.stderr);
    let plain = run_with("backup", "127.0.0.1", "disable", false).failed().expect("plaintext to a TLS-only server");
    assert!(plain.stderr.contains("cannot connect to the database"), "{}", plain.stderr);

    let target = Redis::start_tls_only().expect("target with TLS");
    let url = format!("redis://localhost:{}/0?tls=verify-full", target.port);
    let target_ca = format!("tls-ca={}", target.ca.clone().expect("CA"));
    let restore = ["restore", "--plugin", "redis", "--database", &url, "--option", &target_ca, "--repo", &repo_url];
    stowage(&restore, &[]).ok().expect("restore over verified TLS");
    assert_eq!(target.state().expect("target"), source.state().expect("source"));
}
