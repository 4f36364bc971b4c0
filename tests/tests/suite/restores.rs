//! Stored backups and restores as resources, end to end against the real API server,
//! SeaweedFS and PostgreSQL: a DatabaseBackup's runs create and retire DatabaseSnapshot
//! objects, and a DatabaseRestore of one recreates the database; every failure site
//! ends with its own reason.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use stowage_api::{DatabaseRestore, DatabaseSnapshot};
use stowage_tests::cluster::{Cluster, NAMESPACE, eventually};
use stowage_tests::kube::kubectl;
use stowage_tests::postgres::{PASSWORD, Postgres};

const WAIT: Duration = Duration::from_secs(90);

/// The names of the snapshot objects of configuration `name`, oldest first.
async fn snapshots(cluster: &Cluster, name: &str) -> Vec<DatabaseSnapshot> {
    let api: Api<DatabaseSnapshot> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let selector = format!("stowage.dev/backup={name}");
    let mut listed = api.list(&kube::api::ListParams::default().labels(&selector)).await.expect("list").items;
    listed.sort_by(|a, b| a.spec.finished_at.cmp(&b.spec.finished_at).then(a.spec.backup_id.cmp(&b.spec.backup_id)));
    listed
}

/// Create a DatabaseRestore with `spec`.
async fn restore(cluster: &Cluster, name: &str, spec: serde_json::Value) {
    let api: Api<DatabaseRestore> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let resource = json!({"apiVersion": "stowage.dev/v1alpha1", "kind": "DatabaseRestore", "metadata": {"name": name}, "spec": spec});
    api.create(&PostParams::default(), &serde_json::from_value(resource).expect("restore")).await.expect("create");
}

