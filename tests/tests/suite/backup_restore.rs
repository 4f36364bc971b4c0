//! Backups through the `stowage` binary into a real S3 server (SeaweedFS) and a local
//! directory, with the generator test plugin: commit, list, verify, restore, corruption,
//! encryption and retention.

use sha2::{Digest, Sha256};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, run};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn args<'a>(command: &'a str, repo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command, "--repo", repo, "--namespace", "team", "--name", "orders"];
    args.extend_from_slice(extra);
    args
}

/// Back up with the generator plugin; returns the new backup id.
fn backup(repo: &str, env: &[(String, String)], extra: &[&str]) -> String {
    let mut all = vec!["--plugin", "generator"];
    all.extend_from_slice(extra);
    let result = run(args("backup", repo, &all), env).and_then(Run::ok).expect("backup");
    let id = result.stdout.trim().to_owned();
    assert!(id.len() > 16 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "backup id {id:?}");
    id
}

fn object(server: &SeaweedFs, bucket: &str, key: &str) -> Vec<u8> {
    runtime().block_on(async {
        let object = server.client().get_object().bucket(bucket).key(key).send().await.expect("get object");
        object.body.collect().await.expect("read object").into_bytes().to_vec()
    })
}

fn keys(server: &SeaweedFs, bucket: &str, prefix: &str) -> Vec<String> {
    runtime().block_on(async {
        let listed = server.client().list_objects_v2().bucket(bucket).prefix(prefix).send().await.expect("list");
        listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    })
}

#[test]
fn s3_backup_commits_verifies_and_restores() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("backups")).expect("bucket");
    let env = server.env();
    let repo = "s3://backups/stowage";
    // 20 MB of incompressible data per artifact: three 8 MiB parts each.
    let options = ["--option", "artifacts=2", "--option", "size=20000000", "--option", "content=random"];
    let id = backup(repo, &env, &options);

    let prefix = format!("stowage/team/orders/{id}/");
    let mut stored = keys(&server, "backups", &prefix);
    stored.sort();
    assert_eq!(
        stored,
        [
            format!("{prefix}data/part-0000.bin.zst"),
            format!("{prefix}data/part-0001.bin.zst"),
            format!("{prefix}manifest.json")
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&object(&server, "backups", &format!("{prefix}manifest.json"))).expect("manifest json");
    assert_eq!(manifest["backupId"], id.as_str());
    assert_eq!(manifest["plugin"]["name"], "generator");
    assert_eq!(manifest["plugin"]["witVersion"], "0.1.0");
    for artifact in manifest["artifacts"].as_array().expect("artifacts") {
        let bytes = object(&server, "backups", &format!("{prefix}{}", artifact["object"].as_str().expect("object")));
        assert_eq!(artifact["rawSize"], 20_000_000);
        assert_eq!(artifact["storedSize"], bytes.len());
        assert_eq!(artifact["sha256"], hex::encode(Sha256::digest(&bytes)).as_str());
    }

    let listed = run(["list", "--repo", repo], &env).and_then(Run::ok).expect("list");
    assert!(listed.stdout.contains(&id) && listed.stdout.contains("team/orders"), "{}", listed.stdout);
    let verified = run(args("verify", repo, &["--backup", &id]), &env).and_then(Run::ok).expect("verify");
    assert!(verified.stdout.contains("is intact: 2 artifacts, 40000000 bytes"), "{}", verified.stdout);
    // The generator's restore checks every byte against what it generated.
    let restored =
        run(args("restore", repo, &[&["--plugin", "generator", "--backup", "latest"], &options[..]].concat()), &env)
            .and_then(Run::ok)
            .expect("restore");
    assert!(
        restored.stdout.contains(&format!("restored backup {id}: verified 2 artifacts, 40000000 bytes")),
        "{}",
        restored.stdout
    );
}

