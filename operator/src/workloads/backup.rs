//! What the operator creates for each DatabaseBackup: the runner's ServiceAccount and
//! RoleBinding, the Job of a manual trigger, the CronJob of a scheduled one and the
//! CronJob of its restore drills.

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use stowage_api::{
    DatabaseBackup, DatabaseBackupSpec, FieldError, InvalidSpec, ScheduledTrigger, Verification, short_hash,
};

use super::{
    BACKUP_RUNNER_ROLE, LABEL_MANAGED_BY, MANAGED_BY, NAME_PREFIX, RunnerPod, database_env, pod_env,
    role_binding_object, runner_job_spec, secret_env, service_account_object, storage_env, truncate, value_env,
};

/// Labels on everything the operator creates for a resource.
pub const LABEL_BACKUP: &str = "stowage.dev/backup";
pub const LABEL_TRIGGER: &str = "stowage.dev/trigger";
/// The label of restore drill CronJobs and Jobs instead of [`LABEL_BACKUP`]: a drill is
/// not a backup run, and never counts as one.
pub const LABEL_DRILL: &str = "stowage.dev/drill";
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

/// The ServiceAccount and RoleBinding the backup runners of a namespace share, unless
/// their resource asks for a cloud identity of its own (`serviceAccountTemplate`, or an
/// existing `serviceAccountName`): one pair per namespace instead of one per resource
/// (decision 10).
pub const SHARED_RUNNER_IDENTITY: &str = "stowage-backup-runner";

/// Whether the runners of `backup` use the namespace's [`SHARED_RUNNER_IDENTITY`].
pub fn shares_runner_identity(backup: &DatabaseBackup) -> bool {
    backup.spec.service_account_template.is_none() && backup.spec.service_account_name.is_none()
}

/// The ServiceAccount the runner's Pods run as.
pub fn runner_identity(backup: &DatabaseBackup) -> String {
    match &backup.spec.service_account_name {
        Some(existing) => existing.clone(),
        None if shares_runner_identity(backup) => SHARED_RUNNER_IDENTITY.to_owned(),
        None => own_runner_identity(backup),
    }
}

/// The RoleBinding that grants the runner its role: the shared one, or the resource's own.
pub fn runner_binding(backup: &DatabaseBackup) -> String {
    if shares_runner_identity(backup) { SHARED_RUNNER_IDENTITY.to_owned() } else { own_runner_identity(backup) }
}

/// The name of the ServiceAccount and RoleBinding of a resource's own runner identity.
pub fn own_runner_identity(backup: &DatabaseBackup) -> String {
    format!("{}-stowage-runner", backup.name_any())
}

/// Metadata of the runner identity: a resource's own is owned by it; the shared one by no
/// resource (the operator deletes it with the namespace's last user).
fn identity_metadata(backup: &DatabaseBackup) -> Value {
    let identity = runner_binding(backup);
    if shares_runner_identity(backup) {
        json!({"name": identity, "namespace": backup.namespace(), "labels": {LABEL_MANAGED_BY: MANAGED_BY}})
    } else {
        metadata(backup, &identity, None)
    }
}

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
    cronjob_name_with(backup, "scheduled", "sched")
}

/// The CronJob of the restore drills, named as [`cronjob_name`].
pub fn drill_cronjob_name(backup: &DatabaseBackup) -> String {
    cronjob_name_with(backup, "drill", "drill")
}

fn cronjob_name_with(backup: &DatabaseBackup, suffix: &str, short: &str) -> String {
    let name = backup.name_any();
    if name.len() <= NAME_PREFIX {
        return format!("{name}-{suffix}");
    }
    let digest = short_hash(&[backup.uid().as_deref().unwrap_or_default()]);
    format!("{}-{digest}-{short}", truncate(&name, NAME_PREFIX - 11))
}

fn labels(backup: &DatabaseBackup, trigger: Option<&str>) -> Value {
    let mut labels = json!({ LABEL_BACKUP: backup.name_any(), LABEL_MANAGED_BY: MANAGED_BY });
    if let Some(trigger) = trigger {
        labels[LABEL_TRIGGER] = json!(trigger);
    }
    labels
}

fn drill_labels(backup: &DatabaseBackup) -> Value {
    json!({ LABEL_DRILL: backup.name_any(), LABEL_MANAGED_BY: MANAGED_BY })
}

fn metadata(backup: &DatabaseBackup, name: &str, trigger: Option<&str>) -> Value {
    metadata_labelled(backup, name, labels(backup, trigger))
}

fn metadata_labelled(backup: &DatabaseBackup, name: &str, labels: Value) -> Value {
    json!({
        "name": name,
        "namespace": backup.namespace(),
        "labels": labels,
        "ownerReferences": backup.controller_owner_ref(&()).map(|owner| vec![owner]),
    })
}

