//! What the operator creates for each DatabaseBackup: the runner's ServiceAccount, Role
//! and RoleBinding, the Job of a manual trigger and the CronJob of a scheduled one. All
//! are plain functions of the resource, so they are tested without a cluster.

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stowage_api::{
    DatabaseBackup, DatabaseBackupSpec, EXIT_PERMANENT_FAILURE, FieldError, InvalidSpec, ScheduledTrigger,
};

/// Labels on everything the operator creates for a resource.
pub const LABEL_BACKUP: &str = "stowage.dev/backup";
pub const LABEL_TRIGGER: &str = "stowage.dev/trigger";
const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Finished Jobs are deleted after a day (their outcome is in the resource's status).
const TTL_AFTER_FINISHED: u64 = 24 * 3600;
/// Memory for the runner itself besides the plugin's limit.
const RUNNER_MEMORY_MIB: u32 = 256;
const DEFAULT_PLUGIN_MEMORY_MIB: u32 = 512;
/// How late a missed scheduled run may start unless the trigger says.
const DEFAULT_STARTING_DEADLINE_SECONDS: i64 = 600;

/// Settings of the operator that shape workloads.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    /// The runner image used unless a resource sets `runnerImage`.
    pub runner_image: String,
    /// Further images a resource may name in `runnerImage`. Whoever may create a
    /// DatabaseBackup may not run any image with its Secrets: an administrator allows them.
    pub allowed_runner_images: Vec<String>,
    /// Whether the API server serves Job `podFailurePolicy` (Kubernetes 1.26+).
    pub pod_failure_policy: bool,
    /// Whether it serves CronJob `timeZone` (Kubernetes 1.27+).
    pub cronjob_time_zone: bool,
    /// The API server's version, for messages.
    pub server_version: String,
}

impl WorkloadSettings {
    /// The runner image of `spec`'s Jobs: the operator's, or an allowed `runnerImage`.
    pub fn runner_image<'a>(&'a self, spec: &'a DatabaseBackupSpec) -> Result<&'a str, FieldError> {
        match spec.runner_image.as_deref() {
            None => Ok(&self.runner_image),
            Some(image) if image == self.runner_image || self.allowed_runner_images.iter().any(|a| a == image) => {
                Ok(image)
            }
            Some(image) => Err(FieldError::new(
                "spec.runnerImage",
                format!(
                    "image {image:?} is not allowed by the operator (it runs {:?}; an administrator allows \
                     others with --allowed-runner-images)",
                    self.runner_image
                ),
            )),
        }
    }

    /// Every rule of `spec`: the shared ones, and the operator's own (`runnerImage`).
    pub fn check(&self, spec: &DatabaseBackupSpec) -> Result<(), InvalidSpec> {
        let mut errors = spec.validate().err().map(|invalid| invalid.0).unwrap_or_default();
        if let Err(error) = self.runner_image(spec) {
            errors.push(error);
        }
        if spec.scheduled_trigger.as_ref().is_some_and(|t| t.time_zone.is_some()) && !self.cronjob_time_zone {
            errors.push(FieldError::new(
                "spec.scheduledTrigger.timeZone",
                format!(
                    "needs a CronJob timeZone, which Kubernetes serves from 1.27; this API server is {}: \
                     remove it and write the schedule in the controller's time zone (UTC)",
                    self.server_version
                ),
            ));
        }
        if errors.is_empty() { Ok(()) } else { Err(InvalidSpec(errors)) }
    }
}

/// The name of the runner's ServiceAccount, Role and RoleBinding.
pub fn runner_identity(backup: &DatabaseBackup) -> String {
    format!("{}-stowage-runner", backup.name_any())
}

/// Names of Jobs and CronJobs keep this much of the resource's name (a Job name has at
/// most 63 characters, a CronJob's 52, for the suffixes the controllers add).
const NAME_PREFIX: usize = 40;

/// The Job of a manual trigger: named after a hash of the resource's UID and `time`, so
/// the same `time` can never create a second Job, and two resources whose names share
/// the prefix never share a Job.
pub fn manual_job_name(backup: &DatabaseBackup, time: &str) -> String {
    let digest = short_hash(&[backup.uid().as_deref().unwrap_or_default(), time]);
    format!("{}-manual-{digest}", truncate(&backup.name_any(), NAME_PREFIX))
}

