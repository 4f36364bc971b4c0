//! The resource's fields. Names follow the DatabaseBackup sample this project grew from
//! (`repos`, `manualTrigger`, `scheduledTrigger`, `secretName`, `serviceEndpoint`, ...).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::DatabaseBackupStatus;

/// What to back up, where to store it, and when.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "stowage.dev",
    version = "v1alpha1",
    kind = "DatabaseBackup",
    namespaced,
    status = "DatabaseBackupStatus",
    shortname = "dbbackup",
    category = "stowage",
    category = "all",
    doc = "A database backup configuration: the database, the plugin that reads it, where backups go and when they run.",
    printcolumn = r#"{"name": "Plugin", "type": "string", "jsonPath": ".status.plugin"}"#,
    printcolumn = r#"{"name": "Schedule", "type": "string", "jsonPath": ".spec.scheduledTrigger.schedule"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"}"#,
    printcolumn = r#"{"name": "Last Backup", "type": "date", "jsonPath": ".status.lastBackup.time"}"#,
    printcolumn = r#"{"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name": "Verified", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Verified\")].reason"}"#,
    printcolumn = r#"{"name": "Running", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Running\")].status", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.serviceAccountName) || !has(self.serviceAccountTemplate)")
    .message("set serviceAccountName or serviceAccountTemplate, not both"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupSpec {
    /// Object-storage repositories backups can be written to; a trigger names one.
    /// Names are unique.
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub repos: Vec<Repo>,
    /// The plugin that reads and restores this kind of database.
    pub plugin: PluginSource,
    /// The database to back up.
    pub database: Database,
    /// A one-off backup, run again whenever `time` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_trigger: Option<ManualTrigger>,
    /// Backups on a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_trigger: Option<ScheduledTrigger>,
    /// Restore drills: on a schedule, the newest backup is restored into a scratch
    /// database and what the plugin reports of the restore is compared with what it
    /// reported of the backup (condition `Verified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Which backups to keep after each successful backup. Unset: keep all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Compression of stored artifacts: `zstd` (default, level 3), `zstd:LEVEL` (1-22) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(none|zstd(:([1-9]|1[0-9]|2[0-2]))?)$"))]
    pub compression: Option<String>,
    /// Client-side encryption of stored artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Resource bounds of each backup run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Stop creating new backup runs; running ones finish.
    #[serde(default)]
    pub suspend: bool,
    /// Metadata for the runner's ServiceAccount, e.g. the annotation
    /// `eks.amazonaws.com/role-arn` that gives it a cloud identity (workload identity).
    /// Set, the runner gets a ServiceAccount of its own; unset, it shares the namespace's
    /// `stowage-backup-runner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_template: Option<ServiceAccountTemplate>,
    /// An existing ServiceAccount in this namespace for the runner (its cloud identity
    /// managed elsewhere): the operator binds the runner's role to it and never changes
    /// or deletes it. Instead of `serviceAccountTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Runner image for the backup Jobs, overriding the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_image: Option<String>,
}

/// An S3-compatible object-storage repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.bucket) || has(self.bucketNamePrefix)")
    .message("sets neither bucket nor bucketNamePrefix"))]
#[serde(rename_all = "camelCase")]
pub struct Repo {
    /// The name triggers use to pick this repository.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The kind of storage. `ibmcos` is IBM Cloud Object Storage with HMAC keys, used as S3.
    #[serde(rename = "type", default)]
    pub kind: RepoKind,
    /// Secret in this namespace with the storage credentials: `accessKeyId` and
    /// `secretAccessKey`, or the IBM COS HMAC names (`access_key_id` and
    /// `secret_access_key`, or `HmacAccessKeyId` and `HmacSecretAccessKey`). Unset: no
    /// static keys; the runner uses the AWS SDK's default chain (IRSA web identity, EKS Pod
    /// Identity, instance profile), with the runner ServiceAccount's annotations from
    /// `serviceAccountTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub secret_name: Option<String>,
    /// Endpoint URL of the service; unset for AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_endpoint: Option<String>,
    /// IBM COS IAM endpoint. Accepted for compatibility; HMAC keys do not need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The region under the IBM COS sample's name; the same as `region` (set one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cos_region: Option<String>,
    /// The bucket. When unset, the bucket is `bucketNamePrefix` followed by the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Prefix of the bucket name when `bucket` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name_prefix: Option<String>,
    /// Key prefix inside the bucket under which backups are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path-style addressing (`endpoint/bucket`); defaults to on when `serviceEndpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
}

impl Repo {
    /// The bucket backups of a resource in `namespace` go to.
    pub fn bucket_for(&self, namespace: &str) -> Option<String> {
        self.bucket.clone().or_else(|| self.bucket_name_prefix.as_ref().map(|prefix| format!("{prefix}{namespace}")))
    }

    /// `region`, or `cosRegion`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref().or(self.cos_region.as_deref())
    }
}

/// Metadata the operator gives the runner's ServiceAccount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceAccountTemplate {
    #[serde(default)]
    pub metadata: TemplateMetadata,
}

/// Labels and annotations of a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kinds of object storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// Amazon S3 or any S3-compatible service.
    #[default]
    S3,
    /// IBM Cloud Object Storage (S3-compatible, HMAC keys).
    Ibmcos,
}

