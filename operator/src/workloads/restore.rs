//! What the operator creates for each DatabaseRestore: the runner's ServiceAccount and
//! RoleBinding, and the one Job of each generation, which carries its resolved plan.

use kube::ResourceExt;
use serde_json::Value;
use stowage_api::{DatabaseRestore, FieldError, Limits, RestorePlan};

use super::{
    OneShotJob, RESTORE_RUNNER_ROLE, WorkloadSettings, database_env, one_shot_identity, one_shot_job,
    one_shot_metadata, role_binding_object, secret_env, service_account_object, storage_env, value_env,
};

/// The label on everything the operator creates for a restore.
pub const LABEL_RESTORE: &str = "stowage.dev/restore";
const WORK: &str = "Restore";

fn identity(restore: &DatabaseRestore) -> String {
    one_shot_identity(&restore.name_any(), WORK)
}

/// The restore runner's ServiceAccount (with the resource's `serviceAccountTemplate`).
pub fn service_account(restore: &DatabaseRestore) -> Value {
    let meta = one_shot_metadata(restore, LABEL_RESTORE, &identity(restore));
    service_account_object(meta, restore.spec.service_account_template.as_ref())
}

/// Grants the runner what `deploy/base/rbac.yaml` gives every restore runner in its namespace:
/// writing the report into a DatabaseRestore's status.
pub fn role_binding(restore: &DatabaseRestore) -> Value {
    let name = identity(restore);
    role_binding_object(
        one_shot_metadata(restore, LABEL_RESTORE, &name),
        &name,
        restore.namespace(),
        RESTORE_RUNNER_ROLE,
    )
}

/// The Job of `generation`, running `plan`.
pub fn restore_job(
    restore: &DatabaseRestore,
    generation: i64,
    plan: &RestorePlan,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let text = serde_json::to_string(plan).map_err(|e| FieldError::new("spec", e.to_string()))?;
    let mut env = vec![value_env("STOWAGE_RESOURCE_NAME", restore.name_any()), value_env("STOWAGE_RESTORE_PLAN", text)];
    env.extend(storage_env(&plan.repo));
    env.extend(database_env(&plan.database, &plan.plugin));
    if let Some(identity) = &restore.spec.age_identity_secret {
        env.push(secret_env("STOWAGE_AGE_IDENTITY", &identity.name, &identity.key));
    }
    let limits = plan.limits.as_ref();
    let deadline = Limits::deadline_of(limits)?;
    let job = OneShotJob {
        label: LABEL_RESTORE,
        work: WORK,
        command: "restore-job",
        generation,
        env,
        plugin: plan.plugin.config_map.as_ref(),
        plugin_memory_mib: limits.and_then(|l| l.plugin_memory_mib),
        deadline,
    };
    Ok(one_shot_job(restore, job, settings))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn restore() -> DatabaseRestore {
        serde_json::from_value(json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseRestore",
            "metadata": {"name": "shop-copy", "namespace": "prod", "uid": "r-1", "generation": 1},
            "spec": {"snapshot": "shop-20261204t101500z-0a1b2c", "ageIdentitySecret": {"name": "age", "key": "identity"}}
        }))
        .expect("restore")
    }

    fn plan() -> RestorePlan {
        serde_json::from_value(json!({
            "repo": {"name": "s3", "secretName": "s3", "bucket": "backups"},
            "sourceNamespace": "prod",
            "databaseBackup": "shop",
            "backupId": "20261204T101500Z-0a1b2c",
            "plugin": {"configMap": {"name": "plugins", "key": "pg.wasm"}, "sha256": "ab".repeat(32)},
            "database": {"endpoint": "db:5432", "name": "shop_copy", "passwordSecret": {"name": "db", "key": "password"}},
            "replace": false
        }))
        .expect("plan")
    }

    fn settings() -> WorkloadSettings {
        WorkloadSettings {
            runner_image: "stowage-runner:test".into(),
            allowed_runner_images: Vec::new(),
            pod_failure_policy: false,
            cronjob_time_zone: false,
            server_version: "v1.20.2".into(),
        }
    }

    #[test]
    fn a_generation_has_one_job_that_carries_its_plan_and_secrets_by_reference() {
        let restore = restore();
        let job = restore_job(&restore, 1, &plan(), &settings()).expect("job");
        let next = restore_job(&restore, 2, &plan(), &settings()).expect("job");
        assert_ne!(job["metadata"]["name"], next["metadata"]["name"], "a generation's Job has its own name");
        assert_eq!(
            job["metadata"]["name"],
            restore_job(&restore, 1, &plan(), &settings()).expect("job")["metadata"]["name"]
        );
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"][0], "restore-job");
        let env = |name: &str| container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).cloned();
        let carried: RestorePlan = serde_json::from_str(
            env("STOWAGE_RESTORE_PLAN").and_then(|v| v["value"].as_str().map(str::to_owned)).as_deref().expect("plan"),
        )
        .expect("a plan");
        assert_eq!(carried, plan());
        assert_eq!(env("AWS_ACCESS_KEY_ID").expect("key")["valueFrom"]["secretKeyRef"]["name"], "s3");
        assert_eq!(env("STOWAGE_DATABASE_PASSWORD").expect("password")["valueFrom"]["secretKeyRef"]["name"], "db");
        assert_eq!(env("STOWAGE_AGE_IDENTITY").expect("identity")["valueFrom"]["secretKeyRef"]["key"], "identity");
        assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], "shop-copy-stowage-restore");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "DatabaseRestore");
    }

    #[test]
    fn the_restore_runner_is_bound_to_the_restore_runner_role_and_gets_its_plugin_mounted() {
        assert_eq!(role_binding(&restore())["roleRef"]["name"], RESTORE_RUNNER_ROLE);
        let job = restore_job(&restore(), 1, &plan(), &settings()).expect("job");
        let volumes = job["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes").clone();
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == "plugins"), "{volumes:?}");
    }
}
