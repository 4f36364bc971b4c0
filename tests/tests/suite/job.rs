//! `stowage job` against a real API server, with the runner authenticated as the Job's
//! ServiceAccount under the RoleBinding the operator gives it, so RBAC is really
//! exercised, and the environment the operator writes into its Jobs.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::json;
use stowage_api::{AttemptPhase, DatabaseBackup, DatabaseRestore, DatabaseSnapshot, DatabaseSnapshotImport};
use stowage_operator::workloads::{WorkloadSettings, manual_job, role_binding, runner_identity, service_account};
use stowage_tests::kube::{ControlPlane, kubectl};
use stowage_tests::registry::Registry;
use stowage_tests::seaweedfs::SeaweedFs;
use stowage_tests::stowage::{Run, plugin, run};

const NAMESPACE: &str = "team";
/// A namespace the runner of [`NAMESPACE`] has no rights in.
const ELSEWHERE: &str = "elsewhere";

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("valid object");
    api.create(&PostParams::default(), &object).await.expect("create")
}

/// The namespace, the CRDs and the runners' ClusterRoles of `deploy/base/rbac.yaml`.
async fn install(plane: &ControlPlane) -> kube::Client {
    let admin = plane.access().write_kubeconfig("admin", plane.access().admin_token()).expect("kubeconfig");
    kubectl(&admin, &["apply", "-f", "deploy/base/namespace.yaml", "-f", "deploy/base/rbac.yaml"])
        .expect("deploy/base/rbac.yaml");
    let client = plane.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [DatabaseBackup::crd(), DatabaseSnapshot::crd(), DatabaseRestore::crd(), DatabaseSnapshotImport::crd()] {
        crds.create(&PostParams::default(), &crd).await.expect("create CRD");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": NAMESPACE}})).await;
    // The CRDs are served once they are established.
    let backups: Api<DatabaseBackup> = Api::namespaced(client.clone(), NAMESPACE);
    let snapshots: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..100 {
        if backups.list(&Default::default()).await.is_ok() && snapshots.list(&Default::default()).await.is_ok() {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the CRDs were not served");
}

fn resource(name: &str, endpoint: &str) -> serde_json::Value {
    json!({
        "apiVersion": "stowage.dev/v1alpha1",
        "kind": "DatabaseBackup",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "repos": [{
                "name": "local-s3",
                "type": "s3",
                "secretName": "s3-credentials",
                "serviceEndpoint": endpoint,
                "bucketNamePrefix": "stowage-"
            }],
            "plugin": {"builtin": "generator"},
            "database": {"endpoint": "127.0.0.1:9", "name": "orders", "options": {"size": "3000000"}},
            "manualTrigger": {"enabled": true, "time": "2026-11-23T10:00:00Z", "repo": "local-s3"}
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_backs_up_and_keeps_the_status_true() {
    let plane = ControlPlane::start().await.expect("control plane");
    let s3 = SeaweedFs::start().expect("seaweedfs");
    s3.create_bucket("stowage-team").await.expect("bucket");
    let client = install(&plane).await;
    let backups: Api<DatabaseBackup> = Api::namespaced(client.clone(), NAMESPACE);
    create(&backups, resource("orders", &s3.endpoint)).await;
    // The runner's identity exactly as the operator creates it, for "orders" only.
    let orders = backups.get("orders").await.expect("get");
    let apply = PatchParams::apply("stowage-operator");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), NAMESPACE);
    let identity = runner_identity(&orders);
    accounts
        .patch(&identity, &apply, &Patch::Apply(service_account(&orders).expect("account")))
        .await
        .expect("service account");
    bindings.patch(&identity, &apply, &Patch::Apply(role_binding(&orders))).await.expect("role binding");

    let token = plane.access().service_account_token(NAMESPACE, &identity).await.expect("token");
    let kubeconfig = plane.access().write_kubeconfig("runner", &token).expect("kubeconfig");
    let settings = WorkloadSettings {
        runner_image: "stowage-runner:test".into(),
        allowed_runner_images: Vec::new(),
        pod_failure_policy: false,
        cronjob_time_zone: false,
        server_version: "test".into(),
    };
    // The environment of the Job the operator would create for `resource` now (its
    // literal values: the pinned spec and generation), with the Secrets resolved by hand
    // under the original sample's variable names.
    let job_env = |resource: &DatabaseBackup, credentials: bool| {
        let job = manual_job(resource, "t1", "local-s3", &settings).expect("job");
        let mut env: Vec<(String, String)> = job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|var| Some((var["name"].as_str()?.to_owned(), var["value"].as_str()?.to_owned())))
            .collect();
        env.push(("KUBECONFIG".to_owned(), kubeconfig.display().to_string()));
        env.push(("NAMESPACE".to_owned(), NAMESPACE.to_owned()));
        env.push(("STOWAGE_JOB_NAME".to_owned(), "orders-job".to_owned()));
        env.push(("STOWAGE_JOB_UID".to_owned(), "uid-of-orders-job".to_owned()));
        env.push(("STOWAGE_POD_NAME".to_owned(), "orders-job-pod".to_owned()));
        env.push(("CLOUD_OBJECT_STORAGE_REGION".to_owned(), "us-east-1".to_owned()));
        if credentials {
            let s3_env = s3.env();
            let get = |key: &str| s3_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).expect("s3 env");
            env.push(("CLOUD_OBJECT_STORAGE_HMAC_ACCESS_KEY_ID".into(), get("AWS_ACCESS_KEY_ID")));
            env.push(("CLOUD_OBJECT_STORAGE_HMAC_SECRET_ACCESS_KEY".into(), get("AWS_SECRET_ACCESS_KEY")));
        }
        env
    };
    let run_job =
        |env: Vec<(String, String)>| tokio::task::spawn_blocking(move || run(["job"], &env).expect("run stowage job"));

    // The Job is created from generation 1; the spec is edited before its Pod starts:
    // the run is still the one generation 1 asked for.
    let created = job_env(&orders, true);
    let patch = json!({"spec": {"database": {"options": {"size": "1000"}}, "repos": [{
        "name": "local-s3", "type": "s3", "secretName": "s3-credentials", "serviceEndpoint": "http://127.0.0.1:9",
        "bucketNamePrefix": "elsewhere-"
    }]}});
    backups.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch spec");
    let succeeded = run_job(created).await.expect("join").ok().expect("job");
    let id = succeeded.stdout.trim().to_owned();
    let status = backups.get("orders").await.expect("get").status.expect("status");
    // The runner writes its report and the backup, never a condition or observedGeneration.
    assert!(status.conditions.is_empty() && status.observed_generation.is_none(), "{status:?}");
    let attempt = status.latest_attempt.expect("latestAttempt");
    assert_eq!(
        (attempt.phase, attempt.reason.as_str(), attempt.message.as_str(), attempt.generation),
        (AttemptPhase::Succeeded, "BackupSucceeded", "Database has been archived", Some(1))
    );
    assert_eq!(
        (attempt.job.as_str(), attempt.job_uid.as_str(), attempt.pod.as_str()),
        ("orders-job", "uid-of-orders-job", "orders-job-pod")
    );
    assert!(attempt.finished_at.is_some());
    let last = status.last_backup.expect("lastBackup");
    assert_eq!((last.id.as_str(), last.repo.as_str(), last.bytes), (id.as_str(), "local-s3", 3_000_000));
    let manifest = s3
        .client()
        .get_object()
        .bucket("stowage-team")
        .key(format!("{NAMESPACE}/orders/{id}/manifest.json"))
        .send()
        .await;
    assert!(manifest.is_ok(), "no manifest in the bucket named from bucketNamePrefix + namespace");
    // The run created the backup's snapshot object, under the role the operator binds,
    // with the bucket it resolved.
    let snapshots: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), NAMESPACE);
    let snapshot = snapshots.get(&stowage_api::snapshot_name("orders", &id)).await.expect("snapshot object");
    assert_eq!(
        (snapshot.spec.backup_id.as_str(), snapshot.spec.repo.bucket.as_deref()),
        (id.as_str(), Some("stowage-team"))
    );

    // Back to a working repository. A missing input is reported, replacing the attempt
    // (its finish time included) and keeping the last successful backup.
    let patch = json!({"spec": {"repos": [{
        "name": "local-s3", "type": "s3", "secretName": "s3-credentials", "serviceEndpoint": s3.endpoint,
        "bucketNamePrefix": "stowage-"
    }]}});
    let orders = backups.patch("orders", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch spec");
    let failed = run_job(job_env(&orders, false)).await.expect("join");
    let failed = failed.failed().expect("job without credentials");
    assert!(failed.stderr.contains("storage credentials of repository \"local-s3\" are missing"), "{}", failed.stderr);
    assert_eq!(failed.code, Some(i32::from(stowage_api::EXIT_PERMANENT_FAILURE)), "no retry can mend it");
    let status = backups.get("orders").await.expect("get").status.expect("status");
    let attempt = status.latest_attempt.expect("latestAttempt");
    assert_eq!(
        (attempt.phase, attempt.reason.as_str(), attempt.permanent),
        (AttemptPhase::Failed, "MissingStorageCredentials", true)
    );
    assert_eq!(attempt.generation, orders.metadata.generation);
    assert_eq!(status.last_backup.map(|b| b.id), Some(id.clone()));

    // A plugin from a private OCI registry: the pull secret's credentials arrive as
    // STOWAGE_REGISTRY_AUTH (the operator maps `pullSecret` to it); without them the run
    // names what is missing.
    let registry = Registry::start_private("robot", "s3cret").expect("registry");
    let digest = registry.push("team/generator", "1.0", &plugin("generator").expect("generator")).expect("push");
    let reference = format!("{}/team/generator:1.0@{digest}", registry.host());
    let oci = json!({"spec": {"plugin": {"builtin": null, "oci": reference, "pullSecret": "registry"}}});
    let orders = backups.patch("orders", &PatchParams::default(), &Patch::Merge(&oci)).await.expect("patch plugin");
    let oci_job = |credentials: bool| {
        let mut env = job_env(&orders, true);
        env.extend(registry.env().into_iter().filter(|(name, _)| credentials || name == "SSL_CERT_FILE"));
        run_job(env)
    };
    oci_job(false).await.expect("join").failed().expect("job without registry credentials");
    let status = backups.get("orders").await.expect("get").status.expect("status");
    assert_eq!(status.latest_attempt.map(|a| a.reason), Some("MissingRegistryCredentials".to_owned()));
    let pulled = oci_job(true).await.expect("join").ok().expect("job with an oci plugin");
    let manifest = s3
        .client()
        .get_object()
        .bucket("stowage-team")
        .key(format!("{NAMESPACE}/orders/{}/manifest.json", pulled.stdout.trim()))
        .send()
        .await
        .expect("manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest.body.collect().await.expect("read").into_bytes()).expect("json");
    assert_eq!(manifest["plugin"]["source"], format!("oci:{reference}"), "{manifest}");

    // A repository without a Secret (workload identity): the AWS SDK's default chain
    // supplies the keys; here a shared credentials file, where a cluster would give a
    // web-identity token or an EKS Pod Identity endpoint.
    let keyless = json!({"spec": {
        "plugin": {"oci": null, "pullSecret": null, "builtin": "generator"},
        "repos": [{"name": "local-s3", "type": "s3", "serviceEndpoint": s3.endpoint, "bucketNamePrefix": "stowage-"}]
    }});
    let orders = backups.patch("orders", &PatchParams::default(), &Patch::Merge(&keyless)).await.expect("patch repo");
    let profile = tempfile::tempdir().expect("temp dir");
    let credentials = profile.path().join("credentials");
    let s3_env = s3.env();
    let key = |name: &str| s3_env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect("s3 env");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .expect("credentials file");
    let mut env = job_env(&orders, false);
    assert!(!env.iter().any(|(name, _)| name.contains("ACCESS_KEY")), "static keys without a Secret");
    env.push(("AWS_SHARED_CREDENTIALS_FILE".to_owned(), credentials.display().to_string()));
    env.push(("AWS_CONFIG_FILE".to_owned(), profile.path().join("config").display().to_string()));
    run_job(env).await.expect("join").ok().expect("a job with the SDK's credential chain");

    // The runner's ServiceAccount writes reports and snapshot objects in its own namespace
    // only, and reads nothing: no Secret, no ConfigMap, not even a spec.
    let can = |question: &[&str]| {
        let answer = kubectl(&kubeconfig, &[&["auth", "can-i"], question].concat());
        answer.is_ok_and(|answer| answer.trim() == "yes")
    };
    let status = ["patch", "databasebackups.stowage.dev", "--subresource=status", "-n"];
    assert!(can(&[&status[..], &[NAMESPACE]].concat()), "the runner may not report");
    assert!(!can(&[&status[..], &[ELSEWHERE]].concat()), "the runner reaches another namespace");
    for (verb, what) in [
        ("patch", "databasebackups.stowage.dev"),
        ("get", "databasebackups.stowage.dev"),
        ("get", "secrets"),
        ("get", "configmaps"),
    ] {
        assert!(!can(&[verb, what, "-n", NAMESPACE]), "the runner may {verb} {what}");
    }
    // ... and learns so before it backs up anything.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": ELSEWHERE}})).await;
    let elsewhere: Api<DatabaseBackup> = Api::namespaced(client.clone(), ELSEWHERE);
    let mut other = resource("other", &s3.endpoint);
    other["metadata"]["namespace"] = json!(ELSEWHERE);
    let other = create(&elsewhere, other).await;
    let mut env = job_env(&other, true);
    env.retain(|(name, _)| name != "NAMESPACE");
    env.push(("NAMESPACE".to_owned(), ELSEWHERE.to_owned()));
    let forbidden = run_job(env).await.expect("join").failed().expect("job for another namespace");
    assert!(forbidden.stderr.contains("forbidden"), "{}", forbidden.stderr);
    assert!(elsewhere.get("other").await.expect("get").status.is_none(), "the other resource's status was written");
}

#[test]
fn missing_job_inputs_are_named() {
    let result = run(["job"], &[]).and_then(Run::failed).expect("job without environment");
    assert!(result.stderr.contains("environment variable BACKUP_RESOURCE_NAME is not set"), "{}", result.stderr);
}