/// The `Succeeded` condition's status, reason and message once it is True or False.
async fn outcome(cluster: &Cluster, name: &str) -> (String, String, String) {
    let api: Api<DatabaseRestore> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    eventually(&format!("the outcome of restore {name}"), WAIT, || async {
        let status = api.get(name).await.ok()?.status?;
        let condition = status.condition("Succeeded")?;
        (condition.status != "Unknown")
            .then(|| (condition.status.clone(), condition.reason.clone(), condition.message.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_appear_as_snapshots_and_a_database_restore_recreates_the_database() {
    let cluster = Cluster::start().await.expect("cluster");
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE shop").expect("database");
    postgres
        .psql(
            "shop",
            "CREATE TABLE orders (id int PRIMARY KEY, note text);
             INSERT INTO orders SELECT n, 'order ' || n FROM generate_series(1, 5000) n;
             CREATE VIEW big_orders AS SELECT * FROM orders WHERE id > 4000;",
        )
        .expect("fixture");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    for (name, password) in [("db", PASSWORD), ("db-wrong", "not-the-password")] {
        let secret = json!({"metadata": {"name": name}, "stringData": {"password": password}});
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("create");
    }
    let database = json!({
        "endpoint": format!("127.0.0.1:{}", postgres.port),
        "name": "shop",
        "user": "postgres",
        "passwordSecret": {"name": "db", "key": "password"}
    });
    let trigger = |time: &str| json!({"enabled": true, "time": time, "repo": "s3"});
    cluster
        .create(
            "shop",
            json!({"plugin": {"builtin": "postgres"}, "database": database, "manualTrigger": trigger("t1"),
                   "retention": {"keepLast": 1}}),
        )
        .await;

    // The committed backup appears as an object with everything a restore needs.
    let first = eventually("the first snapshot object", WAIT, || async {
        snapshots(&cluster, "shop").await.into_iter().next()
    })
    .await;
    let backups = cluster.backups();
    let last_backup = backups.get("shop").await.expect("get").status.and_then(|s| s.last_backup).expect("last backup");
    assert_eq!(first.spec.backup_id, last_backup.id);
    assert_eq!((first.spec.bytes, first.spec.stored_bytes), (last_backup.bytes, last_backup.stored_bytes));
    assert_eq!((first.spec.plugin.name.as_str(), first.spec.source_namespace.as_str()), ("postgres", NAMESPACE));
    assert_eq!(first.spec.plugin.source.sha256.as_deref(), Some(first.spec.plugin.sha256.as_str()));
    assert_eq!(first.spec.repo.bucket.as_deref(), Some("backups"));
    let owner = &first.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DatabaseBackup", "shop"));
    let admin =
        cluster.plane.access().write_kubeconfig("admin", cluster.plane.access().admin_token()).expect("kubeconfig");
    let table = kubectl(&admin, &["get", "dbsnap", "-n", NAMESPACE]).expect("kubectl get");
    assert!(table.contains("CONFIGURATION") && table.contains("postgres"), "{table}");

    // The next backup replaces it, and retention removes the first backup's object with it.
    let patch = json!({"spec": {"manualTrigger": trigger("t2")}});
    backups.patch("shop", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let second = eventually("retention removes the first snapshot", WAIT, || async {
        let listed = snapshots(&cluster, "shop").await;
        (listed.len() == 1 && listed[0].spec.backup_id != first.spec.backup_id).then(|| listed[0].clone())
    })
    .await;
    let snapshot = second.metadata.name.clone().expect("name");

    // A restore of the snapshot into a new database on the same server.
    restore(&cluster, "shop-copy", json!({"snapshot": snapshot, "target": {"name": "shop_copy"}})).await;
    kubectl(
        &admin,
        &["wait", "--for=condition=Succeeded", "databaserestore/shop-copy", "-n", NAMESPACE, "--timeout=90s"],
    )
    .expect("kubectl wait");
    let (state, reason, message) = outcome(&cluster, "shop-copy").await;
    assert_eq!((state.as_str(), reason.as_str()), ("True", "RestoreSucceeded"), "{message}");
    assert_eq!(postgres.contents("shop_copy").expect("copy"), postgres.contents("shop").expect("source"));
    assert_eq!(postgres.schema("shop_copy").expect("copy"), postgres.schema("shop").expect("source"));
    let restores: Api<DatabaseRestore> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let status = restores.get("shop-copy").await.expect("get").status.expect("status");
    let restored = status.restored.expect("restored");
    assert_eq!(
        (restored.backup_id.as_str(), restored.snapshot.as_deref()),
        (second.spec.backup_id.as_str(), Some(snapshot.as_str()))
    );
    assert!(restored.target.ends_with("/shop_copy") && restored.bytes > 0, "{restored:?}");
    assert_eq!(cluster.events("shop-copy", "RestoreJobCreated").await, 1);
    assert_eq!(cluster.events("shop-copy", "RestoreSucceeded").await, 1);

    // Every failure site has its reason, and none changes the source database.
    let source = postgres.contents("shop").expect("source");
    restore(&cluster, "no-snapshot", json!({"snapshot": "shop-19700101t000000z-000000"})).await;
    restore(
        &cluster,
        "wrong-id",
        json!({"databaseBackup": {"name": "shop", "backupId": "19700101T000000Z-000000"}, "target": {"name": "never"}}),
    )
    .await;
    restore(&cluster, "onto-source", json!({"snapshot": snapshot})).await;
    restore(
        &cluster,
        "wrong-password",
        json!({"snapshot": snapshot, "target": {"name": "shop_other", "passwordSecret": {"name": "db-wrong", "key": "password"}}}),
    )
    .await;
    restore(
        &cluster,
        "other-plugin",
        json!({"snapshot": snapshot, "plugin": {"builtin": "generator"}, "target": {"name": "x"}}),
    )
    .await;
    for (name, expected, says) in [
        ("no-snapshot", "BackupNotFound", "DatabaseSnapshot shop-19700101t000000z-000000 does not exist"),
        ("wrong-id", "BackupNotFound", "no backup 19700101T000000Z-000000 of shop/shop"),
        ("onto-source", "TargetNotEmpty", "target not empty: database \"shop\""),
        ("wrong-password", "DatabaseAuthenticationFailed", "password authentication failed"),
        ("other-plugin", "PluginDigestMismatch", "is pinned"),
    ] {
        let (state, reason, message) = outcome(&cluster, name).await;
        assert_eq!((state.as_str(), reason.as_str()), ("False", expected), "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
        assert_eq!(cluster.events(name, expected).await, 1, "{name}");
    }
    assert_eq!(postgres.contents("shop").expect("source"), source, "a failed restore changed the source");

    // A flipped byte in the bucket is found before the target is touched.
    let s3 = cluster.s3.client();
    let prefix = format!("{NAMESPACE}/shop/{}/data/", second.spec.backup_id);
    let listed = s3.list_objects_v2().bucket("backups").prefix(&prefix).send().await.expect("list");
    let key = listed.contents().iter().filter_map(|o| o.key()).next().expect("an artifact").to_owned();
    let object = s3.get_object().bucket("backups").key(&key).send().await.expect("get");
    let mut bytes = object.body.collect().await.expect("body").into_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    s3.put_object().bucket("backups").key(&key).body(bytes.into()).send().await.expect("put");
    restore(&cluster, "damaged", json!({"snapshot": snapshot, "target": {"name": "shop_damaged"}})).await;
    let (state, reason, message) = outcome(&cluster, "damaged").await;
    assert_eq!((state.as_str(), reason.as_str()), ("False", "ChecksumMismatch"), "{message}");
    let exists = postgres.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop_damaged'");
    assert_eq!(exists.expect("query").trim(), "0", "a damaged backup created the target");
}
