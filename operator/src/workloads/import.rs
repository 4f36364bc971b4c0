//! What the operator creates for each DatabaseSnapshotImport: the runner's ServiceAccount
//! and RoleBinding, and the one Job of each generation, which carries the spec. They
//! are labelled `stowage.dev/import` like the snapshot objects the import makes.

use kube::ResourceExt;
use serde_json::Value;
use stowage_api::{DEFAULT_DEADLINE, DatabaseSnapshotImport, FieldError, LABEL_IMPORT};

use super::{
    IMPORT_RUNNER_ROLE, OneShotJob, WorkloadSettings, one_shot_identity, one_shot_job, one_shot_metadata,
    role_binding_object, service_account_object, storage_env, value_env,
};

const WORK: &str = "Import";

fn identity(import: &DatabaseSnapshotImport) -> String {
    one_shot_identity(&import.name_any(), WORK)
}

/// The import runner's ServiceAccount (with the resource's `serviceAccountTemplate`).
pub fn service_account(import: &DatabaseSnapshotImport) -> Value {
    let meta = one_shot_metadata(import, LABEL_IMPORT, &identity(import));
    service_account_object(meta, import.spec.service_account_template.as_ref())
}

/// Grants the runner what `deploy/base/rbac.yaml` gives every import runner in its namespace:
/// writing the report into a DatabaseSnapshotImport's status, and keeping the snapshot
/// objects of the namespace in line with the repository.
pub fn role_binding(import: &DatabaseSnapshotImport) -> Value {
    let name = identity(import);
    role_binding_object(one_shot_metadata(import, LABEL_IMPORT, &name), &name, import.namespace(), IMPORT_RUNNER_ROLE)
}

/// The Job of `generation`, importing what the spec says.
pub fn import_job(
    import: &DatabaseSnapshotImport,
    generation: i64,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let spec = serde_json::to_string(&import.spec).map_err(|e| FieldError::new("spec", e.to_string()))?;
    let mut env = vec![
        value_env("STOWAGE_RESOURCE_NAME", import.name_any()),
        value_env("STOWAGE_RESOURCE_UID", import.uid().unwrap_or_default()),
        value_env("STOWAGE_RUN_SPEC", spec),
    ];
    env.extend(storage_env(&import.spec.repo));
    let job = OneShotJob {
        label: LABEL_IMPORT,
        work: WORK,
        command: "import-job",
        generation,
        env,
        plugin: None,
        plugin_memory_mib: None,
        deadline: DEFAULT_DEADLINE,
    };
    Ok(one_shot_job(import, job, settings))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_import_runner_writes_its_status_and_the_snapshot_objects_only() {
        let import: DatabaseSnapshotImport = serde_json::from_value(json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseSnapshotImport",
            "metadata": {"name": "dr", "namespace": "recovery", "uid": "i-1"},
            "spec": {"repo": {"name": "s3", "secretName": "s3", "bucket": "backups"}, "sourceNamespace": "shop"}
        }))
        .expect("import");
        assert_eq!(role_binding(&import)["roleRef"]["name"], IMPORT_RUNNER_ROLE);
        let settings = WorkloadSettings {
            runner_image: "stowage-runner:test".into(),
            allowed_runner_images: Vec::new(),
            pod_failure_policy: false,
            cronjob_time_zone: false,
            server_version: "v1.20.2".into(),
        };
        let job = import_job(&import, 3, &settings).expect("job");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"][0], "import-job");
        let env = |name: &str| container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).cloned();
        assert_eq!(env("STOWAGE_RESOURCE_UID").expect("uid")["value"], "i-1");
        assert_eq!(env("AWS_ACCESS_KEY_ID").expect("key")["valueFrom"]["secretKeyRef"]["name"], "s3");
        assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], "dr-stowage-import");
    }
}
