//! What the operator creates: for each DatabaseBackup ([`backup`]) the runner's identity,
//! the Job of a manual trigger and the CronJob of a scheduled one; for each
//! DatabaseRestore ([`restore`]) and DatabaseSnapshotImport ([`import`]) its identity and
//! the one Job of each generation. All are plain functions of the resources, so they are
//! tested without a cluster. This module holds what every kind of run shares: the
//! locked-down runner Pod, its environment, its identity.

pub mod backup;
pub mod import;
pub mod restore;

pub use backup::*;

use std::time::Duration;

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use stowage_api::{
    ConfigMapKey, Database, EXIT_PERMANENT_FAILURE, PluginSource, Repo, ServiceAccountTemplate, short_hash,
};

/// The label on everything the operator creates; the kubelet stand-in of the tests, and
/// anyone else, finds runner Pods by it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "stowage-operator";

/// Finished Jobs are deleted after a day (their outcome is in the resource's status).
const TTL_AFTER_FINISHED: u64 = 24 * 3600;
/// Memory for the runner itself besides the plugin's limit.
const RUNNER_MEMORY_MIB: u32 = 256;
const DEFAULT_PLUGIN_MEMORY_MIB: u32 = 512;

/// Where a runner Pod finds the plugin of a `configMap` source: the ConfigMap's key is
/// mounted there, so the runner needs no API access to it.
const PLUGIN_MOUNT: &str = "/var/run/stowage/plugin";
const PLUGIN_FILE: &str = "plugin.wasm";

/// The ClusterRoles of `deploy/base/rbac.yaml` that each runner's RoleBinding grants in its
/// namespace (decision 10): one per kind of run, shared by every resource.
pub const BACKUP_RUNNER_ROLE: &str = "stowage-backup-runner";
pub const RESTORE_RUNNER_ROLE: &str = "stowage-restore-runner";
pub const IMPORT_RUNNER_ROLE: &str = "stowage-import-runner";

/// Names of Jobs and CronJobs keep this much of the resource's name (a Job name has at
/// most 63 characters, a CronJob's 52, for the suffixes the controllers add).
const NAME_PREFIX: usize = 40;

/// Resource names are DNS subdomains (ASCII), so a byte cut is a character cut.
fn truncate(name: &str, max: usize) -> &str {
    &name[..name.len().min(max)]
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

fn value_env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// What every runner Pod is told about where it runs.
fn pod_env() -> Vec<Value> {
    vec![
        field_env("NAMESPACE", "metadata.namespace"),
        // The Job controller labels its Pods with the Job's name and UID.
        field_env("STOWAGE_JOB_NAME", "metadata.labels['job-name']"),
        field_env("STOWAGE_JOB_UID", "metadata.labels['controller-uid']"),
        field_env("STOWAGE_POD_NAME", "metadata.name"),
        value_env("STOWAGE_LOG_FORMAT", "json"),
        value_env("STOWAGE_CACHE_DIR", "/tmp/stowage"),
    ]
}

/// The storage keys of `repo`, from its Secret under every name the runner accepts.
/// Without a Secret, the SDK's default chain finds the ServiceAccount's cloud identity.
fn storage_env(repo: &Repo) -> Vec<Value> {
    let Some(secret) = &repo.secret_name else { return Vec::new() };
    vec![
        secret_env("AWS_ACCESS_KEY_ID", secret, "accessKeyId"),
        secret_env("AWS_SECRET_ACCESS_KEY", secret, "secretAccessKey"),
        secret_env("CLOUD_OBJECT_STORAGE_HMAC_ACCESS_KEY_ID", secret, "access_key_id"),
        secret_env("CLOUD_OBJECT_STORAGE_HMAC_SECRET_ACCESS_KEY", secret, "secret_access_key"),
        secret_env("STOWAGE_HMAC_ACCESS_KEY_ID", secret, "HmacAccessKeyId"),
        secret_env("STOWAGE_HMAC_SECRET_ACCESS_KEY", secret, "HmacSecretAccessKey"),
    ]
}

/// The database's password and TLS CA, and the plugin registry's credentials.
fn database_env(database: &Database, plugin: &PluginSource) -> Vec<Value> {
    let mut env = Vec::new();
    if let Some(password) = &database.password_secret {
        env.push(secret_env("STOWAGE_DATABASE_PASSWORD", &password.name, &password.key));
    }
    if let Some(ca) = &database.tls_ca_secret {
        env.push(secret_env("STOWAGE_DATABASE_TLS_CA", &ca.name, &ca.key));
    }
    if let Some(secret) = &plugin.pull_secret {
        env.push(secret_env("STOWAGE_REGISTRY_AUTH", secret, ".dockerconfigjson"));
    }
    env
}

/// One runner Job's shape.
struct RunnerPod<'a> {
    /// The runner's subcommand: `job` or `restore-job`.
    command: &'static str,
    service_account: String,
    labels: Value,
    env: Vec<Value>,
    image: &'a str,
    /// The ConfigMap key holding the plugin, if that is its source.
    plugin: Option<&'a ConfigMapKey>,
    plugin_memory_mib: Option<u32>,
    deadline: Duration,
    /// Pods after the first that may try again.
    backoff_limit: u32,
}