/// The CronJob of the scheduled trigger. A name cut to the prefix gets a hash of the
/// UID, so that two resources whose names share the prefix never share a CronJob.
pub fn cronjob_name(backup: &DatabaseBackup) -> String {
    let name = backup.name_any();
    if name.len() <= NAME_PREFIX {
        return format!("{name}-scheduled");
    }
    let digest = short_hash(&[backup.uid().as_deref().unwrap_or_default()]);
    format!("{}-{digest}-sched", truncate(&name, NAME_PREFIX - 11))
}

/// Ten hex digits of the SHA-256 of `parts`.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..5])
}

/// Resource names are DNS subdomains (ASCII), so a byte cut is a character cut.
fn truncate(name: &str, max: usize) -> &str {
    &name[..name.len().min(max)]
}

fn labels(backup: &DatabaseBackup, trigger: Option<&str>) -> Value {
    let mut labels = json!({ LABEL_BACKUP: backup.name_any(), LABEL_MANAGED_BY: "stowage-operator" });
    if let Some(trigger) = trigger {
        labels[LABEL_TRIGGER] = json!(trigger);
    }
    labels
}

fn metadata(backup: &DatabaseBackup, name: &str, trigger: Option<&str>) -> Value {
    json!({
        "name": name,
        "namespace": backup.namespace(),
        "labels": labels(backup, trigger),
        "ownerReferences": backup.controller_owner_ref(&()).map(|owner| vec![owner]),
    })
}

/// The runner's ServiceAccount.
/// The runner's ServiceAccount, with the labels and annotations of the resource's
/// `serviceAccountTemplate` (a cloud identity for workload identity, say).
pub fn service_account(backup: &DatabaseBackup) -> Value {
    let mut meta = metadata(backup, &runner_identity(backup), None);
    if let Some(template) = &backup.spec.service_account_template {
        let extra = &template.metadata;
        if let Some(labels) = meta["labels"].as_object_mut() {
            // The operator's own labels win: they find the objects of a resource.
            for (key, value) in &extra.labels {
                labels.entry(key.clone()).or_insert_with(|| json!(value));
            }
        }
        if !extra.annotations.is_empty() {
            meta["annotations"] = json!(extra.annotations);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": true,
    })
}

/// What the runner may do: write this one resource's status (its report; the spec it
/// runs comes in the Job), and read the ConfigMap holding its plugin, if any.
pub fn role(backup: &DatabaseBackup) -> Value {
    let name = backup.name_any();
    let mut rules = vec![
        json!({"apiGroups": [DatabaseBackup::group(&())], "resources": ["databasebackups/status"], "resourceNames": [name], "verbs": ["patch"]}),
    ];
    if let Some(map) = &backup.spec.plugin.config_map {
        rules.push(
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [map.name], "verbs": ["get"]}),
        );
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(backup, &runner_identity(backup), None),
        "rules": rules
    })
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(backup: &DatabaseBackup) -> Value {
    let identity = runner_identity(backup);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(backup, &identity, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": identity},
        "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": backup.namespace()}]
    })
}

/// An env var from a Secret key. Optional, so that a missing Secret or key reaches the
/// runner, which reports it precisely in the status, instead of a Pod that never starts.
fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": true}}})
}

/// An env var from a field of the Pod.
fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

