//! Nothing destroys a good backup: one run per configuration at a time, leftovers of live
//! runs are never removed, kills at any instant leave nothing visible and lose nothing,
//! forged manifests change nothing, any size fits the store's part limit, and SIGTERM
//! ends a run cleanly. Real SeaweedFS and the generator and sandbox-probe plugins.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use stowage_tests::faults::FaultProxy;
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, command, run};

const CONFIG: [&str; 4] = ["--namespace", "team", "--name", "orders"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn with_config<'a>(command: &'a str, repo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command, "--repo", repo];
    args.extend_from_slice(&CONFIG);
    args.extend_from_slice(extra);
    args
}

fn spawn(args: Vec<&str>, env: &[(String, String)]) -> Child {
    command(args, env)
        .expect("stowage command")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stowage")
}

fn finished(child: Child) -> Run {
    child.wait_with_output().expect("wait for stowage").into()
}

/// A "database" for the sandbox probe's `hold`: the probe connects once it has stored its
/// artifact, and finishes when it reads a byte.
struct HoldingDatabase {
    listener: TcpListener,
}

impl HoldingDatabase {
    fn new() -> Self {
        HoldingDatabase { listener: TcpListener::bind("127.0.0.1:0").expect("listen") }
    }

    fn url(&self) -> String {
        format!("tcp://{}/db", self.listener.local_addr().expect("address"))
    }

    /// Wait until the held backup is in the middle of its run.
    fn accept(&self) -> TcpStream {
        self.listener.set_nonblocking(true).expect("nonblocking");
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < Duration::from_secs(60), "the held backup never connected");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("accept: {error}"),
            }
        }
    }
}

fn release(mut connection: TcpStream) {
    connection.write_all(b"!").expect("release the held backup");
}

/// Every backup `list` shows as complete, with its id; each must pass `verify`.
fn complete_backups(repo: &str, env: &[(String, String)]) -> Vec<String> {
    let listed = run(["list", "--repo", repo], env).and_then(Run::ok).expect("list");
    listed
        .stdout
        .lines()
        .filter(|line| line.contains(" complete "))
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn assert_all_verify(repo: &str, env: &[(String, String)], ids: &[String]) {
    for id in ids {
        run(with_config("verify", repo, &["--backup", id]), env)
            .and_then(Run::ok)
            .expect("every complete backup verifies");
    }
}

#[test]
fn a_second_run_of_one_configuration_waits_or_is_refused_and_every_backup_stays_whole() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("overlap")).expect("bucket");
    let env = server.env();
    let repo = "s3://overlap/backups";
    let database = HoldingDatabase::new();
    let url = database.url();

    // A long backup: its artifact is stored and finished, and it is still running.
    let held = spawn(
        with_config("backup", repo, &["--plugin", "sandbox-probe", "--option", "probe=hold", "--database", &url]),
        &env,
    );
    let connection = database.accept();

    // What deleted the live run's artifact before: a second run with a short leftover age.
    let refused = run(
        with_config("backup", repo, &["--plugin", "generator", "--leftover-age", "1s", "--option", "size=1000"]),
        &env,
    )
    .and_then(Run::failed)
    .expect("the second run is refused");
    assert!(
        refused.stderr.contains("another backup of team/orders is running (run "),
        "BackupAlreadyRunning expected:\n{}",
        refused.stderr
    );
    // A third run that may wait does, and starts when the first is done.
    let waiting = spawn(
        with_config("backup", repo, &["--plugin", "generator", "--lock-wait", "2m", "--option", "size=1000"]),
        &env,
    );
    std::thread::sleep(Duration::from_secs(3));
    let mut waiting = waiting;
    assert!(waiting.try_wait().expect("poll").is_none(), "the waiting run must not start while the first runs");

    release(connection);
    let first = finished(held).ok().expect("the held backup commits");
    let third = finished(waiting).ok().expect("the waiting backup runs after it");
    let (first, third) = (first.stdout.trim().to_owned(), third.stdout.trim().to_owned());
    let complete = complete_backups(repo, &env);
    assert!(complete.contains(&first) && complete.contains(&third), "{complete:?}");
    assert_eq!(complete.len(), 2, "{complete:?}");
    assert_all_verify(repo, &env, &complete);
}

