//! The images `./dev images` builds, loaded with `podman load` and run the way a Job's Pod
//! runs them: the runner image backs up a real PostgreSQL to SeaweedFS with its builtin
//! plugin, and the operator image starts. Both run as the nonroot user, with no shell.

use stowage_tests::podman::{Podman, image_dir};
use stowage_tests::postgres::{PASSWORD, Postgres, SCRAM_USER};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::run;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn image(name: &str) -> String {
    format!("docker.io/library/stowage-{name}:{VERSION}")
}

#[test]
fn the_runner_image_backs_up_a_real_database_and_the_operator_image_starts() {
    let podman = Podman::new().expect("podman");
    for name in ["runner", "operator"] {
        let archive = image_dir().join(format!("stowage-{name}-{VERSION}.oci.tar"));
        let loaded = podman.load(&archive).expect("podman load");
        assert!(loaded.contains(&image(name)), "{loaded}");
        assert_eq!(podman.inspect(&image(name), "{{.Config.User}}").expect("user"), "65532:65532");
        // Nothing but what the program needs: no shell to exec into.
        let shell = podman.run(&image(name), &[], Some("/bin/sh"), &["-c", "true"]).expect("podman run");
        assert!(!shell.success, "{name} image has a shell");
    }
    let entrypoint = podman.inspect(&image("runner"), "{{.Config.Entrypoint}}").expect("entrypoint");
    assert_eq!(entrypoint, "[/usr/bin/stowage]");

    let help = podman.run(&image("operator"), &[], None, &["--help"]).expect("operator --help").ok().expect("help");
    assert!(help.stdout.contains("Usage"), "{}", help.stdout);

    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE shop").expect("database");
    postgres
        .psql("shop", "CREATE TABLE orders AS SELECT i AS id, md5(i::text) AS note FROM generate_series(1, 5000) i")
        .expect("table");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    tokio::runtime::Runtime::new().expect("runtime").block_on(s3.create_bucket("backups")).expect("bucket");
    let mut env = s3.env();
    env.push(("STOWAGE_DATABASE_PASSWORD".into(), PASSWORD.into()));
    // As the Job sets it: the plugin cache on the writable /tmp.
    env.push(("STOWAGE_CACHE_DIR".into(), "/tmp/stowage".into()));
    let database = postgres.url(SCRAM_USER, "shop");
    let repo = "s3://backups/images";
    let backup = podman
        .run(&image("runner"), &env, None, &["backup", "--plugin", "postgres", "--database", &database, "--repo", repo])
        .expect("podman run backup")
        .ok()
        .expect("backup in the runner image");
    let id = backup.stdout.trim().to_owned();

    // The host's own runner sees a complete backup and verifies it.
    let listed = run(["list", "--repo", repo], &env).expect("list").ok().expect("list");
    assert!(listed.stdout.lines().any(|line| line.contains(&id) && line.contains(" complete ")), "{}", listed.stdout);
    run(["verify", "--repo", repo, "--backup", &id], &env).expect("verify").ok().expect("verify");
}
