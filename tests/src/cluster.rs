//! A whole local installation: control plane with controllers, SeaweedFS, the standard
//! deployment from `deploy/`, the operator running as its ServiceAccount, and a kubelet
//! stand-in that runs backup Pods with the `stowage` binary.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use stowage_api::DatabaseBackup;

use crate::Result;
use crate::kube::{ClusterAccess, ControlPlane, apply_deployment, kubectl};
use crate::kubelet::{FakeKubelet, PodRuntime};
use crate::seaweedfs::SeaweedFs;
use crate::stowage::{binary, plugin_dir, workspace_binary};

/// The namespace the DatabaseBackups live in.
pub const NAMESPACE: &str = "shop";
/// The runner image the kubelet stand-in "has".
pub const RUNNER_IMAGE: &str = "stowage-runner:test";
/// An image the test operator allows in `runnerImage` that no Pod can start.
pub const ALLOWED_BROKEN_IMAGE: &str = "no-such-image:1";

/// The operator as a process, authenticated as its ServiceAccount from `deploy/`.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    /// Where its /healthz, /readyz and /metrics are served.
    pub telemetry: String,
}

impl Operator {
    /// Start a replica called `identity`.
    pub async fn start(access: &ClusterAccess, identity: &str) -> Result<Operator> {
        Self::start_watching(access, identity, &[]).await
    }

    /// Start a replica called `identity` that watches only `namespaces` (all if empty).
    pub async fn start_watching(access: &ClusterAccess, identity: &str, namespaces: &[&str]) -> Result<Operator> {
        let port = crate::free_port()?;
        let token = access.service_account_token("stowage-system", "stowage-operator").await?;
        let kubeconfig = access.write_kubeconfig("operator", &token)?;
        // The operator benchmark runs the release build, as deployed.
        let binary = match std::env::var_os("STOWAGE_OPERATOR_BINARY") {
            Some(binary) => binary.into(),
            None => workspace_binary("stowage-operator")?,
        };
        let child = Command::new(binary)
            .arg("run")
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("STOWAGE_RUNNER_IMAGE", RUNNER_IMAGE)
            .env("STOWAGE_ALLOWED_RUNNER_IMAGES", ALLOWED_BROKEN_IMAGE)
            .env("STOWAGE_OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("POD_NAME", identity)
            .env("STOWAGE_WATCH_NAMESPACES", namespaces.join(","))
            // Debugging a test: STOWAGE_OPERATOR_LOG=debug shows what the operator does.
            .env("STOWAGE_LOG", std::env::var("STOWAGE_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Operator { child, telemetry: format!("127.0.0.1:{port}") })
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET a telemetry path; returns the status line and the body.
    pub async fn get(&self, path: &str) -> Option<(String, String)> {
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
pub struct Cluster {
    _kubelet: Option<FakeKubelet>,
    pub operator: Option<Operator>,
    pub client: Client,
    pub s3: SeaweedFs,
    pub plane: ControlPlane,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("plane", &self.plane).field("s3", &self.s3).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Start everything; the bucket `backups` and the Secret `s3` with its credentials exist.
    pub async fn start() -> Result<Cluster> {
        Self::start_with(true).await
    }

    /// The same without the kubelet stand-in: runner Pods stay Pending (the operator
    /// benchmark plays their runners itself).
    pub async fn without_kubelet() -> Result<Cluster> {
        Self::start_with(false).await
    }

    async fn start_with(kubelet: bool) -> Result<Cluster> {
        let plane = ControlPlane::start_with_controllers().await?;
        let s3 = SeaweedFs::start()?;
        s3.create_bucket("backups").await?;
        let access = plane.access();
        let admin = access.write_kubeconfig("admin", access.admin_token())?;
        apply_deployment(&admin)?;
        wait_for_crds(&admin)?;
        let client = plane.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?)
            .await?;
        let s3_env = s3.env();
        let get = |key: &str| s3_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let secret = json!({
            "metadata": {"name": "s3"},
            "stringData": {"accessKeyId": get("AWS_ACCESS_KEY_ID"), "secretAccessKey": get("AWS_SECRET_ACCESS_KEY")}
        });
        secrets.create(&PostParams::default(), &serde_json::from_value(secret)?).await?;
        let kubelet = match kubelet {
            true => {
                let runtime = PodRuntime {
                    runner_image: RUNNER_IMAGE.into(),
                    binary: binary()?,
                    extra_env: vec![("STOWAGE_PLUGIN_PATH".into(), plugin_dir()?.display().to_string())],
                };
                Some(FakeKubelet::start(access.clone(), client.clone(), runtime))
            }
            // No runner runs: the operator benchmark needs neither its binary nor plugins.
            false => None,
        };
        let operator = Some(Operator::start(&access, "operator-a").await?);
        Ok(Cluster { _kubelet: kubelet, operator, client, s3, plane })
    }

    pub fn backups(&self) -> Api<DatabaseBackup> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Create a DatabaseBackup of the generator plugin into the bucket, with `spec_changes`
    /// merged into its spec.
    pub async fn create(&self, name: &str, spec_changes: serde_json::Value) {
        let resource = self.resource(name, spec_changes);
        self.backups().create(&PostParams::default(), &resource).await.expect("create DatabaseBackup");
    }

    /// A DatabaseBackup of the generator plugin into the bucket, with `spec_changes` merged
    /// into its spec.
    pub fn resource(&self, name: &str, spec_changes: serde_json::Value) -> DatabaseBackup {
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
        serde_json::from_value(resource).expect("resource")
    }

    /// How many Events with `reason` were published about resource `name` (repeats of one
    /// Event count in its series).
    pub async fn events(&self, name: &str, reason: &str) -> i32 {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let listed = api.list(&Default::default()).await.expect("events").items;
        listed
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |series| series.count))
            .sum()
    }

    /// The Jobs of one resource and trigger.
    pub async fn jobs(&self, name: &str, trigger: &str) -> Vec<Job> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("stowage.dev/backup={name},stowage.dev/trigger={trigger}");
        jobs.list(&ListParams::default().labels(&selector)).await.expect("list jobs").items
    }
}

/// Wait until the API server serves every CRD of `deploy/`.
pub fn wait_for_crds(kubeconfig: &std::path::Path) -> Result<String> {
    let crds = ["databasebackups", "databasesnapshots", "databaserestores", "databasesnapshotimports"]
        .map(|plural| format!("crd/{plural}.stowage.dev"));
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=30s"];
    args.extend(crds.iter().map(String::as_str));
    kubectl(kubeconfig, &args)
}

/// Poll `check` until it returns a value; panics when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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
