//! The operator end to end against a real API server and controller-manager: the
//! standard deployment's RBAC, a kubelet stand-in that runs the runner for Job Pods,
//! SeaweedFS for storage.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use stowage_api::DatabaseBackup;
use stowage_tests::kube::{ClusterAccess, ControlPlane, kubectl};
use stowage_tests::kubelet::{FakeKubelet, PodRuntime};
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{binary, plugin_dir, workspace_binary};

const NAMESPACE: &str = "shop";
const RUNNER_IMAGE: &str = "stowage-runner:test";

/// The operator as a process, authenticated as its ServiceAccount from `deploy/`.
struct Operator {
    child: Child,
    /// Where its /healthz, /readyz and /metrics are served.
    telemetry: String,
}

impl Operator {
    async fn start(access: &ClusterAccess, identity: &str) -> Operator {
        let port = stowage_tests::free_port().expect("port");
        let token = access.service_account_token("stowage-system", "stowage-operator").await.expect("operator token");
        let kubeconfig = access.write_kubeconfig("operator", &token).expect("kubeconfig");
        let child = Command::new(workspace_binary("stowage-operator").expect("operator binary"))
            .arg("run")
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("STOWAGE_RUNNER_IMAGE", RUNNER_IMAGE)
            .env("STOWAGE_OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("POD_NAME", identity)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator");
        Operator { child, telemetry: format!("127.0.0.1:{port}") }
    }

    /// GET a telemetry path; returns the status line and the body.
    async fn get(&self, path: &str) -> Option<(String, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.telemetry).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything an end-to-end test needs, stopped on drop (in reverse order).
struct Cluster {
    _kubelet: FakeKubelet,
    operator: Option<Operator>,
    client: Client,
    s3: SeaweedFs,
    plane: ControlPlane,
}

impl Cluster {
    async fn start() -> Cluster {
        let plane = ControlPlane::start_with_controllers().await.expect("control plane");
        let s3 = SeaweedFs::start().expect("seaweedfs");
        s3.create_bucket("backups").await.expect("bucket");
        let access = plane.access();
        let admin = access.write_kubeconfig("admin", access.admin_token()).expect("kubeconfig");
        kubectl(&admin, &["apply", "-k", "deploy/"]).expect("apply deploy/");
        kubectl(&admin, &["wait", "--for=condition=Established", "crd/databasebackups.stowage.dev", "--timeout=30s"])
            .expect("CRD established");
        let client = plane.client().await.expect("client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("ns"),
            )
            .await
            .expect("namespace");
        let s3_env = s3.env();
        let get = |key: &str| s3_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).expect("s3 env");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let secret = json!({
            "metadata": {"name": "s3"},
            "stringData": {"accessKeyId": get("AWS_ACCESS_KEY_ID"), "secretAccessKey": get("AWS_SECRET_ACCESS_KEY")}
        });
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).expect("secret")).await.expect("secret");
        let runtime = PodRuntime {
            runner_image: RUNNER_IMAGE.into(),
            binary: binary().expect("stowage binary"),
            extra_env: vec![("STOWAGE_PLUGIN_PATH".into(), plugin_dir().expect("plugins").display().to_string())],
        };
        let kubelet = FakeKubelet::start(access.clone(), client.clone(), runtime);
        let operator = Some(Operator::start(&access, "operator-a").await);
        Cluster { _kubelet: kubelet, operator, client, s3, plane }
    }

    fn backups(&self) -> Api<DatabaseBackup> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn create(&self, name: &str, spec_changes: serde_json::Value) {
        let mut resource = json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseBackup",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "repos": [{"name": "s3", "secretName": "s3", "serviceEndpoint": self.s3.endpoint, "bucket": "backups", "region": "us-east-1"}],
                "plugin": {"builtin": "generator"},
                "database": {"endpoint": "127.0.0.1:9", "name": name, "options": {"size": "2000000"}}
            }
        });
        if let (Some(spec), Some(changes)) = (resource["spec"].as_object_mut(), spec_changes.as_object()) {
            spec.extend(changes.clone());
        }
        let resource: DatabaseBackup = serde_json::from_value(resource).expect("resource");
        self.backups().create(&PostParams::default(), &resource).await.expect("create DatabaseBackup");
    }

    async fn jobs(&self, name: &str, trigger: &str) -> Vec<Job> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("stowage.dev/backup={name},stowage.dev/trigger={trigger}");
        jobs.list(&ListParams::default().labels(&selector)).await.expect("list jobs").items
    }
}

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

#[tokio::test(flavor = "multi_thread")]
async fn manual_triggers_run_once_per_time_and_report_in_the_status() {
    let mut cluster = Cluster::start().await;
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
    let standby = Operator::start(&cluster.plane.access(), "operator-b").await;
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
    let reason = eventually("failure reported", Duration::from_secs(90), || async {
        match outcome(&backups, "no-credentials").await {
            Some((status, reason, _)) if status == "False" => Some(reason),
            _ => None,
        }
    })
    .await;
    assert_eq!(reason, "MissingStorageCredentials");

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

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_without_a_report_fails_the_resource() {
    let cluster = Cluster::start().await;
    let backups = cluster.backups();
    cluster
        .create(
            "bad-image",
            json!({"runnerImage": "no-such-image:1", "manualTrigger": {"enabled": true, "time": "t1", "repo": "s3"}}),
        )
        .await;
    let reason = eventually("job failure reported", Duration::from_secs(150), || async {
        match outcome(&backups, "bad-image").await {
            Some((status, reason, _)) if status == "False" => Some(reason),
            _ => None,
        }
    })
    .await;
    assert_eq!(reason, "JobBackoffLimitExceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_triggers_become_a_cronjob_that_backs_up() {
    let cluster = Cluster::start().await;
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
