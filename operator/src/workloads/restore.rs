//! What the operator creates for each DatabaseRestore: the runner's ServiceAccount, Role
//! and RoleBinding, and the one Job of each generation, which carries its resolved plan.

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use stowage_api::{DEFAULT_DEADLINE, DatabaseRestore, FieldError, RestorePlan, short_hash};

use super::{
    LABEL_MANAGED_BY, MANAGED_BY, NAME_PREFIX, RunnerPod, WorkloadSettings, database_env, pod_env, role_binding_object,
    role_object, runner_job_spec, secret_env, service_account_object, storage_env, truncate, value_env,
};

/// The label on everything the operator creates for a restore.
pub const LABEL_RESTORE: &str = "stowage.dev/restore";

/// The name of the runner's ServiceAccount, Role and RoleBinding for a restore.
pub fn restore_identity(restore: &DatabaseRestore) -> String {
    format!("{}-stowage-restore", restore.name_any())
}

/// The Job of one generation: named after a hash of the UID and the generation, so a
/// generation can never run twice.
pub fn restore_job_name(restore: &DatabaseRestore, generation: i64) -> String {
    let digest = short_hash(&[restore.uid().as_deref().unwrap_or_default(), &generation.to_string()]);
    format!("{}-restore-{digest}", truncate(&restore.name_any(), NAME_PREFIX))
}

fn metadata(restore: &DatabaseRestore, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": restore.namespace(),
        "labels": labels(restore),
        "ownerReferences": restore.controller_owner_ref(&()).map(|owner| vec![owner]),
    })
}

fn labels(restore: &DatabaseRestore) -> Value {
    json!({ LABEL_RESTORE: restore.name_any(), LABEL_MANAGED_BY: MANAGED_BY })
}

/// The restore runner's ServiceAccount (with the resource's `serviceAccountTemplate`).
pub fn service_account(restore: &DatabaseRestore) -> Value {
    let meta = metadata(restore, &restore_identity(restore));
    service_account_object(meta, restore.spec.service_account_template.as_ref())
}

/// What the restore runner may do: write this one resource's status, and read the
/// ConfigMap holding its plugin, if any.
pub fn role(restore: &DatabaseRestore, plan: &RestorePlan) -> Value {
    let rules = vec![json!({
        "apiGroups": [DatabaseRestore::group(&())],
        "resources": ["databaserestores/status"],
        "resourceNames": [restore.name_any()],
        "verbs": ["patch"]
    })];
    role_object(metadata(restore, &restore_identity(restore)), rules, &plan.plugin)
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(restore: &DatabaseRestore) -> Value {
    let identity = restore_identity(restore);
    role_binding_object(metadata(restore, &identity), &identity, restore.namespace())
}

/// The Job of `generation`, running `plan`. One Pod: a restore that failed is not tried
/// again behind the user's back (a second attempt would meet the first one's state and
/// hide its reason); a new generation runs it again.
pub fn restore_job(
    restore: &DatabaseRestore,
    generation: i64,
    plan: &RestorePlan,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let text = serde_json::to_string(plan).map_err(|e| FieldError::new("spec", e.to_string()))?;
    let mut env = vec![
        value_env("STOWAGE_RESTORE_NAME", restore.name_any()),
        value_env("STOWAGE_RESTORE_PLAN", text),
        value_env("STOWAGE_RUN_GENERATION", generation.to_string()),
    ];
    env.extend(pod_env());
    env.extend(storage_env(&plan.repo));
    env.extend(database_env(&plan.database, &plan.plugin));
    if let Some(identity) = &restore.spec.age_identity_secret {
        env.push(secret_env("STOWAGE_AGE_IDENTITY", &identity.name, &identity.key));
    }
    let limits = plan.limits.as_ref();
    let deadline = match limits.and_then(|l| l.deadline.as_deref()) {
        Some(value) => humantime::parse_duration(value)
            .map_err(|e| FieldError::new("spec.limits.deadline", format!("{value:?}: {e}")))?,
        None => DEFAULT_DEADLINE,
    };
    let pod = RunnerPod {
        command: "restore-job",
        service_account: restore_identity(restore),
        labels: labels(restore),
        env,
        image: &settings.runner_image,
        plugin_memory_mib: limits.and_then(|l| l.plugin_memory_mib),
        deadline,
        backoff_limit: 0,
    };
    let mut meta = metadata(restore, &restore_job_name(restore, generation));
    meta["annotations"] = json!({"stowage.dev/generation": generation.to_string()});
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": runner_job_spec(pod, settings.pod_failure_policy),
    }))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(restore_job_name(&restore, 1), restore_job_name(&restore, 1));
        assert_ne!(restore_job_name(&restore, 1), restore_job_name(&restore, 2));
        let job = restore_job(&restore, 1, &plan(), &settings()).expect("job");
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
    fn the_restore_runner_reaches_its_own_status_and_plugin_only() {
        let role = role(&restore(), &plan());
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": ["stowage.dev"], "resources": ["databaserestores/status"], "resourceNames": ["shop-copy"], "verbs": ["patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["plugins"], "verbs": ["get"]}
            ])
        );
    }
}
