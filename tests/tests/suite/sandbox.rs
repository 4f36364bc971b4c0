//! The sandbox holds whatever a plugin does: each misbehaviour of the sandbox-probe
//! plugin ends in a precise error and leaves no backup behind.

use std::net::TcpListener;
use std::path::Path;

use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, run};

/// Run the probe's backup into a fresh file repository.
fn probe(repo: &Path, probe: &str, extra: &[&str], env: &[(String, String)]) -> Run {
    let repo = format!("file://{}", repo.display());
    let option = format!("probe={probe}");
    let mut args = vec!["backup", "--plugin", "sandbox-probe", "--repo", &repo, "--option", &option];
    args.extend_from_slice(extra);
    run(args, env).expect("run stowage")
}

/// Files in `repo`, as paths relative to it.
fn files(repo: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![repo.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(repo) {
                found.push(relative.display().to_string());
            }
        }
    }
    found
}

/// Assert the run failed with `message` and committed nothing; returns the run.
fn assert_refused(repo: &Path, result: Run, message: &str) -> Run {
    let result = result.failed().expect("the backup must fail");
    assert!(result.stderr.contains(message), "expected {message:?} in:\n{}", result.stderr);
    assert!(files(repo).is_empty(), "the failed backup left {:?}", files(repo));
    result
}

#[test]
fn a_plugin_that_computes_forever_is_stopped_at_the_deadline() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "spin", &["--timeout", "2s"], &[]);
    assert_refused(repo.path(), result, "plugin sandbox-probe did not finish within 2s");
}

#[test]
fn a_plugin_blocked_in_a_socket_read_is_stopped_at_the_deadline() {
    // A "database" that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let database = format!("tcp://{}/db", silent.local_addr().expect("address"));
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "block", &["--database", &database, "--timeout", "2s"], &[]);
    assert_refused(repo.path(), result, "plugin sandbox-probe did not finish within 2s");
}

#[test]
fn a_plugin_that_allocates_without_bound_hits_the_memory_limit() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "allocate", &["--memory-limit-mib", "64"], &[]);
    assert_refused(repo.path(), result, "plugin sandbox-probe exceeded its memory limit of 64 MiB");
}

#[test]
fn connections_other_than_to_the_database_are_refused() {
    let database = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let repo = tempfile::tempdir().expect("tempdir");
    let target = format!("target={}", other.local_addr().expect("address"));
    let database = format!("tcp://{}/db", database.local_addr().expect("address"));
    let result = probe(repo.path(), "connect", &["--database", &database, "--option", &target], &[]);
    let result = assert_refused(repo.path(), result, "cannot connect to the database: connect to 127.0.0.1:");
    assert!(result.stderr.contains("ermission denied") || result.stderr.contains("ccess denied"), "{}", result.stderr);
}

#[test]
fn the_host_filesystem_is_invisible() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "files", &[], &[]);
    assert_refused(repo.path(), result, "no file is accessible");
}

#[test]
fn a_panic_is_reported_by_its_message_not_by_a_wasm_backtrace() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "panic", &[], &[]);
    let result = assert_refused(
        repo.path(),
        result,
        "error: plugin sandbox-probe panicked: the sandbox probe panics on purpose (at sandbox-probe/src/lib.rs:",
    );
    assert!(!result.stderr.contains("wasm backtrace"), "{}", result.stderr);
}

#[test]
fn a_stack_overflow_is_named() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "recurse", &[], &[]);
    assert_refused(repo.path(), result, "error: plugin sandbox-probe trapped: stack overflow");
}

/// The runner's peak memory, from its `backup complete` log line.
fn peak_rss_mib(stderr: &str) -> u64 {
    let field = stderr.split("peak_rss_mib=").nth(1).expect("peak_rss_mib in the log");
    field.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn a_log_flood_is_bounded_escaped_and_counted() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "log-flood", &[], &[]).ok().expect("the backup itself succeeds");
    // About 400 MiB of messages came in; a few hundred KiB go out.
    assert!(result.stderr.len() < 4 << 20, "{} bytes of log", result.stderr.len());
    assert!(result.stderr.contains("plugin log messages dropped"), "{}", &result.stderr[..2000]);
    assert!(!result.stderr.contains('\x1b'), "a terminal escape reached the log");
    assert!(result.stderr.contains("forged\\n2026-01-01T00:00:00Z  INFO stowage: backup committed\\u{1b}[2J"));
    assert!(!result.stderr.lines().any(|line| line.starts_with("2026-01-01T00:00:00Z")), "a plugin forged a log line");
}