#[test]
fn leftovers_younger_than_the_longest_allowed_run_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", dir.path().display());
    let leftover = dir.path().join("team/orders/20200101T000000Z-aaaaaa/data/part-0000.bin.zst");
    std::fs::create_dir_all(leftover.parent().expect("parent")).expect("mkdir");
    std::fs::write(&leftover, b"a finished artifact of a run that may still be alive").expect("write");
    let two_hours_ago = std::process::Command::new("touch").arg("-d").arg("2 hours ago").arg(&leftover).status();
    assert!(two_hours_ago.expect("touch").success());

    // The default deadline is 6 h: a 2 h old directory may belong to a live run.
    let options = ["--plugin", "generator", "--leftover-age", "1s", "--option", "size=1000"];
    run(with_config("backup", &repo, &options), &[]).and_then(Run::ok).expect("backup");
    assert!(leftover.exists(), "a leftover younger than the deadline plus grace was removed");
    // With a 10 minute deadline no run can be 2 h old: it is a leftover.
    run(with_config("backup", &repo, &[&options[..], &["--timeout", "10m"]].concat()), &[])
        .and_then(Run::ok)
        .expect("backup");
    assert!(!leftover.exists(), "the leftover of a dead run was kept");
}

/// A small deterministic generator of kill instants.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn kill_9_at_random_instants_never_shows_an_incomplete_backup_nor_loses_a_complete_one() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("kills")).expect("bucket");
    let env = server.env();
    let repo = "s3://kills";
    // Two artifacts of 12 MB random bytes: multipart uploads of two parts each.
    let generated = ["--option", "artifacts=2", "--option", "size=12000000", "--option", "content=random"];
    let backup_args = with_config("backup", repo, &[&["--plugin", "generator"][..], &generated[..]].concat());
    let restore_args = with_config("restore", repo, &[&["--plugin", "generator"][..], &generated[..]].concat());

    // How long a whole run takes here, to spread the kills over it.
    let started = Instant::now();
    let first = run(backup_args.clone(), &env).and_then(Run::ok).expect("first backup");
    let duration_ms = (started.elapsed().as_millis() as u64).max(200);
    let mut kept = vec![first.stdout.trim().to_owned()];
    let mut rng = Lcg(0x5eed);
    let (mut backup_kills, mut restore_kills) = (0, 0);
    for trial in 0..32 {
        let restoring = trial % 4 == 3;
        // Mostly within the run: a run that ends before its kill counts for nothing.
        let delay = rng.below(duration_ms * 3 / 4);
        let mut child = spawn(if restoring { restore_args.clone() } else { backup_args.clone() }, &env);
        std::thread::sleep(Duration::from_millis(delay));
        let killed = child.try_wait().expect("poll").is_none();
        let _ = child.kill();
        let output = finished(child);
        if killed {
            if restoring { restore_kills += 1 } else { backup_kills += 1 }
        } else if output.success && !restoring {
            kept.push(output.stdout.trim().to_owned());
        }
        // Nothing complete is lost. A run killed after its commit is complete, and at
        // most that one is new; whatever `list` shows as complete is verified below.
        let complete = complete_backups(repo, &env);
        for id in &kept {
            assert!(complete.contains(id), "trial {trial} (kill after {delay} ms) lost backup {id}: {complete:?}");
        }
        let new: Vec<String> = complete.into_iter().filter(|id| !kept.contains(id)).collect();
        assert!(new.len() <= usize::from(!restoring), "trial {trial}: unexpected complete backups {new:?}");
        kept.extend(new);
        // The next run recovers at once: the dead run's lock is stale on this host.
        if trial % 6 == 5 {
            let next = run(backup_args.clone(), &env).and_then(Run::ok).expect("the next run recovers");
            kept.push(next.stdout.trim().to_owned());
        }
    }
    assert!(backup_kills >= 15 && restore_kills >= 3, "too few kills landed mid-run: {backup_kills} + {restore_kills}");
    assert_all_verify(repo, &env, &kept);
    eprintln!(
        "killed {backup_kills} backups and {restore_kills} restores mid-run; {} backups kept, all verified",
        kept.len()
    );
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
}