/// The Job spec of a run for `repo`: the runner runs exactly the spec written into it
/// (`STOWAGE_RUN_SPEC`), so an edit of the resource never mixes into a created run.
/// The spec has been validated.
fn job_spec(backup: &DatabaseBackup, repo: &str, settings: &WorkloadSettings) -> Result<Value, FieldError> {
    let spec = &backup.spec;
    let repository = spec.repo("trigger repo", repo)?;
    let deadline = spec.deadline()?;
    let run_spec = serde_json::to_string(spec).map_err(|e| FieldError::new("spec", e.to_string()))?;
    let mut env = vec![
        json!({"name": "BACKUP_RESOURCE_NAME", "value": backup.name_any()}),
        field_env("NAMESPACE", "metadata.namespace"),
        json!({"name": "BACKUP_REPO_NAME", "value": repo}),
        json!({"name": "STOWAGE_RUN_SPEC", "value": run_spec}),
        json!({"name": "STOWAGE_RUN_GENERATION", "value": backup.metadata.generation.unwrap_or_default().to_string()}),
        // The Job controller labels its Pods with the Job's name and UID.
        field_env("STOWAGE_JOB_NAME", "metadata.labels['job-name']"),
        field_env("STOWAGE_JOB_UID", "metadata.labels['controller-uid']"),
        field_env("STOWAGE_POD_NAME", "metadata.name"),
        json!({"name": "STOWAGE_LOG_FORMAT", "value": "json"}),
        json!({"name": "STOWAGE_CACHE_DIR", "value": "/tmp/stowage"}),
    ];
    // Without a Secret, the SDK's default chain finds the ServiceAccount's cloud identity.
    if let Some(secret) = &repository.secret_name {
        env.extend([
            secret_env("AWS_ACCESS_KEY_ID", secret, "accessKeyId"),
            secret_env("AWS_SECRET_ACCESS_KEY", secret, "secretAccessKey"),
            secret_env("CLOUD_OBJECT_STORAGE_HMAC_ACCESS_KEY_ID", secret, "access_key_id"),
            secret_env("CLOUD_OBJECT_STORAGE_HMAC_SECRET_ACCESS_KEY", secret, "secret_access_key"),
            secret_env("STOWAGE_HMAC_ACCESS_KEY_ID", secret, "HmacAccessKeyId"),
            secret_env("STOWAGE_HMAC_SECRET_ACCESS_KEY", secret, "HmacSecretAccessKey"),
        ]);
    }
    if let Some(password) = &spec.database.password_secret {
        env.push(secret_env("STOWAGE_DATABASE_PASSWORD", &password.name, &password.key));
    }
    if let Some(ca) = &spec.database.tls_ca_secret {
        env.push(secret_env("STOWAGE_DATABASE_TLS_CA", &ca.name, &ca.key));
    }
    if let Some(secret) = &spec.plugin.pull_secret {
        env.push(secret_env("STOWAGE_REGISTRY_AUTH", secret, ".dockerconfigjson"));
    }
    let plugin_memory = spec.limits.as_ref().and_then(|l| l.plugin_memory_mib).unwrap_or(DEFAULT_PLUGIN_MEMORY_MIB);
    let image = settings.runner_image(spec)?;
    let mut job = json!({
        "backoffLimit": 2,
        // The runner stops the plugin at the deadline; the Job gives it time to report.
        "activeDeadlineSeconds": deadline.as_secs() + 300,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "template": {
            "metadata": {"labels": labels(backup, None)},
            "spec": {
                "serviceAccountName": runner_identity(backup),
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": "runner",
                    "image": image,
                    "args": ["job"],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": format!("{}Mi", plugin_memory + RUNNER_MEMORY_MIB)}
                    },
                    "securityContext": {
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
                }],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
            }
        }
    });
    if settings.pod_failure_policy {
        // A failure no retry can mend fails the Job at once (older API servers: the
        // operator ends the Job when the runner reports such a failure).
        job["podFailurePolicy"] = json!({"rules": [{
            "action": "FailJob",
            "onExitCodes": {"containerName": "runner", "operator": "In", "values": [EXIT_PERMANENT_FAILURE]}
        }]});
    }
    Ok(job)
}

/// The Job of the manual trigger for `time`.
pub fn manual_job(
    backup: &DatabaseBackup,
    time: &str,
    repo: &str,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let mut meta = metadata(backup, &manual_job_name(backup, time), Some("manual"));
    meta["annotations"] = json!({"stowage.dev/manual-trigger-time": time});
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": job_spec(backup, repo, settings)?,
    }))
}

