//! `DatabaseRestore`: restore one stored backup into a database, as a Job of the same
//! locked-down runner. The operator resolves which backup and which target once, writes
//! the result (a [`RestorePlan`]) into the Job, and the runner runs exactly that plan and
//! reports the attempt; a resource runs at most once per generation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{Database, Limits, PluginSource, Repo, SecretKey, ServiceAccountTemplate};
use crate::status::{Attempt, RunOutcome, conditions_schema};
use crate::validation::{FieldError, InvalidSpec};

/// Restore a stored backup into a database.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "stowage.dev",
    version = "v1alpha1",
    kind = "DatabaseRestore",
    namespaced,
    status = "DatabaseRestoreStatus",
    shortname = "dbrestore",
    category = "stowage",
    category = "all",
    doc = "Restore one stored backup (a DatabaseSnapshot, or a DatabaseBackup's newest) into a database; runs once per generation.",
    printcolumn = r#"{"name": "Snapshot", "type": "string", "jsonPath": ".spec.snapshot"}"#,
    printcolumn = r#"{"name": "Backup", "type": "string", "jsonPath": ".status.restored.backupId"}"#,
    printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".status.restored.target"}"#,
    printcolumn = r#"{"name": "Succeeded", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.snapshot) != has(self.databaseBackup)")
    .message("name the backup once: set snapshot or databaseBackup"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRestoreSpec {
    /// The backup to restore: a DatabaseSnapshot in this namespace. Set this or
    /// `databaseBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The backup to restore, by its configuration: a DatabaseBackup in this namespace,
    /// one of its repositories and a backup id (default: the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_backup: Option<BackupSelector>,
    /// The database to restore into. Unset fields are the backed-up database's: with no
    /// target at all, the backup is restored into the database it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Replace what the target holds. Without it a non-empty target is refused
    /// (`TargetNotEmpty`) and left as it is.
    #[serde(default)]
    pub replace: bool,
    /// Another source of the plugin than the one that wrote the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSource>,
    /// Allow `plugin` to have another digest than the plugin that wrote the backup
    /// (another version of it). Without it such a restore fails with `PluginDigestMismatch`.
    #[serde(default)]
    pub allow_other_plugin_digest: bool,
    /// An age identity (`AGE-SECRET-KEY-1...`) from a Secret, for encrypted backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_identity_secret: Option<SecretKey>,
    /// Resource bounds of the restore run (default: 512 MiB for the plugin, 6h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Metadata for the restore runner's ServiceAccount, e.g. a cloud identity's annotation
    /// for a repository without `secretName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_template: Option<ServiceAccountTemplate>,
}

/// A backup chosen by its configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSelector {
    /// The DatabaseBackup's name.
    pub name: String,
    /// One of its repositories (default: the only one, or the manual trigger's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A backup id, or `latest` (the default).
    #[serde(default = "latest", skip_serializing_if = "is_latest")]
    #[schemars(default = "latest")]
    pub backup_id: String,
}

fn latest() -> String {
    "latest".into()
}

fn is_latest(id: &str) -> bool {
    id == "latest"
}

/// Where to restore; every field defaults to the backed-up database's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// `host:port` of the target database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The database name (created by the plugin if missing, where the database can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user to log in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password, from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKey>,
    /// A PEM CA bundle for the target's TLS certificate, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_secret: Option<SecretKey>,
    /// Plugin options for the restore; they replace the backed-up database's options of
    /// the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl RestoreTarget {
    /// `base` (the backed-up database) with this target's fields over it.
    pub fn over(&self, base: &Database) -> Database {
        let mut database = base.clone();
        if let Some(endpoint) = &self.endpoint {
            database.endpoint = endpoint.clone();
        }
        if let Some(name) = &self.name {
            database.name = name.clone();
        }
        if self.user.is_some() {
            database.user = self.user.clone();
        }
        if self.password_secret.is_some() {
            database.password_secret = self.password_secret.clone();
        }
        if self.tls_ca_secret.is_some() {
            database.tls_ca_secret = self.tls_ca_secret.clone();
        }
        database.options.extend(self.options.clone());
        database
    }
}

impl DatabaseRestoreSpec {
    /// Check the rules the schema cannot say; all broken ones are named.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        match (&self.snapshot, &self.database_backup) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("spec", "sets both snapshot and databaseBackup: name the backup once"))
            }
            (None, None) => errors.push(FieldError::new("spec", "names no backup: set snapshot or databaseBackup")),
            _ => {}
        }
        if let Some(plugin) = &self.plugin
            && let Err(error) = plugin.source()
        {
            errors.push(error);
        }
        if let Err(error) = Limits::deadline_of(self.limits.as_ref()) {
            errors.push(error);
        }
        if errors.is_empty() { Ok(()) } else { Err(InvalidSpec(errors)) }
    }
}

/// What a restore Job runs, resolved by the operator from the resource and the snapshot
/// (or DatabaseBackup) it names; the runner never reads those again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// The snapshot object restored, when the resource named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The repository and the backup's path in it.
    pub repo: Repo,
    pub source_namespace: String,
    pub database_backup: String,
    /// A backup id, or `latest`.
    pub backup_id: String,
    /// The plugin to restore with, and the digest the backup needs from it.
    pub plugin: PluginSource,
    #[serde(default)]
    pub allow_other_plugin_digest: bool,
    /// The target, complete.
    pub database: Database,
    pub replace: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// What is known about a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRestoreStatus {
    #[serde(flatten)]
    pub runs: OneShotRuns,
    /// What was restored (the runner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
}

/// What the status of a resource that runs one Job per generation (a DatabaseRestore, a
/// DatabaseSnapshotImport) records about its runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneShotRuns {
    /// The generation of the spec the operator last acted on (the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Succeeded` (True once done; False with the reason where it failed) and `Running`
    /// (the operator's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The generation whose Job was created (the operator's); a generation runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// The Job of that generation (the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// How the newest finished run ended, which `Succeeded` describes (the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunOutcome>,
    /// The runner's report of the newest attempt: progress, then how it ended (the runner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_attempt: Option<Attempt>,
}

impl OneShotRuns {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The backup a restore read, and the plugin's account of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    /// The backup's id (`latest` resolved).
    pub backup_id: String,
    /// The snapshot object, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `endpoint/database` restored into.
    pub target: String,
    /// When the backup was committed (RFC 3339).
    pub backup_time: String,
    /// Plain bytes read.
    pub bytes: u64,
    /// The plugin's summary of the restore.
    pub summary: String,
    /// The plugin's attributes of the restore (counts per table, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// How long the restore took, in seconds.
    pub duration_seconds: f64,
}