/// The runner's ServiceAccount, with the labels and annotations of the resource's
/// `serviceAccountTemplate` (a cloud identity for workload identity, say); none when the
/// resource names an existing one.
pub fn service_account(backup: &DatabaseBackup) -> Option<Value> {
    let template = backup.spec.service_account_template.as_ref();
    backup.spec.service_account_name.is_none().then(|| service_account_object(identity_metadata(backup), template))
}

/// Grants the runner what `deploy/base/rbac.yaml` gives every backup runner in its namespace:
/// writing the report into a DatabaseBackup's status (the spec it runs comes in the Job),
/// keeping snapshot objects in line with the repository and recording drills on them.
pub fn role_binding(backup: &DatabaseBackup) -> Value {
    role_binding_object(identity_metadata(backup), &runner_identity(backup), backup.namespace(), BACKUP_RUNNER_ROLE)
}

/// What a runner Job of a DatabaseBackup does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Back up (`stowage job`); the Job retries twice.
    Backup,
    /// Restore drill (`stowage drill-job`) into the scratch database; one Pod.
    Drill,
}

/// The Job spec of a run for `repo`: the runner runs exactly the spec written into it
/// (`STOWAGE_RUN_SPEC`), so an edit of the resource never mixes into a created run.
/// The spec has been validated.
fn job_spec(backup: &DatabaseBackup, run: Run, repo: &str, settings: &WorkloadSettings) -> Result<Value, FieldError> {
    let spec = &backup.spec;
    let repository = spec.repo("trigger repo", repo)?;
    let run_spec = serde_json::to_string(spec).map_err(|e| FieldError::new("spec", e.to_string()))?;
    let mut env = vec![
        value_env("BACKUP_RESOURCE_NAME", backup.name_any()),
        value_env("STOWAGE_RESOURCE_UID", backup.uid().unwrap_or_default()),
        value_env("BACKUP_REPO_NAME", repo),
        value_env("STOWAGE_RUN_SPEC", run_spec),
        value_env("STOWAGE_RUN_GENERATION", backup.metadata.generation.unwrap_or_default().to_string()),
    ];
    env.extend(pod_env());
    env.extend(storage_env(repository));
    let (command, labels, database, backoff_limit) = match run {
        Run::Backup => ("job", labels(backup, None), spec.database.clone(), 2),
        // The drill logs in to the scratch database with its own credentials.
        Run::Drill => ("drill-job", drill_labels(backup), spec.drill_target(), 0),
    };
    env.extend(database_env(&database, &spec.plugin));
    let identity = spec.verification.as_ref().and_then(|v| v.age_identity_secret.as_ref());
    if let (Run::Drill, Some(identity)) = (run, identity) {
        env.push(secret_env("STOWAGE_AGE_IDENTITY", &identity.name, &identity.key));
    }
    let pod = RunnerPod {
        command,
        service_account: runner_identity(backup),
        labels,
        env,
        image: settings.runner_image(spec)?,
        plugin: spec.plugin.config_map.as_ref(),
        plugin_memory_mib: spec.limits.as_ref().and_then(|l| l.plugin_memory_mib),
        deadline: spec.deadline()?,
        backoff_limit,
    };
    Ok(runner_job_spec(pod, settings.pod_failure_policy))
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
        "spec": job_spec(backup, Run::Backup, repo, settings)?,
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
                "spec": job_spec(backup, Run::Backup, &trigger.repo, settings)?,
            }
        }
    });
    if let Some(zone) = &trigger.time_zone {
        cronjob["spec"]["timeZone"] = json!(zone);
    }
    Ok(cronjob)
}