#[test]
fn a_huge_summary_is_cut_before_it_reaches_the_manifest() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "huge-summary", &[], &[]).ok().expect("the backup succeeds, cut");
    assert!(result.stderr.contains("the plugin's summary description was cut to 4096 bytes"), "{}", result.stderr);
    assert!(result.stderr.contains("only the first 64 summary attributes are kept"), "{}", result.stderr);
    let manifest = files(repo.path()).into_iter().find(|f| f.ends_with("manifest.json")).expect("manifest");
    let size = std::fs::metadata(repo.path().join(manifest)).expect("stat").len();
    assert!(size < 64 << 10, "manifest of {size} bytes");
}

#[test]
fn huge_writes_stay_within_the_hosts_memory_budget() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "big-writes", &[], &[]).ok().expect("1 GiB in 96 MiB writes");
    let peak = peak_rss_mib(&result.stderr);
    assert!(peak < 300, "runner peak RSS {peak} MiB");
}

#[test]
fn artifacts_left_open_are_capped() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "many-artifacts", &[], &[]);
    assert_refused(repo.path(), result, "8 artifacts are open already; finish one before creating open-8.bin");
}

#[test]
fn an_unfinished_artifact_fails_the_backup() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "abandon", &[], &[]);
    assert_refused(repo.path(), result, "plugin sandbox-probe returned without finishing artifact abandoned.txt");
}

#[test]
fn a_plugin_error_discards_the_artifacts_already_stored() {
    let repo = tempfile::tempdir().expect("tempdir");
    let result = probe(repo.path(), "fail", &[], &[]);
    assert_refused(repo.path(), result, "plugin sandbox-probe: database error: the sandbox probe fails on purpose");
}

#[test]
fn storage_credentials_and_the_host_environment_never_reach_the_plugin() {
    let server = SeaweedFs::start().expect("seaweedfs");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(server.create_bucket("secrets")).expect("bucket");
    let mut env = server.env();
    env.push(("STOWAGE_DATABASE_PASSWORD".into(), "database-password".into()));
    env.push(("HOST_ONLY_SECRET".into(), "host-only-value".into()));
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let database = format!("tcp://app@{}/db", listener.local_addr().expect("address"));
    let result = run(
        [
            "backup",
            "--plugin",
            "sandbox-probe",
            "--repo",
            "s3://secrets",
            "--database",
            &database,
            "--option",
            "probe=environment",
        ],
        &env,
    )
    .and_then(Run::ok)
    .expect("backup");
    let id = result.stdout.trim();
    let seen = runtime.block_on(async {
        let key = format!("local/default/{id}/data/environment.txt.zst");
        let object = server.client().get_object().bucket("secrets").key(key).send().await.expect("artifact");
        let stored = object.body.collect().await.expect("read").into_bytes();
        String::from_utf8(zstd_decode(&stored)).expect("utf-8")
    });
    // The plugin gets its own database settings, and nothing of the host's environment.
    assert!(seen.contains("database-password") && seen.contains("app"), "{seen}");
    assert!(!seen.contains("env "), "the plugin saw environment variables:\n{seen}");
    for (name, value) in
        server.env().iter().chain([("HOST_ONLY_SECRET".to_owned(), "host-only-value".to_owned())].iter())
    {
        assert!(!seen.contains(value.as_str()), "{name} reached the plugin:\n{seen}");
    }
}

fn zstd_decode(data: &[u8]) -> Vec<u8> {
    let output = std::process::Command::new("zstd")
        .args(["-d", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("zstd -d");
    assert!(output.status.success());
    output.stdout
}
