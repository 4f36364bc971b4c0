//! The operator end to end against a real API server and controller-manager: the
//! standard deployment's RBAC, a kubelet stand-in that runs the runner for Job Pods,
//! SeaweedFS for storage.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use stowage_api::DatabaseBackup;
use stowage_tests::cluster::{Cluster, NAMESPACE, Operator};
use stowage_tests::kube::kubectl;
use stowage_tests::postgres::{PASSWORD, Postgres};

/// Poll `check` until it returns a value or `timeout` passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `Succeeded` condition's (status, reason) and the last backup's id.
async fn outcome(backups: &Api<DatabaseBackup>, name: &str) -> Option<(String, String, Option<String>)> {
    let status = backups.get(name).await.ok()?.status?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Succeeded")?;
    Some((condition.status.clone(), condition.reason.clone(), status.last_backup.map(|b| b.id)))
}

/// The reason of the `Succeeded` condition once the backup has ended either way.
async fn settled_reason(backups: &Api<DatabaseBackup>, name: &str, timeout: Duration) -> String {
    eventually(&format!("outcome of {name}"), timeout, || async {
        match outcome(backups, name).await {
            Some((status, reason, _)) if status != "Unknown" => Some(reason),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_triggers_run_once_per_time_and_report_in_the_status() {
    let mut cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    cluster.create("orders", json!({"manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}})).await;
    let first = eventually("first backup", Duration::from_secs(90), || async {
        match outcome(&backups, "orders").await {
            Some((status, reason, Some(id))) if status == "True" && reason == "BackupSucceeded" => Some(id),
            _ => None,
        }
    })
    .await;
    let manifest = format!("{NAMESPACE}/orders/{first}/manifest.json");
    cluster.s3.client().head_object().bucket("backups").key(&manifest).send().await.expect("manifest in S3");
    let jobs = cluster.jobs("orders", "manual").await;
    assert_eq!(jobs.len(), 1);
    let owner = &jobs[0].metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("DatabaseBackup", "orders", Some(true)));

    // A new time is a new backup.
    let patch = json!({"spec": {"manualTrigger": {"enabled": true, "time": "t2", "repo": "s3"}}});
    backups.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch time");
    let second = eventually("second backup", Duration::from_secs(90), || async {
        match outcome(&backups, "orders").await {
            Some((status, _, Some(id))) if status == "True" && id != first => Some(id),
            _ => None,
        }
    })
    .await;
    assert_ne!(first, second);
    assert_eq!(cluster.jobs("orders", "manual").await.len(), 2);

    // The leader serves metrics of what it did.
    let leader = cluster.operator.as_ref().expect("operator");
    let (status_line, _) = leader.get("/readyz").await.expect("readyz");
    assert!(status_line.contains("200"), "{status_line}");
    let (_, metrics) = leader.get("/metrics").await.expect("metrics");
    assert!(metrics.contains(r#"stowage_backup_jobs_created_total{trigger="manual"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"stowage_backup_succeeded{namespace="shop",name="orders"} 1"#), "{metrics}");

    // A second replica waits; when the leader dies it takes over without running a time again.
    let standby = Operator::start(&cluster.plane.access(), "operator-b").await.expect("standby");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "stowage-system");
    let holder = |lease: Lease| lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(holder(leases.get("stowage-operator").await.expect("lease")).as_deref(), Some("operator-a"));
    cluster.operator = Some(standby);
    eventually("the standby leads", Duration::from_secs(60), || async {
        let lease = leases.get("stowage-operator").await.ok()?;
        (holder(lease).as_deref() == Some("operator-b")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.jobs("orders", "manual").await.len(), 2, "a new leader ran a time again");

    // Two resources whose names share the first 40 characters, with the same time, get a
    // Job and a backup each (their Job names used to collide: the second was skipped).
    let prefix = "orders-database-of-the-eu-west-production";
    let twins = [format!("{prefix}-a"), format!("{prefix}-b")];
    for name in &twins {
        cluster.create(name, json!({"manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}})).await;
    }
    for name in &twins {
        assert_eq!(settled_reason(&backups, name, Duration::from_secs(90)).await, "BackupSucceeded", "{name}");
        assert_eq!(cluster.jobs(name, "manual").await.len(), 1, "{name}");
    }

    // A missing input is reported by the runner with its own reason.
    cluster
        .create(
            "no-credentials",
            json!({
                "repos": [{"name": "s3", "secretName": "absent", "serviceEndpoint": cluster.s3.endpoint, "bucket": "backups"}],
                "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
            }),
        )
        .await;
    assert_eq!(settled_reason(&backups, "no-credentials", Duration::from_secs(90)).await, "MissingStorageCredentials");

    // Deleting the resource garbage-collects what the operator created for it.
    backups.delete("orders", &DeleteParams::foreground()).await.expect("delete");
    let roles: Api<Role> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    eventually("owned objects collected", Duration::from_secs(60), || async {
        let gone = roles.get_opt("orders-stowage-runner").await.ok()?.is_none()
            && accounts.get_opt("orders-stowage-runner").await.ok()?.is_none()
            && cluster.jobs("orders", "manual").await.is_empty();
        gone.then_some(())
    })
    .await;
}

/// Accept the next connection of a held sandbox-probe backup (its artifact is stored).
async fn held_connection(database: &std::net::TcpListener) -> std::net::TcpStream {
    let listener = database.try_clone().expect("listener");
    tokio::task::spawn_blocking(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let start = Instant::now();
        loop {
            match listener.accept() {
                Ok((stream, _)) => return stream,
                Err(_) if start.elapsed() < Duration::from_secs(120) => std::thread::sleep(Duration::from_millis(50)),
                Err(error) => panic!("the held backup never connected: {error}"),
            }
        }
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_jobs_of_one_resource_take_turns_and_both_backups_stand() {
    use std::io::Write;
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    let database = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = database.local_addr().expect("address").to_string();
    let held = json!({
        "plugin": {"builtin": "sandbox-probe"},
        "database": {"endpoint": endpoint, "name": "db", "options": {"probe": "hold"}},
        "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
    });
    cluster.create("held", held).await;
    let mut first = held_connection(&database).await;
    // A second time while the first Job is still running: a second Job starts at once.
    let patch = json!({"spec": {"manualTrigger": {"enabled": true, "time": "t2", "repo": "s3"}}});
    backups.patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch time");
    eventually("a second Job", Duration::from_secs(60), || async {
        (cluster.jobs("held", "manual").await.len() == 2).then_some(())
    })
    .await;
    // Its runner waits for the lock instead of overlapping: it never reaches the database.
    database.set_nonblocking(true).expect("nonblocking");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(database.accept().is_err(), "the second backup ran while the first held the lock");
    first.write_all(b"!").expect("release the first backup");
    let mut second = held_connection(&database).await;
    second.write_all(b"!").expect("release the second backup");
    let listed = eventually("two committed backups", Duration::from_secs(90), || async {
        let env = cluster.s3.env();
        let listed = tokio::task::spawn_blocking(move || {
            stowage_tests::stowage::run(["list", "--repo", "s3://backups", "--only", "shop/held"], &env)
        })
        .await
        .expect("join")
        .ok()?;
        (listed.stdout.matches(" complete ").count() == 2).then_some(listed.stdout)
    })
    .await;
    assert!(!listed.contains("incomplete"), "{listed}");
    eventually("the last outcome is the second backup", Duration::from_secs(30), || async {
        let (status, reason, id) = outcome(&backups, "held").await?;
        (status == "True" && reason == "BackupSucceeded" && id.is_some_and(|id| listed.contains(&id))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_without_a_report_fails_the_resource() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    cluster
        .create(
            "bad-image",
            json!({"runnerImage": "no-such-image:1", "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}}),
        )
        .await;
    assert_eq!(settled_reason(&backups, "bad-image", Duration::from_secs(150)).await, "JobBackoffLimitExceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_triggers_become_a_cronjob_that_backs_up() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    cluster
        .create("hourly", json!({"scheduledTrigger": {"enabled": true, "schedule": "* * * * *", "repo": "s3"}}))
        .await;
    // The CronJob controller starts the first run within a minute.
    let id = eventually("scheduled backup", Duration::from_secs(150), || async {
        match outcome(&backups, "hourly").await {
            Some((status, _, Some(id))) if status == "True" => Some(id),
            _ => None,
        }
    })
    .await;
    assert!(!cluster.jobs("hourly", "scheduled").await.is_empty(), "backup {id} came from no scheduled Job");

    // Disabling the trigger removes the CronJob.
    let patch = json!({"spec": {"scheduledTrigger": {"enabled": false, "schedule": "* * * * *", "repo": "s3"}}});
    backups.patch("hourly", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("disable");
    let access = cluster.plane.access();
    let admin = access.write_kubeconfig("admin-check", access.admin_token()).expect("kubeconfig");
    eventually("CronJob deleted", Duration::from_secs(30), || async {
        let listed = kubectl(&admin, &["get", "cronjobs", "-n", NAMESPACE, "-o", "name"]).ok()?;
        listed.trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_from_configmaps_are_pinned_by_digest() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    let wasm = std::fs::read(stowage_tests::stowage::plugin("generator").expect("plugin")).expect("read plugin");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let map = json!({"metadata": {"name": "plugins"}, "binaryData": {"generator.wasm": base64_encode(&wasm)}});
    maps.create(&PostParams::default(), &serde_json::from_value(map).expect("configmap")).await.expect("create");

    let source = |sha256: &str| json!({"configMap": {"name": "plugins", "key": "generator.wasm"}, "sha256": sha256});
    let manual = json!({"enabled": true, "time": "t1", "repo": "s3"});
    cluster.create("pinned", json!({"plugin": source(&digest), "manualTrigger": manual})).await;
    let wrong = "0".repeat(64);
    cluster.create("mispinned", json!({"plugin": source(&wrong), "manualTrigger": manual})).await;
    for (name, expected) in [("pinned", "BackupSucceeded"), ("mispinned", "PluginDigestMismatch")] {
        assert_eq!(settled_reason(&backups, name, Duration::from_secs(90)).await, expected, "{name}");
    }
    let manifest = cluster
        .s3
        .client()
        .list_objects_v2()
        .bucket("backups")
        .prefix(format!("{NAMESPACE}/pinned/"))
        .send()
        .await
        .expect("list");
    let key =
        manifest.contents().iter().filter_map(|o| o.key()).find(|k| k.ends_with("manifest.json")).expect("manifest");
    let object = cluster.s3.client().get_object().bucket("backups").key(key).send().await.expect("get");
    let manifest: serde_json::Value =
        serde_json::from_slice(&object.body.collect().await.expect("read").into_bytes()).expect("json");
    assert_eq!(manifest["plugin"]["source"], "configMap:plugins/generator.wasm");
    assert_eq!(manifest["plugin"]["sha256"], digest.as_str());
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backups_succeed_over_verified_tls_and_a_wrong_password_is_the_reason() {
    let cluster = Cluster::start().await.expect("cluster");
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE shop").expect("database");
    postgres.psql("shop", "CREATE TABLE orders AS SELECT generate_series(1, 1000) AS id").expect("table");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    for (name, password) in [("db", PASSWORD), ("db-wrong", "not-the-password")] {
        let secret = json!({"metadata": {"name": name}, "stringData": {"password": password}});
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("create");
    }
    let spec = |secret: &str| {
        json!({
            "plugin": {"builtin": "postgres"},
            "database": {
                "endpoint": format!("127.0.0.1:{}", postgres.port),
                "name": "shop",
                "user": "postgres",
                "passwordSecret": {"name": secret, "key": "password"}
            },
            "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
        })
    };
    cluster.create("shop", spec("db")).await;
    cluster.create("shop-wrong", spec("db-wrong")).await;

    // A TLS-only server, verified with the CA from spec.database.tlsCaSecret.
    let secure = Postgres::start_tls_only().expect("postgres with TLS");
    secure.psql("postgres", "CREATE DATABASE shop").expect("database");
    let ca = json!({"metadata": {"name": "db-ca"}, "stringData": {"ca.crt": secure.ca.clone().expect("CA")}});
    secrets.create(&PostParams::default(), &serde_json::from_value(ca).expect("secret")).await.expect("create");
    let mut tls = spec("db");
    tls["database"]["endpoint"] = json!(format!("localhost:{}", secure.port));
    tls["database"]["tlsCaSecret"] = json!({"name": "db-ca", "key": "ca.crt"});
    tls["database"]["options"] = json!({"sslmode": "verify-full"});
    cluster.create("shop-tls", tls).await;

    let backups = cluster.backups();
    assert_eq!(settled_reason(&backups, "shop-tls", Duration::from_secs(90)).await, "BackupSucceeded");
    assert_eq!(settled_reason(&backups, "shop", Duration::from_secs(90)).await, "BackupSucceeded");
    assert_eq!(settled_reason(&backups, "shop-wrong", Duration::from_secs(90)).await, "DatabaseAuthenticationFailed");
    let status = backups.get("shop-wrong").await.expect("get").status.expect("status");
    let condition = status.conditions.iter().find(|c| c.type_ == "Succeeded").expect("condition");
    assert!(
        condition.message.contains("password authentication failed for user \"postgres\""),
        "{}",
        condition.message
    );
    assert!(status.last_backup.is_none(), "a failed backup is never the last backup");
}
