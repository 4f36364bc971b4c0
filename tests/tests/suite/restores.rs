//! Stored backups and restores as resources, end to end against the real API server,
//! SeaweedFS and PostgreSQL: a DatabaseBackup's runs create and retire DatabaseSnapshot
//! objects, a DatabaseRestore of one recreates the database, every failure site ends with
//! its own reason, another namespace imports the repository and restores from it, and
//! scheduled restore drills verify the newest backup.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use stowage_api::{DatabaseRestore, DatabaseSnapshot, DatabaseSnapshotImport, OneShotRuns};
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

/// Create a DatabaseRestore with `spec` in `namespace`.
async fn restore_in(cluster: &Cluster, namespace: &str, name: &str, spec: serde_json::Value) {
    let api: Api<DatabaseRestore> = Api::namespaced(cluster.client.clone(), namespace);
    let resource = json!({"apiVersion": "stowage.dev/v1alpha1", "kind": "DatabaseRestore", "metadata": {"name": name}, "spec": spec});
    api.create(&PostParams::default(), &serde_json::from_value(resource).expect("restore")).await.expect("create");
}

async fn restore(cluster: &Cluster, name: &str, spec: serde_json::Value) {
    restore_in(cluster, NAMESPACE, name, spec).await
}

/// The `Succeeded` condition's status, reason and message once it is True or False.
async fn outcome_in<K>(cluster: &Cluster, namespace: &str, name: &str) -> (String, String, String)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasRuns,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), namespace);
    eventually(&format!("the outcome of {name}"), WAIT, || async {
        let object = api.get(name).await.ok()?;
        let condition = object.runs()?.condition("Succeeded")?.clone();
        (condition.status != "Unknown")
            .then(|| (condition.status.clone(), condition.reason.clone(), condition.message.clone()))
    })
    .await
}

/// A PostgreSQL server whose database `shop` `sql` fills, and the Secret `db` with its
/// password; returns the server and the `database` section of a spec naming it.
async fn shop(cluster: &Cluster, sql: &str) -> (Postgres, serde_json::Value) {
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE shop").expect("database");
    postgres.psql("shop", sql).expect("fixture");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let secret = json!({"metadata": {"name": "db"}, "stringData": {"password": PASSWORD}});
    secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("create");
    let database = json!({
        "endpoint": format!("127.0.0.1:{}", postgres.port),
        "name": "shop",
        "user": "postgres",
        "passwordSecret": {"name": "db", "key": "password"}
    });
    (postgres, database)
}

/// Flip one byte in the middle of the first stored object under `prefix`.
async fn flip_a_byte(cluster: &Cluster, prefix: &str) {
    let s3 = cluster.s3.client();
    let listed = s3.list_objects_v2().bucket("backups").prefix(prefix).send().await.expect("list");
    let key = listed.contents().iter().filter_map(|o| o.key()).next().expect("an artifact").to_owned();
    let object = s3.get_object().bucket("backups").key(&key).send().await.expect("get");
    let mut bytes = object.body.collect().await.expect("body").into_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    s3.put_object().bucket("backups").key(&key).body(bytes.into()).send().await.expect("put");
}

async fn outcome(cluster: &Cluster, name: &str) -> (String, String, String) {
    outcome_in::<DatabaseRestore>(cluster, NAMESPACE, name).await
}

/// The resources whose status records one-shot runs.
trait HasRuns {
    fn runs(&self) -> Option<&OneShotRuns>;
}

impl HasRuns for DatabaseRestore {
    fn runs(&self) -> Option<&OneShotRuns> {
        self.status.as_ref().map(|status| &status.runs)
    }
}