/// The CronJob of the scheduled trigger, in `api_version` (`batch/v1`, or
/// `batch/v1beta1` on API servers before 1.21). A suspended resource keeps its CronJob,
/// suspended, so the CronJob's history and `lastScheduleTime` stay.
pub fn cronjob(
    backup: &DatabaseBackup,
    trigger: &ScheduledTrigger,
    api_version: &str,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let mut cronjob = json!({
        "apiVersion": api_version,
        "kind": "CronJob",
        "metadata": metadata(backup, &cronjob_name(backup), Some("scheduled")),
        "spec": {
            "schedule": trigger.schedule,
            "suspend": backup.spec.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": trigger.starting_deadline_seconds.unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(backup, Some("scheduled"))},
                "spec": job_spec(backup, &trigger.repo, settings)?,
            }
        }
    });
    if let Some(zone) = &trigger.time_zone {
        cronjob["spec"]["timeZone"] = json!(zone);
    }
    Ok(cronjob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> DatabaseBackup {
        let mut backup: DatabaseBackup = serde_json::from_value(json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseBackup",
            "metadata": {"name": "shop", "namespace": "prod", "uid": "1234"},
            "spec": {
                "repos": [{"name": "cos", "type": "ibmcos", "secretName": "cos-hmac", "bucketNamePrefix": "backup-"}],
                "plugin": {"builtin": "postgres"},
                "database": {"endpoint": "db:5432", "name": "shop", "passwordSecret": {"name": "db", "key": "password"}},
                "manualTrigger": {"enabled": true, "time": "t1", "repo": "cos"},
                "limits": {"deadline": "2h", "pluginMemoryMib": 256}
            }
        }))
        .expect("valid resource");
        backup.metadata.generation = Some(1);
        backup
    }

    fn trigger(schedule: &str) -> ScheduledTrigger {
        ScheduledTrigger {
            enabled: true,
            schedule: schedule.into(),
            repo: "cos".into(),
            time_zone: None,
            starting_deadline_seconds: None,
        }
    }

    fn settings() -> WorkloadSettings {
        WorkloadSettings {
            runner_image: "stowage-runner:test".into(),
            allowed_runner_images: vec!["stowage-runner:canary".into()],
            pod_failure_policy: false,
            cronjob_time_zone: false,
            server_version: "v1.20.2".into(),
        }
    }

    #[test]
    fn manual_jobs_are_named_by_their_time() {
        let backup = backup();
        assert_eq!(manual_job_name(&backup, "t1"), manual_job_name(&backup, "t1"));
        assert_ne!(manual_job_name(&backup, "t1"), manual_job_name(&backup, "t2"));
        assert!(manual_job_name(&backup, "t1").starts_with("shop-manual-"));
        assert_eq!(cronjob_name(&backup), "shop-scheduled");
    }

    /// Two resources whose names share the first 40 characters, at the same time.
    #[test]
    fn resources_sharing_a_long_prefix_never_share_a_job_or_cronjob() {
        let named = |name: &str, uid: &str| {
            let mut backup = backup();
            backup.metadata.name = Some(name.into());
            backup.metadata.uid = Some(uid.into());
            backup
        };
        let prefix = "orders-database-of-the-eu-west-production";
        let (first, second) = (named(&format!("{prefix}-a"), "uid-a"), named(&format!("{prefix}-b"), "uid-b"));
        assert_ne!(manual_job_name(&first, "t1"), manual_job_name(&second, "t1"));
        assert_ne!(cronjob_name(&first), cronjob_name(&second));
        // The Job controller labels Pods with the Job's name (63 characters at most); the
        // CronJob controller appends 11 characters to the CronJob's.
        assert!(manual_job_name(&first, "t1").len() <= 63, "{}", manual_job_name(&first, "t1"));
        assert!(cronjob_name(&first).len() <= 52, "{}", cronjob_name(&first));
        // The same resource recreated under the same name is another resource.
        assert_ne!(manual_job_name(&named("shop", "uid-1"), "t1"), manual_job_name(&named("shop", "uid-2"), "t1"));
    }

    #[test]
    fn jobs_carry_credentials_only_as_secret_references() {
        let job = manual_job(&backup(), "t1", "cos", &settings()).expect("job");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        for env in container["env"].as_array().expect("env") {
            let name = env["name"].as_str().expect("name");
            if name.contains("KEY") || name.contains("PASSWORD") {
                assert!(env.get("value").is_none(), "{name} has a literal value");
                assert_eq!(env["valueFrom"]["secretKeyRef"]["optional"], true, "{name}");
            }
        }
        let env = |name: &str| container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).cloned();
        assert_eq!(env("AWS_ACCESS_KEY_ID").expect("key")["valueFrom"]["secretKeyRef"]["name"], "cos-hmac");
        assert_eq!(env("STOWAGE_DATABASE_PASSWORD").expect("password")["valueFrom"]["secretKeyRef"]["key"], "password");
        assert_eq!(env("BACKUP_REPO_NAME").expect("repo")["value"], "cos");
        assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
    }

    #[test]
    fn jobs_run_locked_down_with_the_resources_deadline() {
        let job = manual_job(&backup(), "t1", "cos", &settings()).expect("job");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 2 * 3600 + 300);
        assert_eq!(pod["serviceAccountName"], "shop-stowage-runner");
    }

    #[test]
    fn runs_carry_the_spec_they_were_created_from() {
        let backup = backup();
        let job = manual_job(&backup, "t1", "cos", &settings()).expect("job");
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        let value = |name: &str| env.as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).cloned();
        let pinned = value("STOWAGE_RUN_SPEC").and_then(|v| v["value"].as_str().map(str::to_owned)).expect("spec");
        let pinned: stowage_api::DatabaseBackupSpec = serde_json::from_str(&pinned).expect("a spec");
        assert_eq!(pinned, backup.spec);
        assert_eq!(value("STOWAGE_RUN_GENERATION").expect("generation")["value"], "1");
        assert_eq!(
            value("STOWAGE_JOB_UID").expect("uid")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['controller-uid']"
        );
        assert!(job["spec"].get("podFailurePolicy").is_none(), "podFailurePolicy on a server without it");
        let served = WorkloadSettings { pod_failure_policy: true, ..settings() };
        let job = manual_job(&backup, "t1", "cos", &served).expect("job");
        let rule = &job["spec"]["podFailurePolicy"]["rules"][0];
        assert_eq!((&rule["action"], &rule["onExitCodes"]["values"][0]), (&json!("FailJob"), &json!(3)));
    }

    #[test]
    fn a_repo_without_a_secret_uses_the_service_accounts_cloud_identity() {
        let mut backup = backup();
        backup.spec.repos[0].secret_name = None;
        let role_arn = "arn:aws:iam::123456789012:role/shop-backups";
        backup.spec.service_account_template = serde_json::from_value(json!({
            "metadata": {"annotations": {"eks.amazonaws.com/role-arn": role_arn}, "labels": {"team": "shop"}}
        }))
        .expect("template");
        let job = manual_job(&backup, "t1", "cos", &settings()).expect("job");
        let env = job["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env").clone();
        let names: Vec<&str> = env.iter().filter_map(|var| var["name"].as_str()).collect();
        assert!(!names.iter().any(|name| name.contains("ACCESS_KEY")), "static keys without a Secret: {names:?}");
        let account = service_account(&backup);
        assert_eq!(account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], role_arn);
        assert_eq!(account["metadata"]["labels"]["team"], "shop");
        assert_eq!(account["metadata"]["labels"][LABEL_BACKUP], "shop");
    }

    #[test]
    fn only_allowed_runner_images_run() {
        let mut backup = backup();
        assert_eq!(settings().runner_image(&backup.spec), Ok("stowage-runner:test"));
        backup.spec.runner_image = Some("stowage-runner:canary".into());
        assert_eq!(settings().check(&backup.spec), Ok(()));
        backup.spec.runner_image = Some("attacker/exfiltrate:latest".into());
        let refused = settings().check(&backup.spec).expect_err("not allowed");
        assert_eq!(refused.0[0].field, "spec.runnerImage");
        assert!(manual_job(&backup, "t1", "cos", &settings()).is_err(), "a Job with an image nobody allowed");
    }

    #[test]
    fn time_zones_are_set_where_served_and_refused_elsewhere() {
        let mut backup = backup();
        let zoned = ScheduledTrigger {
            time_zone: Some("Europe/Berlin".into()),
            starting_deadline_seconds: Some(120),
            ..trigger("0 3 * * *")
        };
        backup.spec.scheduled_trigger = Some(zoned.clone());
        let refused = settings().check(&backup.spec).expect_err("no timeZone on 1.20");
        assert_eq!(refused.0[0].field, "spec.scheduledTrigger.timeZone");
        assert!(refused.to_string().contains("v1.20.2"), "{refused}");
        let served = WorkloadSettings { cronjob_time_zone: true, ..settings() };
        assert_eq!(served.check(&backup.spec), Ok(()));
        let cron = cronjob(&backup, &zoned, "batch/v1", &served).expect("cronjob");
        assert_eq!(
            (&cron["spec"]["timeZone"], &cron["spec"]["startingDeadlineSeconds"]),
            (&json!("Europe/Berlin"), &json!(120))
        );
        let plain = cronjob(&backup, &trigger("0 3 * * *"), "batch/v1", &served).expect("cronjob");
        assert!(plain["spec"].get("timeZone").is_none());
    }

    #[test]
    fn a_suspended_resource_keeps_its_cronjob_suspended() {
        let mut backup = backup();
        backup.spec.suspend = true;
        let cron = cronjob(&backup, &trigger("@hourly"), "batch/v1", &settings()).expect("cronjob");
        assert_eq!(cron["spec"]["suspend"], true);
    }

    #[test]
    fn cronjobs_forbid_overlap_and_use_the_discovered_version() {
        let cron = cronjob(&backup(), &trigger("0 * * * *"), "batch/v1beta1", &settings()).expect("cronjob");
        assert_eq!(cron["apiVersion"], "batch/v1beta1");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(cron["spec"]["jobTemplate"]["metadata"]["labels"][LABEL_BACKUP], "shop");
    }

    #[test]
    fn the_runner_role_reaches_only_its_own_resource() {
        let role = role(&backup());
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": ["stowage.dev"], "resources": ["databasebackups/status"], "resourceNames": ["shop"], "verbs": ["patch"]}])
        );
    }
}