/// Where the plugin component comes from. Exactly one source is set.
///
/// The rules of [`PluginSource::source`] the API server can check itself (1.25+), as CEL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.builtin), has(self.configMap), has(self.url), has(self.oci)].filter(set, set).size() == 1")
        .message("set exactly one of builtin, configMap, url and oci"),
    validation = Rule::new("!has(self.url) || self.url.startsWith('https://')").message("url must be an https:// URL"),
    validation = Rule::new("!has(self.url) || has(self.sha256)")
        .message("a plugin from a URL must be pinned: set sha256 to the component's digest"),
    validation = Rule::new("!has(self.pullSecret) || has(self.oci)").message("pullSecret applies to oci plugins only")
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSource {
    /// A plugin shipped in the runner image, e.g. `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// A `binaryData` entry of a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
    /// An `https://` URL of the component; requires `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An OCI artifact reference, `registry/repository:tag@sha256:...`: an image manifest
    /// with one `application/wasm` layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// For `oci`: a `kubernetes.io/dockerconfigjson` Secret in this namespace with the
    /// registry's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
    /// The expected sha256 of the component, lowercase hex; checked before it is compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// A key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ConfigMapKey {
    /// The ConfigMap's name.
    pub name: String,
    /// The key in `binaryData`.
    pub key: String,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKey {
    /// The Secret's name, in this namespace.
    pub name: String,
    /// The key in the Secret.
    pub key: String,
}

/// The database to back up and how to log in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// `host:port` of the database (a Service name works).
    #[schemars(length(min = 3))]
    pub endpoint: String,
    /// The database name.
    pub name: String,
    /// The user to log in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password, from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKey>,
    /// A PEM CA bundle that signs the database's TLS certificate, from a Secret; given to the
    /// plugin as option `tls-ca` (the PostgreSQL plugin verifies with it for sslmode verify-ca/verify-full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_secret: Option<SecretKey>,
    /// Plugin-specific options, as declared by the plugin's metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A one-off backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualTrigger {
    /// Whether the trigger is active; a trigger section without it is (as in the
    /// DatabaseBackup sample, which created the Job whenever a trigger named a repo).
    #[serde(default = "enabled_by_default")]
    #[schemars(default = "enabled_by_default")]
    pub enabled: bool,
    /// Any value, usually a timestamp; each new value runs one backup, the same value never twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The name of the repository to write to.
    pub repo: String,
}

/// Repeating backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTrigger {
    /// Whether the trigger is active; a trigger section without it is.
    #[serde(default = "enabled_by_default")]
    #[schemars(default = "enabled_by_default")]
    pub enabled: bool,
    /// A schedule as the CronJob controller reads it: five fields (`0 * * * *`), a
    /// descriptor (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@midnight`,
    /// `@annually`) or `@every DURATION`.
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// The name of the repository to write to.
    pub repo: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Berlin` (default: the
    /// CronJob controller's, usually UTC). Needs Kubernetes 1.27 or newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How late a missed run may still start, in seconds (default 600); a run missed by
    /// more is skipped until the next scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
}

/// Restore drills: a backup nobody restored is a hope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When drills run, as `scheduledTrigger.schedule` reads it (e.g. `@daily`).
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// The repository whose newest backup is drilled (default: the scheduled trigger's,
    /// else the manual trigger's, else the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The scratch database, replaced by every drill and kept until the next; unset fields
    /// are the backed-up database's, and the name defaults to `<name>_stowage_drill`. It
    /// may never be the backed-up database itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::restore::RestoreTarget>,
    /// An age identity (`AGE-SECRET-KEY-1...`) from a Secret, for encrypted backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_identity_secret: Option<SecretKey>,
}

fn enabled_by_default() -> bool {
    true
}

/// Which backups to keep, as restic and K8up keep snapshots; a backup is kept when any
/// rule keeps it, and the backup just written always is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the newest N hours that have one (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the newest N days that have one (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the newest N ISO weeks (Monday to Sunday) that have one (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the newest N months that have one (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the newest N years that have one (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_yearly: Option<u32>,
    /// Keep backups younger than this, e.g. `30d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// Client-side encryption.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// age X25519 public keys (`age1...`); backups decrypt with any matching identity.
    #[serde(default)]
    pub age_recipients: Vec<String>,
}

/// Bounds of one backup run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Memory the plugin may use, in MiB (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16))]
    pub plugin_memory_mib: Option<u32>,
    /// Time one run may take, e.g. `2h` (default 6h); also the Job's activeDeadlineSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::json;

    use super::*;
    use crate::status::CONDITION_MESSAGE_MAX;

    #[test]
    fn the_schema_says_what_a_user_reads() {
        let crd = serde_json::to_value(DatabaseBackup::crd()).expect("crd");
        assert_eq!(crd["spec"]["names"]["categories"], json!(["stowage", "all"]));
        let version = &crd["spec"]["versions"][0];
        let schema = &version["schema"]["openAPIV3Schema"]["properties"];
        let repos = &schema["spec"]["properties"]["repos"];
        assert_eq!(repos["x-kubernetes-list-type"], "map");
        assert_eq!(repos["x-kubernetes-list-map-keys"], json!(["name"]));
        let message = &schema["status"]["properties"]["conditions"]["items"]["properties"]["message"];
        assert_eq!(message["maxLength"], CONDITION_MESSAGE_MAX);
        // The seed demanded nine characters, which refused `@daily`.
        let schedule = &schema["spec"]["properties"]["scheduledTrigger"]["properties"]["schedule"];
        assert!(schedule.get("minLength").is_none_or(|min| min.as_u64() <= Some(1)), "{schedule}");
        let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|column| Some((column["name"].as_str()?, column["jsonPath"].as_str()?)))
            .collect();
        // The plugin as the operator resolves it, whatever its source kind.
        assert!(columns.contains(&("Plugin", ".status.plugin")), "{columns:?}");
        assert!(columns.contains(&("Ready", ".status.conditions[?(@.type==\"Ready\")].status")), "{columns:?}");
        assert!(columns.contains(&("Suspended", ".spec.suspend")), "{columns:?}");
    }
}