/// The Job spec of a runner: non-root, read-only, no capabilities, bounded memory and
/// time; a failure no retry can mend ends the Job.
fn runner_job_spec(pod: RunnerPod<'_>, pod_failure_policy: bool) -> Value {
    let memory = pod.plugin_memory_mib.unwrap_or(DEFAULT_PLUGIN_MEMORY_MIB) + RUNNER_MEMORY_MIB;
    let (mut env, mut volumes) = (pod.env, vec![json!({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})]);
    let mut mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"})];
    if let Some(plugin) = pod.plugin {
        // Optional: a missing ConfigMap or key reaches the runner, which names it in the
        // status, instead of a Pod that never starts.
        volumes.push(json!({"name": "plugin", "configMap": {
            "name": plugin.name,
            "items": [{"key": plugin.key, "path": PLUGIN_FILE}],
            "optional": true
        }}));
        mounts.push(json!({"name": "plugin", "mountPath": PLUGIN_MOUNT, "readOnly": true}));
        env.push(value_env("STOWAGE_PLUGIN_FILE", format!("{PLUGIN_MOUNT}/{PLUGIN_FILE}")));
    }
    let mut job = json!({
        "backoffLimit": pod.backoff_limit,
        // The runner stops the plugin at the deadline; the Job gives it time to report.
        "activeDeadlineSeconds": pod.deadline.as_secs() + 300,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "template": {
            "metadata": {"labels": pod.labels},
            "spec": {
                "serviceAccountName": pod.service_account,
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": "runner",
                    "image": pod.image,
                    "args": [pod.command],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": format!("{memory}Mi")}
                    },
                    "securityContext": {
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}
                    },
                    "volumeMounts": mounts
                }],
                "volumes": volumes
            }
        }
    });
    if pod_failure_policy {
        // A failure no retry can mend fails the Job at once (older API servers: the
        // operator ends the Job when the runner reports such a failure).
        job["podFailurePolicy"] = json!({"rules": [{
            "action": "FailJob",
            "onExitCodes": {"containerName": "runner", "operator": "In", "values": [EXIT_PERMANENT_FAILURE]}
        }]});
    }
    job
}

/// A runner's ServiceAccount, with the labels and annotations of a
/// `serviceAccountTemplate` (a cloud identity for workload identity, say).
fn service_account_object(mut meta: Value, template: Option<&ServiceAccountTemplate>) -> Value {
    if let Some(template) = template {
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

/// Grants the ClusterRole `role` to the ServiceAccount `identity`, in its namespace only.
fn role_binding_object(meta: Value, identity: &str, namespace: Option<String>, role: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": namespace}]
    })
}

/// The name of the runner identity (ServiceAccount, RoleBinding) of a resource that
/// runs one Job per generation: `NAME-stowage-WORK`.
pub fn one_shot_identity(name: &str, work: &str) -> String {
    format!("{name}-stowage-{}", work.to_lowercase())
}

/// The Job of one generation of such a resource: named after a hash of its UID and the
/// generation, so that a generation can never run twice.
pub fn one_shot_job_name(name: &str, uid: &str, work: &str, generation: i64) -> String {
    let digest = short_hash(&[uid, &generation.to_string()]);
    format!("{}-{}-{digest}", truncate(name, NAME_PREFIX), work.to_lowercase())
}

/// Metadata of an object a one-shot resource owns, labelled `label: NAME`.
fn one_shot_metadata<K: Resource<DynamicType = ()>>(object: &K, label: &str, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": object.namespace(),
        "labels": {label: object.name_any(), LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": object.controller_owner_ref(&()).map(|owner| vec![owner]),
    })
}

/// The Job of `generation` of a one-shot resource: one Pod running `command` as its
/// identity with `env`. One Pod: a run that failed is not tried again behind the user's
/// back (a second attempt would meet the first one's state and hide its reason); a new
/// generation runs again.
struct OneShotJob<'a> {
    label: &'a str,
    work: &'a str,
    command: &'static str,
    generation: i64,
    env: Vec<Value>,
    plugin: Option<&'a ConfigMapKey>,
    plugin_memory_mib: Option<u32>,
    deadline: Duration,
}

fn one_shot_job<K: Resource<DynamicType = ()>>(object: &K, job: OneShotJob<'_>, settings: &WorkloadSettings) -> Value {
    let mut env = vec![value_env("STOWAGE_RUN_GENERATION", job.generation.to_string())];
    env.extend(job.env);
    env.extend(pod_env());
    let pod = RunnerPod {
        command: job.command,
        service_account: one_shot_identity(&object.name_any(), job.work),
        labels: json!({job.label: object.name_any(), LABEL_MANAGED_BY: MANAGED_BY}),
        env,
        image: &settings.runner_image,
        plugin: job.plugin,
        plugin_memory_mib: job.plugin_memory_mib,
        deadline: job.deadline,
        backoff_limit: 0,
    };
    let name = one_shot_job_name(&object.name_any(), &object.uid().unwrap_or_default(), job.work, job.generation);
    let mut meta = one_shot_metadata(object, job.label, &name);
    meta["annotations"] = json!({"stowage.dev/generation": job.generation.to_string()});
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": runner_job_spec(pod, settings.pod_failure_policy),
    })
}