#[test]
fn forged_and_corrupt_manifests_change_nothing_for_the_real_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let repo = format!("file://{}", root.display());
    let generated = ["--option", "size=200000"];
    let real = run(with_config("backup", &repo, &[&["--plugin", "generator"][..], &generated[..]].concat()), &[])
        .and_then(Run::ok)
        .expect("backup");
    let real = real.stdout.trim().to_owned();
    let config_dir = root.join("team/orders");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config_dir.join(&real).join("manifest.json")).expect("manifest"))
            .expect("json");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"outside the repository").expect("secret");

    // A copy of the real manifest in another directory claims the real backup's id.
    write_json(&config_dir.join("20990101T000000Z-copied/manifest.json"), &manifest);
    // Garbage.
    std::fs::create_dir_all(config_dir.join("20990101T000000Z-garbage")).expect("mkdir");
    std::fs::write(config_dir.join("20990101T000000Z-garbage/manifest.json"), b"{ not json").expect("write");
    // Its own id, but an artifact that points out of the repository.
    let mut escaping = manifest.clone();
    escaping["backupId"] = "20990101T000000Z-escape".into();
    escaping["artifacts"][0]["object"] = "data/../../../../secret.txt".into();
    write_json(&config_dir.join("20990101T000000Z-escape/manifest.json"), &escaping);
    // A newer format that this runner must neither read nor delete.
    let mut newer = manifest.clone();
    newer["backupId"] = "20990101T000000Z-newer".into();
    newer["formatVersion"] = 99.into();
    write_json(&config_dir.join("20990101T000000Z-newer/manifest.json"), &newer);
    // Newest of all, valid-looking, but its artifact does not exist.
    let mut hollow = manifest.clone();
    hollow["backupId"] = "20990101T000000Z-hollow".into();
    write_json(&config_dir.join("20990101T000000Z-hollow/manifest.json"), &hollow);
    // A manifest where an artifact would be: not the directory's manifest.
    write_json(&config_dir.join("20990101T000000Z-inner/data/manifest.json"), &manifest);

    let listed = run(["list", "--repo", &repo], &[]).and_then(Run::ok).expect("list still works");
    assert_eq!(complete_backups(&repo, &[]), std::slice::from_ref(&real), "{}", listed.stdout);
    for forged in ["copied", "garbage", "escape", "newer", "hollow"] {
        assert!(listed.stdout.contains(&format!("20990101T000000Z-{forged}")), "{}", listed.stdout);
        assert!(listed.stderr.contains(&format!("20990101T000000Z-{forged}/manifest.json")), "{}", listed.stderr);
    }
    let escape = run(with_config("verify", &repo, &["--backup", "20990101T000000Z-escape"]), &[])
        .and_then(Run::failed)
        .expect("the escaping manifest is refused");
    assert!(escape.stderr.contains("is not a valid backup: artifact"), "{}", escape.stderr);
    let newer_refused = run(with_config("verify", &repo, &["--backup", "20990101T000000Z-newer"]), &[])
        .and_then(Run::failed)
        .expect("a newer format is refused");
    assert!(newer_refused.stderr.contains("format version 99"), "{}", newer_refused.stderr);

    // `latest` is the real backup, not the newest forgery.
    let restored = run(with_config("restore", &repo, &[&["--plugin", "generator"][..], &generated[..]].concat()), &[])
        .and_then(Run::ok)
        .expect("restore latest");
    assert!(restored.stdout.contains(&format!("restored backup {real}")), "{}", restored.stdout);
    // Retention keeps one backup: it removes the real old one, never the forgeries.
    let newest = run(
        with_config("backup", &repo, &[&["--plugin", "generator", "--keep-last", "1"][..], &generated[..]].concat()),
        &[],
    )
    .and_then(Run::ok)
    .expect("backup with retention");
    assert_eq!(complete_backups(&repo, &[]), [newest.stdout.trim().to_owned()]);
    for forged in ["copied", "garbage", "escape", "newer", "hollow"] {
        assert!(config_dir.join(format!("20990101T000000Z-{forged}/manifest.json")).exists(), "{forged} was deleted");
    }
    assert_eq!(std::fs::read(&secret).expect("secret"), b"outside the repository");
}

#[test]
fn parts_grow_so_that_an_artifact_fits_the_part_limit_and_larger_ones_fail_early() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("parts")).expect("bucket");
    let env = server.env();
    let repo = "s3://parts";
    // At a fixed 5 MiB, 60 MB would take 12 parts; 4 are allowed, growing 5, 10, 20, 40 MiB.
    let limits = ["--part-size-mib", "5", "--max-parts", "4", "--compression", "none"];
    let fits = ["--option", "size=60000000", "--option", "content=random"];
    let id = run(with_config("backup", repo, &[&["--plugin", "generator"][..], &limits[..], &fits[..]].concat()), &env)
        .and_then(Run::ok)
        .expect("a 60 MB artifact in 4 parts");
    let id = id.stdout.trim().to_owned();
    let etag = runtime().block_on(async {
        let key = format!("team/orders/{id}/data/part-0000.bin");
        let head = server.client().head_object().bucket("parts").key(key).send().await.expect("head");
        head.e_tag().unwrap_or_default().to_owned()
    });
    assert!(etag.trim_matches('"').ends_with("-4"), "a multipart object of 4 parts, its ETag says {etag}");
    run(with_config("verify", repo, &["--backup", &id]), &env).and_then(Run::ok).expect("verify");

    let too_large = ["--option", "size=80000000", "--option", "content=random"];
    let refused =
        run(with_config("backup", repo, &[&["--plugin", "generator"][..], &limits[..], &too_large[..]].concat()), &env)
            .and_then(Run::failed)
            .expect("an 80 MB artifact cannot fit 4 parts");
    assert!(
        refused.stderr.contains("larger than 78643200 bytes, the largest object the store accepts in 4 parts"),
        "{}",
        refused.stderr
    );
    assert_eq!(complete_backups(repo, &env), [id]);
}