#[test]
fn a_flipped_byte_is_caught_by_verify_and_restore() {
    let server = SeaweedFs::start().expect("seaweedfs");
    runtime().block_on(server.create_bucket("corrupt")).expect("bucket");
    let env = server.env();
    let repo = "s3://corrupt";
    let id = backup(repo, &env, &["--option", "size=3000000"]);
    let key = format!("team/orders/{id}/data/part-0000.bin.zst");
    let mut bytes = object(&server, "corrupt", &key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    runtime().block_on(async {
        server.client().put_object().bucket("corrupt").key(&key).body(bytes.into()).send().await.expect("put")
    });

    let verify = run(args("verify", repo, &["--backup", &id]), &env).and_then(Run::failed).expect("verify fails");
    assert!(verify.stderr.contains("artifact part-0000.bin is corrupt: its sha256 is"), "{}", verify.stderr);
    let restore = run(args("restore", repo, &["--plugin", "generator", "--option", "size=3000000"]), &env)
        .and_then(Run::failed)
        .expect("restore fails");
    assert!(restore.stderr.contains("artifact part-0000.bin is corrupt"), "{}", restore.stderr);
}

#[test]
fn encrypted_backups_decrypt_with_the_age_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = dir.path().join("key.txt");
    let keygen =
        std::process::Command::new("age-keygen").arg("-o").arg(&identity).output().expect("age-keygen (./dev setup)");
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let recipient = String::from_utf8_lossy(&keygen.stderr).trim().trim_start_matches("Public key: ").to_owned();
    let repo = format!("file://{}/repo", dir.path().display());
    let generated = ["--option", "size=5000000", "--option", "seed=7"];

    let plain_id = backup(&repo, &[], &[&["--compression", "none"], &generated[..]].concat());
    let encrypted_id = backup(&repo, &[], &[&["--age-recipient", &recipient], &generated[..]].concat());

    let backup_dir = |id: &str| dir.path().join(format!("repo/team/orders/{id}/data"));
    let plain = std::fs::read(backup_dir(&plain_id).join("part-0000.bin")).expect("plain artifact");
    let decrypted = std::process::Command::new("sh")
        .arg("-c")
        .arg("age -d -i \"$1\" \"$2\" | zstd -d")
        .arg("sh")
        .arg(&identity)
        .arg(backup_dir(&encrypted_id).join("part-0000.bin.zst.age"))
        .output()
        .expect("age | zstd");
    assert!(decrypted.status.success(), "{}", String::from_utf8_lossy(&decrypted.stderr));
    assert_eq!(decrypted.stdout.len(), 5_000_000);
    assert!(decrypted.stdout == plain, "age-decrypted bytes differ from the plain backup of the same data");

    let identity_arg = identity.to_str().expect("utf-8 path");
    let restored = run(
        args(
            "restore",
            &repo,
            &[
                &["--plugin", "generator", "--backup", &encrypted_id, "--age-identity-file", identity_arg][..],
                &generated[..],
            ]
            .concat(),
        ),
        &[],
    )
    .and_then(Run::ok)
    .expect("restore with the identity");
    assert!(restored.stdout.contains("verified 1 artifacts, 5000000 bytes"), "{}", restored.stdout);
    let without_key =
        run(args("verify", &repo, &["--backup", &encrypted_id]), &[]).and_then(Run::failed).expect("no key");
    assert!(without_key.stderr.contains("no age identity was given"), "{}", without_key.stderr);
}

#[test]
fn retention_keeps_exactly_the_newest_backups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", dir.path().display());
    let ids: Vec<String> = (0..4).map(|_| backup(&repo, &[], &["--keep-last", "2", "--option", "size=1000"])).collect();
    let listed = run(["list", "--repo", &repo], &[]).and_then(Run::ok).expect("list");
    for (index, id) in ids.iter().enumerate() {
        assert_eq!(listed.stdout.contains(id.as_str()), index >= 2, "backup {index} ({id}):\n{}", listed.stdout);
        assert_eq!(dir.path().join(format!("team/orders/{id}")).exists(), index >= 2, "directory of backup {index}");
    }
}