/// The CronJob of the restore drills of `verification`, like [`cronjob`]; its Jobs carry
/// [`LABEL_DRILL`], not [`LABEL_BACKUP`].
pub fn drill_cronjob(
    backup: &DatabaseBackup,
    verification: &Verification,
    api_version: &str,
    settings: &WorkloadSettings,
) -> Result<Value, FieldError> {
    let repo = backup.spec.verification_repo()?;
    Ok(json!({
        "apiVersion": api_version,
        "kind": "CronJob",
        "metadata": metadata_labelled(backup, &drill_cronjob_name(backup), drill_labels(backup)),
        "spec": {
            "schedule": verification.schedule,
            "suspend": backup.spec.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": DEFAULT_STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": drill_labels(backup)},
                "spec": job_spec(backup, Run::Drill, &repo.name, settings)?,
            }
        }
    }))
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
        assert_eq!(pod["serviceAccountName"], SHARED_RUNNER_IDENTITY);
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
        let account = service_account(&backup).expect("an account of its own");
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
    fn drills_run_as_a_cronjob_of_their_own_into_the_scratch_database() {
        let mut backup = backup();
        backup.spec.verification = Some(
            serde_json::from_value(
                json!({"schedule": "@daily", "target": {"passwordSecret": {"name": "scratch", "key": "pw"}}}),
            )
            .expect("verification"),
        );
        assert_eq!(settings().check(&backup.spec), Ok(()));
        let verification = backup.spec.verification.clone().expect("verification");
        let cron = drill_cronjob(&backup, &verification, "batch/v1", &settings()).expect("cronjob");
        assert_eq!(cron["metadata"]["name"], "shop-drill");
        let template = &cron["spec"]["jobTemplate"];
        assert_eq!(template["metadata"]["labels"][LABEL_DRILL], "shop");
        assert!(template["metadata"]["labels"].get(LABEL_BACKUP).is_none(), "a drill counted as a backup run");
        let container = &template["spec"]["template"]["spec"]["containers"][0];
        assert_eq!((&container["args"][0], &template["spec"]["backoffLimit"]), (&json!("drill-job"), &json!(0)));
        let env = |name: &str| container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).cloned();
        assert_eq!(env("STOWAGE_DATABASE_PASSWORD").expect("password")["valueFrom"]["secretKeyRef"]["name"], "scratch");
        assert_eq!(env("BACKUP_REPO_NAME").expect("repo")["value"], "cos");

        // Never the backed-up database itself: a drill replaces what its target holds.
        backup.spec.verification = Some(
            serde_json::from_value(json!({"schedule": "@daily", "target": {"name": "shop"}})).expect("verification"),
        );
        let refused = settings().check(&backup.spec).expect_err("the source as scratch");
        assert_eq!(refused.0[0].field, "spec.verification.target");
    }

    #[test]
    fn cronjobs_forbid_overlap_and_use_the_discovered_version() {
        let cron = cronjob(&backup(), &trigger("0 * * * *"), "batch/v1beta1", &settings()).expect("cronjob");
        assert_eq!(cron["apiVersion"], "batch/v1beta1");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(cron["spec"]["jobTemplate"]["metadata"]["labels"][LABEL_BACKUP], "shop");
    }

    #[test]
    fn runners_share_an_identity_unless_they_have_their_own_and_get_a_configmap_plugin_mounted() {
        let binding = role_binding(&backup());
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], BACKUP_RUNNER_ROLE);
        assert_eq!(binding["subjects"][0]["name"], SHARED_RUNNER_IDENTITY);
        assert!(binding["metadata"]["ownerReferences"].is_null(), "the shared binding owned by one resource");
        // A resource with a cloud identity of its own has its own ServiceAccount and binding.
        let mut own = backup();
        own.spec.service_account_template =
            Some(serde_json::from_value(json!({"metadata": {"annotations": {"iam": "role"}}})).expect("template"));
        let account = service_account(&own).expect("an account of its own");
        assert_eq!(account["metadata"]["name"], "shop-stowage-runner");
        assert_eq!(account["metadata"]["annotations"]["iam"], "role");
        assert_eq!(account["metadata"]["ownerReferences"][0]["name"], "shop");
        assert_eq!(role_binding(&own)["subjects"][0]["name"], "shop-stowage-runner");
        let job = manual_job(&own, "t1", "cos", &settings()).expect("job");
        assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], "shop-stowage-runner");
        // One that names an existing ServiceAccount gets a binding of its own to it, and no
        // ServiceAccount from the operator.
        let mut existing = backup();
        existing.spec.service_account_name = Some("shop-backups".into());
        assert!(service_account(&existing).is_none(), "the operator would write a user's ServiceAccount");
        let binding = role_binding(&existing);
        assert_eq!(binding["metadata"]["name"], "shop-stowage-runner");
        assert_eq!(binding["subjects"][0]["name"], "shop-backups");
        let job = manual_job(&existing, "t1", "cos", &settings()).expect("job");
        assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], "shop-backups");

        let mut from_map = backup();
        from_map.spec.plugin = serde_json::from_value(
            json!({"configMap": {"name": "plugins", "key": "pg.wasm"}, "sha256": "ab".repeat(32)}),
        )
        .expect("plugin");
        let job = manual_job(&from_map, "t1", "cos", &settings()).expect("job");
        let pod = &job["spec"]["template"]["spec"];
        let volume = pod["volumes"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "plugin")).expect("volume");
        assert_eq!(
            volume["configMap"],
            json!({"name": "plugins", "items": [{"key": "pg.wasm", "path": "plugin.wasm"}], "optional": true})
        );
        let container = &pod["containers"][0];
        assert!(container["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["name"] == "plugin"));
        let file = container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == "STOWAGE_PLUGIN_FILE"));
        assert_eq!(file.expect("plugin file")["value"], "/var/run/stowage/plugin/plugin.wasm");
        // A builtin plugin mounts nothing.
        let job = manual_job(&backup(), "t1", "cos", &settings()).expect("job");
        assert_eq!(job["spec"]["template"]["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    }
}