#[test]
fn sigterm_stops_the_plugin_and_removes_what_the_run_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", dir.path().display());
    let database = HoldingDatabase::new();
    let url = database.url();
    let held = spawn(
        with_config("backup", &repo, &["--plugin", "sandbox-probe", "--option", "probe=hold", "--database", &url]),
        &[],
    );
    let mut connection = database.accept();
    assert!(dir.path().join("team/orders/lock.json").exists(), "the running backup holds the lock");
    let pid = held.id().to_string();
    let started = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(kill.success());
    let result = finished(held).failed().expect("an interrupted backup fails");
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?} to stop", started.elapsed());
    assert!(result.stderr.contains("was interrupted (SIGTERM or SIGINT)"), "{}", result.stderr);
    // The plugin's connection was closed, and nothing is left: no artifact, no lock.
    let mut rest = Vec::new();
    connection.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    assert_eq!(connection.read_to_end(&mut rest).expect("the plugin's socket closes"), 0);
    let left: Vec<_> = walk(dir.path());
    assert!(left.is_empty(), "the interrupted run left {left:?}");
}

fn walk(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
            }
        }
    }
    found
}

#[test]
fn s3_faults_and_a_server_restart_end_in_a_retried_success_or_a_clean_failure() {
    let mut server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("faults")).expect("bucket");
    let direct = server.env();
    let proxy = FaultProxy::start(&server.address(), 3, 0xfa17).expect("fault proxy");
    let faulty: Vec<(String, String)> = direct
        .iter()
        .map(
            |(k, v)| if k == "AWS_ENDPOINT_URL" { (k.clone(), proxy.endpoint.clone()) } else { (k.clone(), v.clone()) },
        )
        .collect();
    let repo = "s3://faults/stowage";
    let generated = ["--option", "artifacts=2", "--option", "size=20000000", "--option", "content=random"];
    let backup_args = with_config("backup", repo, &[&["--plugin", "generator"][..], &generated[..]].concat());

    let mut kept = Vec::new();
    let mut failures = Vec::new();
    for trial in 0..8 {
        let result = run(backup_args.clone(), &faulty).expect("run stowage");
        if result.success {
            kept.push(result.stdout.trim().to_owned());
        } else {
            let reason = result.stderr.lines().rfind(|line| line.starts_with("error: ")).unwrap_or_default().to_owned();
            assert!(!reason.is_empty() && !result.stderr.contains("panicked"), "trial {trial}:\n{}", result.stderr);
            failures.push(reason);
        }
        // Seen without faults: exactly the successful runs are complete.
        let mut complete = complete_backups(repo, &direct);
        complete.sort();
        let mut expected = kept.clone();
        expected.sort();
        assert_eq!(complete, expected, "trial {trial}");
    }
    proxy.set_enabled(false);

    // The server crashes and comes back in the middle of an upload.
    let big = ["--option", "artifacts=3", "--option", "size=40000000", "--option", "content=random"];
    let child = spawn(with_config("backup", repo, &[&["--plugin", "generator"][..], &big[..]].concat()), &direct);
    std::thread::sleep(Duration::from_millis(1500));
    server.restart().expect("restart seaweedfs");
    let after_restart = finished(child);
    if after_restart.success {
        kept.push(after_restart.stdout.trim().to_owned());
    } else {
        failures.push(after_restart.stderr.lines().rfind(|l| l.starts_with("error: ")).unwrap_or_default().to_owned());
    }
    let mut complete = complete_backups(repo, &direct);
    complete.sort();
    kept.sort();
    assert_eq!(complete, kept, "after the restart");
    assert_all_verify(repo, &direct, &kept);
    eprintln!(
        "faults: {}; {} runs succeeded, {} failed cleanly: {failures:?}",
        proxy.counts.summary(),
        kept.len(),
        failures.len()
    );
    assert!(proxy.counts.injected() >= 8, "too few faults injected: {}", proxy.counts.summary());
    assert!(!kept.is_empty(), "retries should carry some runs through the faults");
}
