//! The resource's status. Every field has exactly one writer, so that server-side apply
//! can never drop, duplicate or strip another writer's part:
//! - the operator: `observedGeneration`, `plugin`, every condition, `lastRun`,
//!   `manualTriggerTime`;
//! - the runner of a Job: `latestAttempt` (its live report) and `lastBackup`;
//! - the runner of a restore drill: `lastVerification`.
//!
//! The operator derives `Succeeded` from the runner's reports and the Jobs' own states,
//! so a run the runner could not report (a Pod that never started, a killed runner)
//! still ends in a precise outcome, reported once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Succeeded`: the outcome of the newest finished run, with a reason per failure site.
/// It keeps that outcome while the next run is in progress (see `Running`).
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// `Ready`: the spec is valid and its runner identity, Jobs and CronJob are in place.
pub const CONDITION_READY: &str = "Ready";
/// `Running`: a run of this resource is in progress (True) or none is (False).
pub const CONDITION_RUNNING: &str = "Running";
/// `Verified`: the newest restore drill passed (True) or did not (False, with the reason).
pub const CONDITION_VERIFIED: &str = "Verified";

/// The exit code of a runner whose failure no retry can mend (the Job's
/// `podFailurePolicy` fails the Job on it where the API server serves that).
pub const EXIT_PERMANENT_FAILURE: u8 = 3;

/// The longest condition message the schema accepts; longer messages are cut.
pub const CONDITION_MESSAGE_MAX: usize = 4096;

/// What is known about this resource's backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupStatus {
    /// The generation of the spec the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The plugin source the spec names, e.g. `postgres` or `oci:registry/plugin@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// `Ready`, `Succeeded` and `Running`, replaced by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The newest finished run, which `Succeeded` describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunOutcome>,
    /// The runner's report of the newest attempt (Pod) of a run: progress while it runs,
    /// then how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_attempt: Option<Attempt>,
    /// The latest successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The newest restore drill (the drill runner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<DrillOutcome>,
    /// The `manualTrigger.time` of the latest manual backup started; a Job runs again
    /// only when `manualTrigger.time` differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_trigger_time: Option<String>,
}

impl DatabaseBackupStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The standard condition schema with a bounded message.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let mut item = generator.subschema_for::<Condition>();
    if let Some(message) = item.get_mut("properties").and_then(|p| p.get_mut("message")) {
        message["maxLength"] = CONDITION_MESSAGE_MAX.into();
    }
    schema.insert("items".into(), item.to_value());
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// How a finished run ended.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    /// The Job of the run.
    pub job: String,
    /// The Job's UID (a Job of the same name made later is another run).
    pub job_uid: String,
    /// Whether it backed up.
    pub succeeded: bool,
    /// The reason, as in `Succeeded`.
    pub reason: String,
    /// What happened, as in `Succeeded`.
    pub message: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
}

/// Where an attempt stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AttemptPhase {
    /// Backing up.
    #[default]
    Running,
    /// The backup is committed.
    Succeeded,
    /// It ended without a backup; `reason` says where.
    Failed,
}

/// One attempt of a run, as its runner reports it. Written with a merge patch, so every
/// optional field is written, as null when unset, and clears what an earlier attempt set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The Job the attempt belongs to.
    pub job: String,
    /// That Job's UID.
    pub job_uid: String,
    /// The Pod that runs it.
    pub pod: String,
    /// The spec generation the Job was created from, which the attempt uses.
    #[serde(default)]
    pub generation: Option<i64>,
    pub phase: AttemptPhase,
    /// CamelCase, e.g. `BackupRunning`, `DatabaseUnreachable`.
    pub reason: String,
    pub message: String,
    /// When the attempt started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// A failure that no retry can mend (an invalid spec, missing credentials, a refused
    /// login): the operator stops the Job's retries.
    #[serde(default)]
    pub permanent: bool,
    /// Plain bytes written so far.
    pub bytes: u64,
    /// When this was reported (RFC 3339).
    pub updated: String,
}

impl Attempt {
    /// Whether the attempt has ended.
    pub fn finished(&self) -> bool {
        self.phase != AttemptPhase::Running
    }
}

/// A summary of one successful backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// The backup id in the repository.
    pub id: String,
    /// When it finished (RFC 3339).
    pub time: String,
    /// The repository it was written to.
    pub repo: String,
    /// Plain bytes the plugin produced.
    pub bytes: u64,
    /// Bytes stored after compression and encryption.
    pub stored_bytes: u64,
    /// How long the run took, in seconds.
    pub duration_seconds: f64,
}

/// How a restore drill ended. Written with a merge patch, so every field is written (as
/// null or empty when unset) and replaces what the previous drill wrote.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillOutcome {
    /// The backup drilled, unless none could be found.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// The repository it was read from.
    pub repo: String,
    /// `endpoint/database` of the scratch target.
    pub target: String,
    /// Whether the restore succeeded and reported what the backup reported.
    pub verified: bool,
    /// `DrillPassed`, `CountsDiffer`, `NothingToCompare`, or where the restore failed
    /// (`ChecksumMismatch`, `DatabaseUnreachable`, ...).
    pub reason: String,
    pub message: String,
    /// The counts compared, `name: backup/restore`.
    #[serde(default)]
    pub compared: Vec<String>,
    /// When the drill ended (RFC 3339).
    pub finished_at: String,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
}
