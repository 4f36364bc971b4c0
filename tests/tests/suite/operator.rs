//! The operator end to end against a real API server and controller-manager: the
//! standard deployment's RBAC, a kubelet stand-in that runs the runner for Job Pods,
//! SeaweedFS for storage.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use stowage_api::DatabaseBackup;
use stowage_operator::workloads::SHARED_RUNNER_IDENTITY;
use stowage_tests::cluster::{ALLOWED_BROKEN_IMAGE, Cluster, NAMESPACE, Operator, eventually};
use stowage_tests::kube::kubectl;
use stowage_tests::mariadb::{self, Mariadb};
use stowage_tests::postgres::{PASSWORD, Postgres};
use stowage_tests::redis::Redis;

/// The `Succeeded` condition's (status, reason) and the last backup's id.
async fn outcome(backups: &Api<DatabaseBackup>, name: &str) -> Option<(String, String, Option<String>)> {
    let status = backups.get(name).await.ok()?.status?;
    let condition = status.conditions.iter().find(|c| c.type_ == "Succeeded")?;
    Some((condition.status.clone(), condition.reason.clone(), status.last_backup.map(|b| b.id)))
}

/// The reason of the `Succeeded` condition once the backup has ended either way.
async fn settled_reason(backups: &Api<DatabaseBackup>, name: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some((status, reason, _)) = outcome(backups, name).await
            && status != "Unknown"
        {
            return reason;
        }
        if start.elapsed() > timeout {
            let status = backups.get(name).await.ok().and_then(|b| b.status);
            panic!("outcome of {name}: not within {timeout:?}; the status is {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every condition as (type, status, reason), by type.
async fn conditions(backups: &Api<DatabaseBackup>, name: &str) -> Vec<(String, String, String)> {
    let status = backups.get(name).await.expect("get").status.unwrap_or_default();
    let mut conditions: Vec<_> = status.conditions.into_iter().map(|c| (c.type_, c.status, c.reason)).collect();
    conditions.sort();
    conditions
}

fn expected(conditions: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    conditions.iter().map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string())).collect()
}

/// Change the spec without starting a run (retention), so that the operator reconciles
/// again, and wait until it has.
async fn reconcile_again(backups: &Api<DatabaseBackup>, name: &str, keep_last: u32) {
    let patch = json!({"spec": {"retention": {"keepLast": keep_last}}});
    let generation =
        backups.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch").metadata.generation;
    eventually("the operator observed the change", Duration::from_secs(30), || async {
        let status = backups.get(name).await.ok()?.status?;
        (status.observed_generation == generation).then_some(())
    })
    .await;
}

/// The Pods of a Job.
async fn pods_of(cluster: &Cluster, job: &str) -> usize {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let selector = format!("job-name={job}");
    pods.list(&kube::api::ListParams::default().labels(&selector)).await.expect("pods").items.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_triggers_run_once_per_time_and_report_in_the_status() {
    let mut cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    // With a cloud identity of its own (workload identity), so a ServiceAccount of its own;
    // the other resources here share the namespace's runner identity.
    let own_identity =
        json!({"metadata": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/orders"}}});
    let manual = json!({"enabled": true, "time": "t1", "repo": "s3"});
    cluster.create("orders", json!({"manualTrigger": manual, "serviceAccountTemplate": own_identity})).await;
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

    // A runner RoleBinding deleted by hand is back before the next run needs it: the
    // operator applies an identity only when its cache says it is not as applied, and
    // hears of the deletion from its watch within moments.
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    bindings.delete("orders-stowage-runner", &DeleteParams::default()).await.expect("delete the runner's binding");
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let account = accounts.get("orders-stowage-runner").await.expect("the resource's own ServiceAccount");
    assert_eq!(
        account.annotations().get("eks.amazonaws.com/role-arn").map(String::as_str),
        Some("arn:aws:iam::1:role/orders")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

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
    // Observed when the outcome is announced, just after the status is written.
    let durations = r#"stowage_backup_duration_seconds_count{namespace="shop",name="orders"} 2"#;
    eventually("both durations observed", Duration::from_secs(10), || async {
        leader.get("/metrics").await.filter(|(_, metrics)| metrics.contains(durations)).map(drop)
    })
    .await;

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
    // No retry can mend it: the operator ends the Job on the runner's report. Without
    // podFailurePolicy (this API server is older than 1.26) the Job controller may have
    // started the one immediate retry by then, never the third Pod of backoffLimit 2.
    let job = cluster.jobs("no-credentials", "manual").await[0].metadata.name.clone().expect("job name");
    eventually("the Job ended by the operator", Duration::from_secs(30), || async {
        let jobs = cluster.jobs("no-credentials", "manual").await;
        let conditions = jobs.first()?.status.as_ref()?.conditions.clone()?;
        conditions.iter().any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(pods_of(&cluster, &job).await <= 2, "a permanent failure was retried to the backoff limit");

    // One names an existing ServiceAccount (its cloud identity managed elsewhere): the
    // operator binds the runner's role to it, never writes it, and leaves it behind.
    let existing =
        json!({"metadata": {"name": "shop-backups", "annotations": {"iam.gke.io/gcp-service-account": "b@p"}}});
    accounts.create(&PostParams::default(), &serde_json::from_value(existing).expect("account")).await.expect("create");
    cluster.create("existing-account", json!({"manualTrigger": manual, "serviceAccountName": "shop-backups"})).await;
    assert_eq!(settled_reason(&backups, "existing-account", Duration::from_secs(90)).await, "BackupSucceeded");
    let job = cluster.jobs("existing-account", "manual").await.remove(0);
    let pod = job.spec.and_then(|spec| spec.template.spec).expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("shop-backups"));
    let binding = bindings.get("existing-account-stowage-runner").await.expect("its binding");
    assert_eq!(binding.subjects.expect("subjects")[0].name, "shop-backups");

    // The others share one runner identity.
    assert!(accounts.get_opt(SHARED_RUNNER_IDENTITY).await.expect("get").is_some(), "no shared runner identity");
    assert!(accounts.get_opt(&format!("{prefix}-a-stowage-runner")).await.expect("get").is_none());

    // Deleting the resource garbage-collects what the operator created for it.
    backups.delete("orders", &DeleteParams::foreground()).await.expect("delete");
    eventually("owned objects collected", Duration::from_secs(60), || async {
        let gone = bindings.get_opt("orders-stowage-runner").await.ok()?.is_none()
            && accounts.get_opt("orders-stowage-runner").await.ok()?.is_none()
            && cluster.jobs("orders", "manual").await.is_empty();
        gone.then_some(())
    })
    .await;
    // Its series go with it.
    let leader = cluster.operator.as_ref().expect("operator");
    eventually("series of the deleted resource removed", Duration::from_secs(30), || async {
        let (_, metrics) = leader.get("/metrics").await?;
        (!metrics.contains(r#"name="orders""#)).then_some(())
    })
    .await;
    // The shared runner identity goes with the last resource that uses it.
    for name in twins.iter().map(String::as_str).chain(["no-credentials", "existing-account"]) {
        backups.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    eventually("the shared runner identity removed", Duration::from_secs(30), || async {
        let gone = accounts.get_opt(SHARED_RUNNER_IDENTITY).await.ok()?.is_none()
            && bindings.get_opt(SHARED_RUNNER_IDENTITY).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let kept = accounts.get("shop-backups").await.expect("the user's ServiceAccount is left");
    assert_eq!(kept.annotations().get("iam.gke.io/gcp-service-account").map(String::as_str), Some("b@p"));
}

/// Create resource `name` backing up with the sandbox probe's `hold`: each run stores an
/// artifact, then waits for a byte on its connection to the returned listener.
async fn create_held(cluster: &Cluster, name: &str) -> std::net::TcpListener {
    let database = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = database.local_addr().expect("address").to_string();
    let held = json!({
        "plugin": {"builtin": "sandbox-probe"},
        "database": {"endpoint": endpoint, "name": "db", "options": {"probe": "hold"}},
        "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
    });
    cluster.create(name, held).await;
    database
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

/// A manual trigger while a run is active waits for it: the runs never overlap.
#[tokio::test(flavor = "multi_thread")]
async fn a_manual_trigger_during_a_run_waits_for_it_and_both_backups_stand() {
    use std::io::Write;
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    let database = create_held(&cluster, "held").await;
    let mut first = held_connection(&database).await;
    let patch = json!({"spec": {"manualTrigger": {"enabled": true, "time": "t2", "repo": "s3"}}});
    backups.patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch time");
    eventually("the second time is queued", Duration::from_secs(30), || async {
        let status = backups.get("held").await.ok()?.status?;
        status.condition("Running")?.message.contains("manual trigger t2 waits for Job").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cluster.jobs("held", "manual").await.len(), 1, "a second Job while the first runs");
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

/// An invalid spec runs nothing and says which fields are wrong, once; fixed, it runs.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_run_nothing_and_name_every_wrong_field() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    cluster
        .create(
            "invalid",
            json!({
                "runnerImage": "attacker/exfiltrate:latest",
                "plugin": {"url": "http://plugins.example/p.wasm"},
                "manualTrigger": {"time": "t1", "repo": "s3"},
                "scheduledTrigger": {"schedule": "0 * * *", "repo": "s3", "timeZone": "Europe/Berlin"}
            }),
        )
        .await;
    let message = eventually("Ready=False/InvalidSpec", Duration::from_secs(30), || async {
        let status = backups.get("invalid").await.ok()?.status?;
        let ready = status.condition("Ready")?;
        (ready.status == "False" && ready.reason == "InvalidSpec").then(|| ready.message.clone())
    })
    .await;
    // This API server (1.20) has no CronJob timeZone: refused, not silently dropped.
    for field in
        ["spec.plugin.url", "spec.scheduledTrigger.schedule", "spec.runnerImage", "spec.scheduledTrigger.timeZone"]
    {
        assert!(message.contains(field), "{field} is not named: {message}");
    }
    reconcile_again(&backups, "invalid", 2).await;
    assert!(cluster.jobs("invalid", "manual").await.is_empty(), "a Job of an invalid spec");
    assert_eq!(cluster.events("invalid", "InvalidSpec").await, 1);
    let access = cluster.plane.access();
    let admin = access.write_kubeconfig("admin-invalid", access.admin_token()).expect("kubeconfig");
    let cronjobs = kubectl(&admin, &["get", "cronjobs", "-n", NAMESPACE, "-o", "name"]).expect("kubectl");
    assert!(cronjobs.trim().is_empty(), "{cronjobs}");

    // A name no label value can carry (the API server would refuse its Jobs and CronJobs)
    // is named too, before anything is made for it.
    let long = "a".repeat(64);
    cluster.create(&long, json!({"manualTrigger": {"time": "t1", "repo": "s3"}})).await;
    let message = eventually("a long name is InvalidSpec", Duration::from_secs(30), || async {
        let ready = backups.get(&long).await.ok()?.status?.condition("Ready")?.clone();
        (ready.status == "False" && ready.reason == "InvalidSpec").then_some(ready.message)
    })
    .await;
    assert!(message.contains("metadata.name: has 64 characters"), "{message}");
    reconcile_again(&backups, &long, 2).await;
    let jobs = kubectl(&admin, &["get", "jobs", "-n", NAMESPACE, "-o", "name"]).expect("kubectl");
    assert!(jobs.trim().is_empty(), "{jobs}");

    // Fixed (and with the trigger sections' `enabled` left out: they are on), it runs.
    let fixed = json!({"spec": {
        "runnerImage": null,
        "plugin": {"url": null, "builtin": "generator"},
        "scheduledTrigger": {"schedule": "@daily", "repo": "s3", "timeZone": null}
    }});
    backups.patch("invalid", &PatchParams::default(), &Patch::Merge(&fixed)).await.expect("fix");
    assert_eq!(settled_reason(&backups, "invalid", Duration::from_secs(90)).await, "BackupSucceeded");
    let ready = backups.get("invalid").await.expect("get").status.expect("status");
    assert_eq!(ready.condition("Ready").map(|c| c.status.as_str()), Some("True"));
    assert_eq!(ready.plugin.as_deref(), Some("generator"));
    let cronjobs = kubectl(&admin, &["get", "cronjobs", "-n", NAMESPACE, "-o", "name"]).expect("kubectl");
    assert!(!cronjobs.trim().is_empty(), "no CronJob for @daily");
}

/// A Pod that never starts (a bad image): the Job fails without a report, and that is
/// one outcome, one Event, whatever reconciles follow.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_pod_never_starts_fails_the_run_once() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    cluster
        .create(
            "bad-image",
            json!({"runnerImage": ALLOWED_BROKEN_IMAGE, "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}}),
        )
        .await;
    assert_eq!(settled_reason(&backups, "bad-image", Duration::from_secs(150)).await, "JobBackoffLimitExceeded");
    for keep_last in [5, 6] {
        reconcile_again(&backups, "bad-image", keep_last).await;
    }
    assert_eq!(
        conditions(&backups, "bad-image").await,
        expected(&[
            ("Ready", "True", "Reconciled"),
            ("Running", "False", "Idle"),
            ("Succeeded", "False", "JobBackoffLimitExceeded")
        ])
    );
    let status = backups.get("bad-image").await.expect("get").status.expect("status");
    let succeeded = status.condition("Succeeded").expect("Succeeded");
    assert!(succeeded.message.contains("failed without a report from the runner"), "{}", succeeded.message);
    let job = &cluster.jobs("bad-image", "manual").await[0];
    assert_eq!(status.last_run.map(|run| run.job), job.metadata.name.clone());
    assert_eq!(cluster.events("bad-image", "JobBackoffLimitExceeded").await, 1);
}

/// A runner killed mid-backup (after its first report) is retried by the Job; the retry
/// commits, the status stays whole, and the outcome is announced once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runner_is_retried_and_the_status_stays_whole() {
    use std::io::Write;
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    let database = create_held(&cluster, "killed").await;
    let first = held_connection(&database).await;
    eventually("the run is reported running", Duration::from_secs(30), || async {
        let status = backups.get("killed").await.ok()?.status?;
        let running = status.condition("Running")?;
        (running.status == "True" && running.message.contains("Backing up")).then_some(())
    })
    .await;
    assert_eq!(stowage_tests::kubelet::kill_runners_of("killed"), 1);
    drop(first);
    let mut second = held_connection(&database).await;
    second.write_all(b"!").expect("release the retry");
    assert_eq!(settled_reason(&backups, "killed", Duration::from_secs(90)).await, "BackupSucceeded");
    reconcile_again(&backups, "killed", 3).await;
    assert_eq!(
        conditions(&backups, "killed").await,
        expected(&[
            ("Ready", "True", "Reconciled"),
            ("Running", "False", "Idle"),
            ("Succeeded", "True", "BackupSucceeded")
        ])
    );
    let status = backups.get("killed").await.expect("get").status.expect("status");
    assert!(status.last_backup.is_some(), "{status:?}");
    let job = cluster.jobs("killed", "manual").await[0].metadata.name.clone().expect("job name");
    assert_eq!(pods_of(&cluster, &job).await, 2, "one killed attempt, one retry");
    assert_eq!(cluster.events("killed", "BackupSucceeded").await, 1);
}

/// A run that fails the same way on every retry is one outcome and one Event; the next
/// run's failure is the next.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_failures_are_one_outcome_and_one_event_per_run() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    let failing = |time: &str| {
        json!({
            "plugin": {"builtin": "sandbox-probe"},
            "database": {"endpoint": "127.0.0.1:9", "name": "db", "options": {"probe": "fail"}},
            "manualTrigger": {"enabled": true, "time": time, "repo": "s3"}
        })
    };
    cluster.create("failing", failing("t1")).await;
    assert_eq!(settled_reason(&backups, "failing", Duration::from_secs(150)).await, "DatabaseError");
    let first = cluster.jobs("failing", "manual").await[0].metadata.name.clone().expect("job name");
    assert_eq!(pods_of(&cluster, &first).await, 3, "a failure a retry may mend is retried");
    // The next run fails too, for another reason no retry mends: its own outcome.
    let mut next = failing("t2");
    next["database"]["options"]["probe"] = json!("no-such-probe");
    backups.patch("failing", &PatchParams::default(), &Patch::Merge(&json!({"spec": next}))).await.expect("patch");
    eventually("the second run failed", Duration::from_secs(90), || async {
        let run = backups.get("failing").await.ok()?.status?.last_run?;
        (run.job != first && !run.succeeded).then_some(())
    })
    .await;
    reconcile_again(&backups, "failing", 4).await;
    assert_eq!(
        conditions(&backups, "failing").await,
        expected(&[
            ("Ready", "True", "Reconciled"),
            ("Running", "False", "Idle"),
            ("Succeeded", "False", "InvalidPluginSettings")
        ])
    );
    assert_eq!(cluster.events("failing", "DatabaseError").await, 1);
    assert_eq!(cluster.events("failing", "InvalidPluginSettings").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_triggers_become_a_cronjob_that_backs_up() {
    let cluster = Cluster::start().await.expect("cluster");
    let backups = cluster.backups();
    // Its Secret has the seed's key names (IBM COS HMAC credentials), not the S3 ones.
    let s3_env = cluster.s3.env();
    let get = |key: &str| s3_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let secret = json!({
        "metadata": {"name": "cos-hmac"},
        "stringData": {"HmacAccessKeyId": get("AWS_ACCESS_KEY_ID"), "HmacSecretAccessKey": get("AWS_SECRET_ACCESS_KEY")}
    });
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("secret");
    let repos = json!([{"name": "s3", "secretName": "cos-hmac", "serviceEndpoint": cluster.s3.endpoint,
                        "bucket": "backups", "region": "us-east-1"}]);
    // A quota that allows no CronJob: Ready says the API server refuses it, once, until
    // the quota is gone.
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let quota = json!({"metadata": {"name": "no-cronjobs"}, "spec": {"hard": {"count/cronjobs.batch": "0"}}});
    quotas.create(&PostParams::default(), &serde_json::from_value(quota).expect("quota")).await.expect("quota");
    eventually("the quota counted", Duration::from_secs(60), || async {
        quotas.get("no-cronjobs").await.ok()?.status?.hard.map(drop)
    })
    .await;
    let trigger = json!({"enabled": true, "schedule": "* * * * *", "repo": "s3"});
    cluster.create("hourly", json!({"repos": repos, "scheduledTrigger": trigger})).await;
    let refused = eventually("Ready=False/WorkloadRefused", Duration::from_secs(30), || async {
        let ready = backups.get("hourly").await.ok()?.status?.condition("Ready")?.clone();
        (ready.status == "False" && ready.reason == "WorkloadRefused").then_some(ready.message)
    })
    .await;
    assert!(
        refused.starts_with(
            "the API server refuses CronJob hourly-scheduled: cronjobs.batch \"hourly-scheduled\" is forbidden: \
             exceeded quota: no-cronjobs"
        ),
        "{refused}"
    );
    reconcile_again(&backups, "hourly", 3).await;
    assert_eq!(cluster.events("hourly", "WorkloadRefused").await, 1);
    quotas.delete("no-cronjobs", &DeleteParams::default()).await.expect("delete the quota");
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
async fn plugins_from_configmaps_are_mounted_and_pinned_by_digest() {
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

    // The Pod mounts the key; the runner reads no ConfigMap through the API.
    let source = |key: &str, sha256: &str| json!({"configMap": {"name": "plugins", "key": key}, "sha256": sha256});
    let manual = json!({"enabled": true, "time": "t1", "repo": "s3"});
    cluster.create("pinned", json!({"plugin": source("generator.wasm", &digest), "manualTrigger": manual})).await;
    let wrong = "0".repeat(64);
    cluster.create("mispinned", json!({"plugin": source("generator.wasm", &wrong), "manualTrigger": manual})).await;
    cluster.create("no-key", json!({"plugin": source("redis.wasm", &digest), "manualTrigger": manual})).await;
    for (name, expected) in
        [("pinned", "BackupSucceeded"), ("mispinned", "PluginDigestMismatch"), ("no-key", "PluginNotFound")]
    {
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
async fn builtin_plugins_back_up_postgres_over_verified_tls_redis_and_mariadb_and_a_wrong_password_is_the_reason() {
    let cluster = Cluster::start().await.expect("cluster");
    let postgres = Postgres::start().expect("postgres");
    postgres.psql("postgres", "CREATE DATABASE shop").expect("database");
    postgres.psql("shop", "CREATE TABLE orders AS SELECT generate_series(1, 1000) AS id").expect("table");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    for (name, password) in [("db", PASSWORD), ("db-wrong", "not-the-password"), ("mariadb", mariadb::PASSWORD)] {
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

    // Redis with requirepass: a password alone, no user.
    let redis = Redis::start(&["--requirepass", PASSWORD, "--repl-diskless-sync-delay", "0"]).expect("redis");
    redis.cli(&["-a", PASSWORD, "--no-auth-warning", "SET", "greeting", "hello"]).expect("write");
    let cache = |secret: &str| {
        json!({
            "plugin": {"builtin": "redis"},
            "database": {
                "endpoint": format!("127.0.0.1:{}", redis.port),
                "name": "0",
                "passwordSecret": {"name": secret, "key": "password"}
            },
            "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
        })
    };
    cluster.create("cache", cache("db")).await;
    cluster.create("cache-wrong", cache("db-wrong")).await;

    // MariaDB through the mysql plugin.
    let orders = Mariadb::start().expect("mariadb");
    orders.sql("", "CREATE DATABASE shop").expect("database");
    orders.sql("shop", "CREATE TABLE orders (id INT PRIMARY KEY) SELECT seq AS id FROM seq_1_to_1000").expect("table");
    let mysql = json!({
        "plugin": {"builtin": "mysql"},
        "database": {
            "endpoint": format!("127.0.0.1:{}", orders.port),
            "name": "shop",
            "user": mariadb::USER,
            "passwordSecret": {"name": "mariadb", "key": "password"}
        },
        "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}
    });
    cluster.create("orders", mysql).await;

    let backups = cluster.backups();
    assert_eq!(settled_reason(&backups, "orders", Duration::from_secs(90)).await, "BackupSucceeded");
    let status = backups.get("orders").await.expect("get").status.expect("status");
    assert!(status.last_backup.expect("last backup").bytes > 0, "the SQL was stored");
    assert_eq!(settled_reason(&backups, "cache", Duration::from_secs(90)).await, "BackupSucceeded");
    let status = backups.get("cache").await.expect("get").status.expect("status");
    assert!(status.last_backup.expect("last backup").bytes > 0, "the RDB was stored");
    assert_eq!(settled_reason(&backups, "cache-wrong", Duration::from_secs(90)).await, "DatabaseAuthenticationFailed");

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

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_installed_for_one_namespace_works_there_and_nowhere_else() {
    let mut cluster = Cluster::start().await.expect("cluster");
    // The namespaced install over the standard one: no ClusterRoleBinding, the operator's
    // rules bound in `database` alone, and an operator told to watch only there.
    cluster.operator = None;
    let admin =
        cluster.plane.access().write_kubeconfig("admin", cluster.plane.access().admin_token()).expect("kubeconfig");
    kubectl(&admin, &["create", "namespace", "database"]).expect("namespace");
    kubectl(&admin, &["apply", "-k", "deploy/namespaced/", "--validate=false"]).expect("deploy/namespaced");
    kubectl(&admin, &["delete", "clusterrolebinding", "stowage-operator"]).expect("the standard install's binding");
    let database: Api<DatabaseBackup> = Api::namespaced(cluster.client.clone(), "database");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "database");
    let mut secret = Api::<Secret>::namespaced(cluster.client.clone(), NAMESPACE).get("s3").await.expect("secret");
    secret.metadata = serde_json::from_value(json!({"name": "s3", "namespace": "database"})).expect("metadata");
    secrets.create(&PostParams::default(), &secret).await.expect("the storage Secret");
    let access = cluster.plane.access();
    cluster.operator = Some(Operator::start_watching(&access, "operator-ns", &["database"]).await.expect("operator"));

    let manual = json!({"manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}});
    for api in [&database, &cluster.backups()] {
        let mut resource = cluster.resource("orders", manual.clone());
        resource.metadata.namespace = api.namespace().map(str::to_owned);
        api.create(&PostParams::default(), &resource).await.expect("create");
    }
    assert_eq!(settled_reason(&database, "orders", Duration::from_secs(90)).await, "BackupSucceeded");
    let elsewhere = cluster.backups().get("orders").await.expect("get");
    assert!(elsewhere.status.is_none(), "a namespace the operator does not watch: {:?}", elsewhere.status);
    assert!(cluster.jobs("orders", "manual").await.is_empty(), "a Job outside the watched namespace");
}
