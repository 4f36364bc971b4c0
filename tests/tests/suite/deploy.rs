//! The standard deployment in `deploy/`: the CRD is generated from the Rust types, and
//! everything (CRD, RBAC, operator Deployment, samples) is accepted by a real API server;
//! the Helm chart renders the same objects as kustomize.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::json;

use stowage_tests::cluster::wait_for_crds;
use stowage_tests::kube::{ControlPlane, apply_deployment, kubectl};
use stowage_tests::stowage::workspace_binary;

fn repository_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_checked_in_crd_is_generated_from_the_rust_types() {
    let output = Command::new(workspace_binary("stowage-operator").expect("operator binary"))
        .arg("crd")
        .output()
        .expect("stowage-operator crd");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let checked_in =
        std::fs::read_to_string(repository_root().join("deploy/base/crd.yaml")).expect("deploy/base/crd.yaml");
    assert!(
        String::from_utf8_lossy(&output.stdout) == checked_in,
        "deploy/base/crd.yaml is stale: regenerate it with `stowage-operator crd > deploy/base/crd.yaml`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployment_and_the_samples_apply_to_a_real_api_server() {
    // With the controllers: the built-in view and edit roles aggregate Stowage's.
    let plane = ControlPlane::start_with_controllers().await.expect("control plane");
    let kubeconfig = plane.access().write_kubeconfig("admin", plane.access().admin_token()).expect("kubeconfig");
    let kubeconfig = kubeconfig.as_path();
    let applied = apply_deployment(kubeconfig).expect("kubectl");
    assert!(applied.contains("customresourcedefinition.apiextensions.k8s.io/databasebackups.stowage.dev"), "{applied}");
    wait_for_crds(kubeconfig).expect("kubectl wait");
    kubectl(kubeconfig, &["create", "namespace", "database"]).expect("kubectl");
    // The API server validates the samples against the generated schema.
    kubectl(kubeconfig, &["apply", "-f", "deploy/samples/"]).expect("kubectl");
    let listed = kubectl(kubeconfig, &["get", "dbbackup", "-n", "database", "-o", "name"]).expect("kubectl");
    assert!(listed.contains("databasebackup-manual") && listed.contains("databasebackup-hourly"), "{listed}");
    // The seed's field names survive the API server's pruning.
    let region = kubectl(
        kubeconfig,
        &["get", "dbbackup", "databasebackup-manual", "-n", "database", "-o", "jsonpath={.spec.repos[0].cosRegion}"],
    )
    .expect("kubectl");
    assert_eq!(region.trim(), "eu-geo", "cosRegion was pruned");

    // Users bound to the built-in roles: `view` reads DatabaseBackups, `edit` changes them.
    for (user, role) in [("viewer", "view"), ("editor", "edit")] {
        kubectl(
            kubeconfig,
            &[
                "create",
                "rolebinding",
                user,
                "-n",
                "database",
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
        )
        .expect("kubectl");
    }
    let can_on = |user: &str, verb: &str, resource: &str| {
        let output = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["auth", "can-i", verb, &format!("{resource}.stowage.dev"), "-n", "database", "--as", user])
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    let can = |user: &str, verb: &str| can_on(user, verb, "databasebackups");
    let mut aggregated = false;
    for _ in 0..60 {
        aggregated = can("viewer", "list") && can("editor", "create");
        if aggregated {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(aggregated, "the view and edit roles did not aggregate Stowage's");
    assert!(!can("viewer", "create") && !can("viewer", "delete"), "view may change DatabaseBackups");
    // Restores are the users' to create; snapshot objects are the runs' to write (users
    // may delete one, which never deletes a stored backup).
    assert!(can_on("viewer", "list", "databasesnapshots") && can_on("viewer", "get", "databaserestores"));
    assert!(!can_on("viewer", "create", "databaserestores"), "view may start restores");
    assert!(can_on("editor", "create", "databaserestores") && can_on("editor", "delete", "databasesnapshots"));
    assert!(!can_on("editor", "create", "databasesnapshots"), "edit may forge snapshot objects");
    assert!(
        can_on("editor", "create", "databasesnapshotimports") && can_on("viewer", "list", "databasesnapshotimports")
    );
    let restores = kubectl(kubeconfig, &["get", "dbrestore", "-n", "database", "-o", "name"]).expect("kubectl");
    assert!(restores.contains("shop-copy") && restores.contains("shop-yesterday"), "{restores}");
    let imports = kubectl(kubeconfig, &["get", "dbimport", "-n", "database", "-o", "name"]).expect("kubectl");
    assert!(imports.contains("from-old-cluster"), "{imports}");
    let rejected = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(
                b"apiVersion: stowage.dev/v1alpha1\nkind: DatabaseBackup\nmetadata: {name: bad, namespace: database}\n\
                  spec: {repos: [], plugin: {builtin: postgres}, database: {endpoint: 'db:5432', name: x}, compression: gzip}\n",
            )?;
            child.wait_with_output()
        })
        .expect("kubectl apply");
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(!rejected.status.success() && stderr.contains("compression"), "an invalid resource was accepted: {stderr}");
}

/// The objects of a multi-document manifest but Namespaces, by kind, namespace and name.
fn objects(manifest: &str) -> BTreeMap<String, serde_json::Value> {
    let mut objects = BTreeMap::new();
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let object = serde_json::Value::deserialize(document).expect("a YAML document");
        if object.is_null() || object["kind"] == "Namespace" {
            continue;
        }
        let key = format!("{}/{}/{}", object["kind"], object["metadata"]["namespace"], object["metadata"]["name"]);
        assert!(objects.insert(key.clone(), object).is_none(), "{key} twice");
    }
    objects
}

/// `kubectl kustomize DIR`.
fn kustomize(dir: &str) -> String {
    kubectl(Path::new("/dev/null"), &["kustomize", dir]).expect("kubectl kustomize")
}

/// `deploy/helm/stowage` rendered by Helm's own engine with `values`, as
/// `helm template stowage deploy/helm/stowage -n stowage-system` renders it.
fn helm_template(values: serde_json::Value) -> String {
    const RENDER: &str = "import json, sys\nfrom helm_python import chart\n\
        rendered = chart.Chart.load(sys.argv[1]).render(json.loads(sys.argv[2]), name='stowage', namespace='stowage-system')\n\
        print('\\n---\\n'.join(rendered.values()))";
    let output = Command::new("python3")
        .env("PYTHONPATH", stowage_tests::cache_dir().join("helm-sdk"))
        .args(["-c", RENDER])
        .arg(repository_root().join("deploy/helm/stowage"))
        .arg(values.to_string())
        .output()
        .expect("python3 with the Helm SDK (scripts/setup/helm-sdk.sh)");
    assert!(output.status.success(), "helm render: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The same objects; the ones that differ are named.
fn assert_same(helm: BTreeMap<String, serde_json::Value>, kustomize: BTreeMap<String, serde_json::Value>) {
    let keys: std::collections::BTreeSet<&String> = helm.keys().chain(kustomize.keys()).collect();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|key| helm.get(*key) != kustomize.get(*key))
        .map(|key| format!("{key}:\n  helm:      {:?}\n  kustomize: {:?}", helm.get(key), kustomize.get(key)))
        .collect();
    assert!(differing.is_empty(), "the chart renders other objects than kustomize:\n{}", differing.join("\n"));
}

#[test]
fn the_helm_chart_renders_what_kustomize_does() {
    // The CRDs are the same file (crds/ links to deploy/base/crd.yaml); the Namespace is
    // Helm's to create (`--create-namespace`).
    let crds = std::fs::read_to_string(repository_root().join("deploy/helm/stowage/crds/crd.yaml")).expect("crds");
    assert_eq!(
        objects(&crds),
        objects(&std::fs::read_to_string(repository_root().join("deploy/base/crd.yaml")).expect("crd"))
    );
    let without_crds = |manifest: &str| {
        let mut objects = objects(manifest);
        objects.retain(|key, _| !key.starts_with("\"CustomResourceDefinition\""));
        objects
    };
    assert_same(objects(&helm_template(json!({}))), without_crds(&kustomize("deploy/")));
    let namespaced = json!({"watchNamespaces": ["database"]});
    assert_same(objects(&helm_template(namespaced)), without_crds(&kustomize("deploy/namespaced/")));
    // Values change what they name.
    let values = json!({
        "image": {"operator": "registry.example/stowage-operator:1", "runner": "registry.example/stowage-runner:1"},
        "allowedRunnerImages": ["registry.example/stowage-runner:2"],
        "replicas": 1,
        "metrics": {"port": 9090, "prometheusRule": true}
    });
    let rendered = objects(&helm_template(values));
    let deployment = &rendered["\"Deployment\"/\"stowage-system\"/\"stowage-operator\""];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&container["image"], &deployment["spec"]["replicas"]),
        (&json!("registry.example/stowage-operator:1"), &json!(1))
    );
    let env = |name: &str| {
        container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).map(|v| v["value"].clone())
    };
    assert_eq!(env("STOWAGE_RUNNER_IMAGE"), Some(json!("registry.example/stowage-runner:1")));
    assert_eq!(env("STOWAGE_ALLOWED_RUNNER_IMAGES"), Some(json!("registry.example/stowage-runner:2")));
    assert_eq!(env("STOWAGE_OPERATOR_LISTEN"), Some(json!("0.0.0.0:9090")));
    assert!(rendered.contains_key("\"PrometheusRule\"/\"stowage-system\"/\"stowage\""), "{:?}", rendered.keys());
}