impl HasRuns for DatabaseSnapshotImport {
    fn runs(&self) -> Option<&OneShotRuns> {
        self.status.as_ref().map(|status| &status.runs)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_appear_as_snapshots_restore_as_resources_and_come_back_from_the_bucket_alone() {
    let cluster = Cluster::start().await.expect("cluster");
    let (postgres, database) = shop(
        &cluster,
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT n, 'order ' || n FROM generate_series(1, 5000) n;
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE id > 4000;",
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let secret = json!({"metadata": {"name": "db-wrong"}, "stringData": {"password": "not-the-password"}});
    secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("create");
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
    // The runner writes the status after the object: wait for both.
    let backups = cluster.backups();
    let last_backup = eventually("the last backup in the status", WAIT, || async {
        backups.get("shop").await.ok()?.status?.last_backup
    })
    .await;
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
    let attempt = status.runs.latest_attempt.expect("the runner's report");
    assert!(attempt.bytes > 0 && attempt.reason == "RestoreSucceeded", "{attempt:?}");
    let restored = status.restored.expect("restored");
    assert_eq!(
        (restored.backup_id.as_str(), restored.snapshot.as_deref()),
        (second.spec.backup_id.as_str(), Some(snapshot.as_str()))
    );
    assert!(restored.target.ends_with("/shop_copy") && restored.bytes > 0, "{restored:?}");
    assert_eq!(cluster.events("shop-copy", "RestoreJobCreated").await, 1);
    eventually("the RestoreSucceeded Event", Duration::from_secs(10), || async {
        (cluster.events("shop-copy", "RestoreSucceeded").await == 1).then_some(())
    })
    .await;

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
        // The Event follows the status write.
        eventually(&format!("the {expected} Event of {name}"), Duration::from_secs(10), || async {
            (cluster.events(name, expected).await == 1).then_some(())
        })
        .await;
    }
    assert_eq!(postgres.contents("shop").expect("source"), source, "a failed restore changed the source");

    // The configuration goes, its backups stay: its snapshot objects are collected with
    // it, the bucket keeps the backup.
    backups.delete("shop", &Default::default()).await.expect("delete the DatabaseBackup");
    eventually("the snapshot objects go with their DatabaseBackup", WAIT, || async {
        snapshots(&cluster, "shop").await.is_empty().then_some(())
    })
    .await;
    let manifest = format!("{NAMESPACE}/shop/{}/manifest.json", second.spec.backup_id);
    cluster.s3.client().head_object().bucket("backups").key(&manifest).send().await.expect("the backup stays");

    // Another namespace (as another cluster would) imports the repository and restores from it.
    let recovery = "recovery";
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": recovery}})).expect("namespace");
    namespaces.create(&PostParams::default(), &namespace).await.expect("namespace");
    let in_recovery: Api<Secret> = Api::namespaced(cluster.client.clone(), recovery);
    for name in ["s3", "db"] {
        let mut secret = secrets.get(name).await.expect("secret");
        secret.metadata = serde_json::from_value(json!({"name": name})).expect("metadata");
        in_recovery.create(&PostParams::default(), &secret).await.expect("copy the secret");
    }
    let imports: Api<DatabaseSnapshotImport> = Api::namespaced(cluster.client.clone(), recovery);
    let import = json!({
        "apiVersion": "stowage.dev/v1alpha1", "kind": "DatabaseSnapshotImport", "metadata": {"name": "from-shop"},
        "spec": {
            "repo": {"name": "s3", "secretName": "s3", "serviceEndpoint": cluster.s3.endpoint, "bucket": "backups", "region": "us-east-1"},
            "sourceNamespace": NAMESPACE
        }
    });
    imports.create(&PostParams::default(), &serde_json::from_value(import).expect("import")).await.expect("create");
    let (state, reason, message) = outcome_in::<DatabaseSnapshotImport>(&cluster, recovery, "from-shop").await;
    assert_eq!((state.as_str(), reason.as_str()), ("True", "ImportSucceeded"), "{message}");
    let imported = imports.get("from-shop").await.expect("get").status.and_then(|s| s.imported).expect("imported");
    assert_eq!((imported.snapshots, imported.created, imported.removed), (1, 1, 0));
    let recovered: Api<DatabaseSnapshot> = Api::namespaced(cluster.client.clone(), recovery);
    let object = recovered.get(&snapshot).await.expect("the imported snapshot");
    assert_eq!(object.spec.plugin.source.builtin.as_deref(), Some("postgres"));
    assert_eq!(object.spec.plugin.source.sha256, second.spec.plugin.source.sha256);
    assert_eq!(object.spec.database.name, "shop");
    let owner = &object.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DatabaseSnapshotImport", "from-shop"));
    let target =
        json!({"name": "shop_recovered", "user": "postgres", "passwordSecret": {"name": "db", "key": "password"}});
    restore_in(&cluster, recovery, "recover", json!({"snapshot": snapshot, "target": target})).await;
    let (state, reason, message) = outcome_in::<DatabaseRestore>(&cluster, recovery, "recover").await;
    assert_eq!((state.as_str(), reason.as_str()), ("True", "RestoreSucceeded"), "{message}");
    assert_eq!(postgres.contents("shop_recovered").expect("recovered"), source);

    // A flipped byte in the bucket is found before the target is touched.
    flip_a_byte(&cluster, &format!("{NAMESPACE}/shop/{}/data/", second.spec.backup_id)).await;
    let damaged = json!({"snapshot": snapshot, "target": {"name": "shop_damaged", "user": "postgres", "passwordSecret": {"name": "db", "key": "password"}}});
    restore_in(&cluster, recovery, "damaged", damaged).await;
    let (state, reason, message) = outcome_in::<DatabaseRestore>(&cluster, recovery, "damaged").await;
    assert_eq!((state.as_str(), reason.as_str()), ("False", "ChecksumMismatch"), "{message}");
    let exists = postgres.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop_damaged'");
    assert_eq!(exists.expect("query").trim(), "0", "a damaged backup created the target");
}

/// The `Verified` condition's (status, reason, message), once it is `status`.
async fn verified(cluster: &Cluster, name: &str, status: &str, timeout: Duration) -> (String, String) {
    let backups = cluster.backups();
    let start = std::time::Instant::now();
    loop {
        let current = backups.get(name).await.ok().and_then(|b| b.status);
        let condition = current.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Verified").cloned());
        if let Some(condition) = condition.filter(|c| c.status == status) {
            return (condition.reason, condition.message);
        }
        assert!(
            start.elapsed() < timeout,
            "Verified={status} on {name}: not within {timeout:?}; the status is {current:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drills_restore_the_newest_backup_on_schedule_and_fail_visibly_when_it_is_damaged() {
    let cluster = Cluster::start().await.expect("cluster");
    let orders = "CREATE TABLE orders AS SELECT n AS id, md5(n::text) AS note FROM generate_series(1, 1000) n";
    let (postgres, database) = shop(&cluster, orders).await;
    cluster
        .create(
            "drilled",
            json!({"plugin": {"builtin": "postgres"}, "database": database,
                   "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"},
                   "verification": {"schedule": "* * * * *"}}),
        )
        .await;
    let backups = cluster.backups();
    let (_, reason, _) = eventually("the backup", WAIT, || async {
        let conditions = backups.get("drilled").await.ok()?.status?.conditions;
        let condition = conditions.into_iter().find(|c| c.type_ == "Succeeded" && c.status != "Unknown")?;
        Some((condition.status, condition.reason, condition.message))
    })
    .await;
    assert_eq!(reason, "BackupSucceeded");

    // The first scheduled drill restores the backup into <db>_stowage_drill and compares.
    let (reason, message) = verified(&cluster, "drilled", "True", Duration::from_secs(150)).await;
    assert_eq!(reason, "DrillPassed", "{message}");
    assert!(message.contains("rows: 1000/1000") && message.contains("tables: 1/1"), "{message}");
    assert!(message.contains("table_rows_sha256: "), "the rows per table were not compared: {message}");
    assert_eq!(postgres.contents("shop_stowage_drill").expect("scratch"), postgres.contents("shop").expect("source"));
    let snapshot = snapshots(&cluster, "drilled").await.pop().expect("the snapshot object");
    let verification = snapshot.status.and_then(|s| s.verification).expect("the drill on the snapshot");
    assert!(
        verification.verified && verification.backup_id == Some(snapshot.spec.backup_id.clone()),
        "{verification:?}"
    );
    eventually("the DrillPassed Event", Duration::from_secs(10), || async {
        (cluster.events("drilled", "DrillPassed").await >= 1).then_some(())
    })
    .await;
    let operator = cluster.operator.as_ref().expect("operator");
    let metric = r#"stowage_backup_last_verified_timestamp_seconds{namespace="shop",name="drilled"}"#;
    eventually("the verified metric", Duration::from_secs(10), || async {
        operator.get("/metrics").await.filter(|(_, metrics)| metrics.contains(metric)).map(drop)
    })
    .await;
    // A drill is not a backup run: the backup's outcome and report are untouched.
    let status = backups.get("drilled").await.expect("get").status.expect("status");
    assert_eq!(status.latest_attempt.map(|a| a.reason).as_deref(), Some("BackupSucceeded"));

    // A flipped byte in the bucket: the next drill fails, visibly, with the reason. The
    // schedule moves out of the way, and the drill runs now, from its CronJob.
    let patch = json!({"spec": {"verification": {"schedule": "@yearly"}}});
    backups.patch("drilled", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let admin =
        cluster.plane.access().write_kubeconfig("admin", cluster.plane.access().admin_token()).expect("kubeconfig");
    let schedule =
        || kubectl(&admin, &["get", "cronjob", "drilled-drill", "-n", NAMESPACE, "-o", "jsonpath={.spec.schedule}"]);
    eventually("the drill CronJob follows the spec", Duration::from_secs(30), || async {
        (schedule().ok()?.trim() == "@yearly").then_some(())
    })
    .await;
    // A drill the old schedule started before the change finishes first (it read the
    // backup before the flip; its report must not land after the one awaited below).
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let drill_jobs = kube::api::ListParams::default().labels("stowage.dev/drill=drilled");
    eventually("no drill runs", WAIT, || async {
        let listed = jobs.list(&drill_jobs).await.ok()?.items;
        let done = |job: &k8s_openapi::api::batch::v1::Job| {
            job.status.as_ref().is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0)
        };
        listed.iter().all(done).then_some(())
    })
    .await;
    flip_a_byte(&cluster, &format!("{NAMESPACE}/drilled/{}/data/", snapshot.spec.backup_id)).await;
    // What `kubectl create job --from=cronjob/...` does (this kubectl cannot for batch/v1beta1).
    let cronjob = kubectl(&admin, &["get", "cronjob", "drilled-drill", "-n", NAMESPACE, "-o", "json"]).expect("get");
    let template = serde_json::from_str::<serde_json::Value>(&cronjob).expect("json")["spec"]["jobTemplate"].clone();
    let job =
        json!({"metadata": {"name": "drill-now", "labels": template["metadata"]["labels"]}, "spec": template["spec"]});
    jobs.create(&PostParams::default(), &serde_json::from_value(job).expect("job")).await.expect("drill now");
    let drill = eventually("the failed drill's report", WAIT, || async {
        let drill = backups.get("drilled").await.ok()?.status?.last_verification?;
        (!drill.verified).then_some(drill)
    })
    .await;
    assert_eq!(drill.reason, "ChecksumMismatch", "{}", drill.message);
    let (reason, message) = verified(&cluster, "drilled", "False", Duration::from_secs(30)).await;
    assert_eq!(reason, "ChecksumMismatch", "{message}");
    assert!(message.starts_with(&format!("{}: ", drill.finished_at)), "{message}");
    let snapshot = snapshots(&cluster, "drilled").await.pop().expect("the snapshot object");
    let verification = snapshot.status.and_then(|s| s.verification).expect("the failed drill on the snapshot");
    assert_eq!((verification.verified, verification.reason.as_str()), (false, "ChecksumMismatch"));
    let status = backups.get("drilled").await.expect("get").status.expect("status");
    let succeeded = status.conditions.iter().find(|c| c.type_ == "Succeeded").expect("Succeeded");
    assert_eq!(succeeded.status, "True", "a failed drill turned a committed backup into a failure");
}
