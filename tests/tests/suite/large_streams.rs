//! Streaming with bounded memory, and what a killed run leaves behind.

use std::time::{Duration, Instant};

use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, command, run};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A `key=value` field of the runner's structured log.
fn log_field(log: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    log.lines().rev().find_map(|line| {
        let start = line.find(&needle)? + needle.len();
        Some(line[start..].split_whitespace().next()?.trim_matches('"').to_owned())
    })
}

#[test]
fn a_two_gib_stream_keeps_the_runner_under_200_mib() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("large")).expect("bucket");
    let size = (2u64 << 30).to_string();
    let result = run(
        [
            "backup",
            "--plugin",
            "generator",
            "--repo",
            "s3://large",
            "--option",
            &format!("size={size}"),
            "--option",
            "content=random",
        ],
        &server.env(),
    )
    .and_then(Run::ok)
    .expect("backup");
    let peak: u64 = log_field(&result.stderr, "peak_rss_mib").and_then(|v| v.parse().ok()).expect("peak_rss_mib");
    let rate = log_field(&result.stderr, "mib_per_second").unwrap_or_default();
    println!("2 GiB backup: runner peak RSS {peak} MiB, {rate} MiB/s (debug build)");
    assert!(peak < 200, "peak RSS {peak} MiB for a 2 GiB stream");
    assert_eq!(log_field(&result.stderr, "raw_bytes").as_deref(), Some(size.as_str()));
}

#[test]
fn a_killed_backup_is_invisible_and_the_next_run_removes_its_leftovers() {
    let server = SeaweedFs::start().expect("seaweedfs");
    let runtime = runtime();
    runtime.block_on(server.create_bucket("crash")).expect("bucket");
    let client = server.client();
    let uploads = || {
        runtime.block_on(async {
            let listed = client.list_multipart_uploads().bucket("crash").send().await.expect("list uploads");
            listed.uploads().len()
        })
    };
    let objects = || {
        runtime.block_on(async {
            let listed = client.list_objects_v2().bucket("crash").send().await.expect("list objects");
            listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect::<Vec<_>>()
        })
    };
    let backup = |size: &str, extra: &[&str]| {
        let mut args = vec!["backup", "--plugin", "generator", "--repo", "s3://crash", "--option", "content=random"];
        let size = format!("size={size}");
        args.extend_from_slice(&["--option", &size]);
        args.extend_from_slice(extra);
        command(args, &server.env()).expect("command")
    };

    // Killed during the multipart upload of its first artifact.
    let mut child =
        backup("4000000000", &["--option", "artifacts=2"]).stderr(std::process::Stdio::null()).spawn().expect("spawn");
    let start = Instant::now();
    while uploads() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no multipart upload started");
        assert!(child.try_wait().expect("wait").is_none(), "the backup ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    // An artifact a killed run had already stored, without a manifest.
    let stray = "local/default/20260101T000000Z-0a0b0c/data/part-0000.bin.zst";
    runtime.block_on(async {
        client.put_object().bucket("crash").key(stray).body(b"partial".to_vec().into()).send().await.expect("put")
    });
    let listed = run(["list", "--repo", "s3://crash"], &server.env()).and_then(Run::ok).expect("list");
    assert!(!listed.stdout.contains(" complete "), "a killed backup is listed as complete:\n{}", listed.stdout);
    assert!(
        listed.stdout.lines().any(|line| line.contains("20260101T000000Z-0a0b0c") && line.contains(" incomplete ")),
        "the leftover directory is not shown as incomplete:\n{}",
        listed.stdout
    );
    assert!(uploads() > 0, "the killed run left no unfinished upload to clean up");
    assert!(objects().iter().all(|key| !key.ends_with("manifest.json")), "{:?}", objects());

    let next =
        Run::from(backup("1000", &["--leftover-age", "0s"]).output().expect("next backup")).ok().expect("next backup");
    let id = next.stdout.trim();
    assert_eq!(uploads(), 0, "unfinished uploads of the killed run remain");
    // What the killed run (known dead: its lock names this host and a gone process) left
    // is removed at once; a fresh directory of unknown origin may be a live run's and stays
    // until it is older than the longest allowed run.
    let remaining = objects();
    assert!(
        remaining.iter().all(|key| key.starts_with(&format!("local/default/{id}/")) || key == stray),
        "leftovers: {remaining:?}"
    );
    assert!(remaining.iter().any(|key| key == stray), "a directory that may belong to a live run was removed");
}
