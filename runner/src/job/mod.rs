//! The in-cluster entry points of the operator's Jobs. `stowage job` backs up exactly
//! the spec the Job was created from (`STOWAGE_RUN_SPEC`, never the live resource, which
//! may have changed since), for the chosen repository, and `stowage restore-job` restores
//! exactly the plan its Job carries (see [`restore`]). Both report the attempt in their
//! resource's status: `latestAttempt` (progress, then the outcome with a reason per
//! failure site) and the result on success. Conditions are the operator's, derived from
//! these reports and the Job's own state.

pub mod drill;
pub mod import;
mod inputs;
pub mod restore;
mod snapshots;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::{Api, Client};
use stowage_api::{
    DatabaseBackup, DatabaseBackupSpec, DatabaseSnapshot, LABEL_CONFIGURATION, LABEL_REPO, LastBackup, Repo,
    label_value,
};
use tokio_util::sync::CancellationToken;

use crate::archive::{Codec, Recipients, TransferLimits};
use crate::backup::{BackupError, BackupReport, BackupRequest, run_backup};
use crate::plugin::{Limits, PluginEngine, PluginError};
use crate::repository::{RepoLocation, Repository};
use crate::restore::RestoreError;
use crate::retention::Retention;
use crate::store::S3Options;
use inputs::{database_target, load_plugin, storage};
use snapshots::Origin;
use status::StatusWriter;

/// How often progress may be written to the status while a run works: every write is
/// an etcd write and a watch event for every watcher, and a thousand runs at once (10,000
/// resources, issue 13's bench) at 10 s kept the API server busy with 100 patches/s.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// Leftovers of killed runs older than this are removed before a backup (and never
/// younger than the deadline plus grace, see [`crate::backup::LEFTOVER_GRACE`]).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// The inputs of a Job, from its environment (see `stowage job --help`).
#[derive(Clone, Default)]
pub struct JobInputs {
    pub resource_name: Option<String>,
    /// The resource's UID: the snapshot objects a backup creates are owned by it.
    pub resource_uid: Option<String>,
    pub namespace: Option<String>,
    /// The spec the Job was created from, as JSON (a DatabaseBackup's or a
    /// DatabaseSnapshotImport's).
    pub run_spec: Option<String>,
    /// The DatabaseRestore or DatabaseSnapshotImport a Job runs for.
    pub one_shot_name: Option<String>,
    /// The plan a restore Job was created with (JSON).
    pub restore_plan: Option<String>,
    /// The generation of that spec.
    pub generation: Option<i64>,
    /// The Job and Pod this attempt runs in, for the report.
    pub job_name: Option<String>,
    pub job_uid: Option<String>,
    pub pod_name: Option<String>,
    /// The repository to write to; defaults to the manual trigger's.
    pub repo: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Fallbacks when the repository does not set them.
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub database_password: Option<String>,
    /// PEM; handed to the plugin as option `tls-ca`.
    pub database_tls_ca: Option<String>,
    /// Docker config JSON with the credentials of an `oci` plugin's registry.
    pub registry_auth: Option<String>,
    /// age identities that decrypt the backup a restore reads.
    pub age_identity: Option<String>,
    pub plugin_path: String,
    /// Where the Job mounts the plugin of a `configMap` source.
    pub plugin_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// How long to wait for another run of the same resource.
    pub lock_wait: Duration,
}

impl std::fmt::Debug for JobInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobInputs")
            .field("resource_name", &self.resource_name)
            .field("namespace", &self.namespace)
            .field("job_name", &self.job_name)
            .field("repo", &self.repo)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a Job did not back up or restore.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("environment variable {0} is not set")]
    MissingEnvironment(&'static str),
    #[error("cannot use the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An input that makes the run impossible; written to the status.
    #[error("{message}")]
    Invalid { reason: &'static str, message: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A restore drill that did not pass; its outcome is in the status.
    #[error("the restore drill did not pass: {0}")]
    Drill(String),
}

impl JobError {
    fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        JobError::Invalid { reason, message: message.into() }
    }

    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::MissingEnvironment(_) => "InvalidEnvironment",
            JobError::Kube(_) => "KubernetesApiFailed",
            JobError::Invalid { reason, .. } => reason,
            JobError::Plugin(error) => error.reason(),
            JobError::Backup(error) => error.reason(),
            JobError::Restore(error) => error.reason(),
            JobError::Drill(_) => "DrillFailed",
        }
    }

    /// Whether a retry would fail the same way: the inputs are wrong, not the moment.
    pub fn permanent(&self) -> bool {
        PERMANENT_REASONS.contains(&self.reason())
    }
}

/// Reasons no retry can mend; the runner exits with [`stowage_api::EXIT_PERMANENT_FAILURE`]
/// and the operator stops the Job's retries.
const PERMANENT_REASONS: &[&str] = &[
    "InvalidEnvironment",
    "InvalidSpec",
    "RepoNotFound",
    "InvalidRepo",
    "MissingStorageCredentials",
    "MissingDatabaseCredentials",
    "MissingRegistryCredentials",
    "InvalidDatabaseEndpoint",
    "InvalidPluginOptions",
    "InvalidPluginSettings",
    "PluginNotFound",
    "PluginNotPinned",
    "PluginTooLarge",
    "PluginDigestMismatch",
    "PluginInvalid",
    "PluginWitVersionUnsupported",
    "PluginIncompatible",
    "DatabaseAuthenticationFailed",
    "DatabaseUnsupported",
    "OperationUnsupported",
    "BackupNotFound",
    "BackupInvalid",
    "BackupUndecodable",
    "ChecksumMismatch",
    "TargetNotEmpty",
    "InvalidAgeIdentity",
    "DrillTargetIsSource",
];

/// Everything a backup needs, checked.
#[derive(Debug)]
struct Plan<'a> {
    repo: &'a Repo,
    location: RepoLocation,
    s3: S3Options,
    request: BackupRequest,
}

fn invalid_spec(error: impl std::fmt::Display) -> JobError {
    JobError::invalid("InvalidSpec", error.to_string())
}

/// The limits of a run: the deadline and the plugin's memory.
fn run_limits(limits: Option<&stowage_api::Limits>, interrupt: &CancellationToken) -> Result<Limits, JobError> {
    let deadline = stowage_api::Limits::deadline_of(limits).map_err(invalid_spec)?;
    let mut run = Limits { interrupt: interrupt.clone(), deadline, ..Limits::default() };
    if let Some(mib) = limits.and_then(|l| l.plugin_memory_mib) {
        run.memory_bytes = (mib as usize) << 20;
    }
    Ok(run)
}

/// Check the spec and the environment; every problem has its own reason.
fn plan<'a>(
    spec: &'a DatabaseBackupSpec,
    namespace: &str,
    name: &str,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
) -> Result<Plan<'a>, JobError> {
    // The operator refuses invalid specs before a Job exists; an older operator may not have.
    spec.validate().map_err(invalid_spec)?;
    let repo_name =
        inputs.repo.clone().or_else(|| spec.manual_trigger.as_ref().map(|t| t.repo.clone())).ok_or_else(|| {
            JobError::invalid("RepoNotFound", "no repository chosen: set BACKUP_REPO_NAME or manualTrigger.repo")
        })?;
    let repo = spec
        .repo("BACKUP_REPO_NAME", &repo_name)
        .map_err(|error| JobError::invalid("RepoNotFound", error.to_string()))?;
    let (location, s3) = storage(repo, namespace, inputs)?;
    let target = database_target(&spec.database, inputs)?;
    let compression = spec.compression().map_err(invalid_spec)?;
    let recipients = Recipients::from(spec.age_recipients().map_err(invalid_spec)?);
    let rules = spec.retention.clone().unwrap_or_default();
    let count = |rule: Option<u32>| rule.map(|n| n as usize);
    let retention = Retention {
        keep_last: count(rules.keep_last),
        keep_hourly: count(rules.keep_hourly),
        keep_daily: count(rules.keep_daily),
        keep_weekly: count(rules.keep_weekly),
        keep_monthly: count(rules.keep_monthly),
        keep_yearly: count(rules.keep_yearly),
        max_age: spec.max_age().map_err(invalid_spec)?,
    };
    Ok(Plan {
        location,
        s3,
        request: BackupRequest {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            database: target,
            codec: Codec { compression, recipients },
            transfer: TransferLimits::default(),
            limits: run_limits(spec.limits.as_ref(), interrupt)?,
            retention,
            leftover_age: LEFTOVER_AGE,
            lock_wait: inputs.lock_wait,
            written: Arc::default(),
        },
        repo,
    })
}

/// Run the Job: back up and report. Errors are also written to the status where the
/// resource can be reached.
pub async fn run_job(inputs: JobInputs, interrupt: CancellationToken) -> Result<BackupReport, JobError> {
    let name = inputs.resource_name.clone().ok_or(JobError::MissingEnvironment("BACKUP_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let mut status = StatusWriter::new(Api::namespaced(client.clone(), &namespace), &name, "Backup", &inputs);
    let result = match run_spec(&inputs) {
        Ok(spec) => backup(&client, &spec, &namespace, &name, &inputs, &interrupt, &mut status).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        status.failed(error).await;
    }
    result
}

/// The spec the Job was created from.
fn run_spec(inputs: &JobInputs) -> Result<DatabaseBackupSpec, JobError> {
    let text = inputs.run_spec.as_deref().ok_or(JobError::MissingEnvironment("STOWAGE_RUN_SPEC"))?;
    serde_json::from_str(text).map_err(|e| invalid_spec(format!("STOWAGE_RUN_SPEC is not a DatabaseBackup spec: {e}")))
}

async fn backup(
    client: &Client,
    spec: &DatabaseBackupSpec,
    namespace: &str,
    name: &str,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
    status: &mut StatusWriter<DatabaseBackup>,
) -> Result<BackupReport, JobError> {
    let plan = plan(spec, namespace, name, inputs, interrupt)?;
    let engine = PluginEngine::new(inputs.cache_dir.clone())
        .map_err(|e| JobError::invalid("RunnerFailed", format!("cannot start the WebAssembly engine: {e:#}")))?;
    let plugin = load_plugin(&engine, &spec.plugin, inputs).await?;
    let repository = Repository::open(&plan.location, &plan.s3).await;

    status.running(format!("Backing up to repository {}", plan.repo.name), 0).await?;
    let started = Instant::now();
    let repo_name = plan.repo.name.clone();
    let progress = Arc::clone(&plan.request.written);
    let (stop, reporter) = report_progress(status.clone(), move || {
        let bytes = progress.load(Ordering::Relaxed);
        (format!("Backing up to repository {repo_name}: {bytes} bytes so far"), bytes)
    });
    let result = run_backup(&plugin, &repository, &plan.request).await;
    // Let a progress write in flight finish first, so that it cannot land after the outcome.
    let _ = stop.send(());
    let _ = reporter.await;
    let report = result?;
    let manifest = &report.manifest;
    let last_backup = LastBackup {
        id: manifest.backup_id.clone(),
        time: status::rfc3339(manifest.finished_at),
        repo: plan.repo.name.clone(),
        bytes: manifest.raw_size(),
        stored_bytes: manifest.stored_size(),
        duration_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    // The backup is committed: from here nothing may fail the Job, or its retry would
    // make a second backup.
    let mut warnings = report.warnings.clone();
    if let Err(warning) = sync_snapshots(client, spec, namespace, name, inputs, &plan, &repository).await {
        tracing::warn!(%warning, "the backup is committed; its snapshot objects are not up to date");
        warnings.push(warning);
    }
    let mut message = "Database has been archived".to_owned();
    for warning in &warnings {
        message.push_str(&format!("; after the commit, {warning}"));
    }
    let value = serde_json::to_value(&last_backup).unwrap_or_default();
    if let Err(error) = status.succeeded(message, last_backup.bytes, "lastBackup", &value).await {
        tracing::error!(%error, backup_id = %manifest.backup_id, "the backup is committed, but its status could not be written");
    }
    Ok(report)
}

/// Bring the configuration's snapshot objects in line with its committed backups in the
/// repository; what fails is a warning (the backup is committed).
async fn sync_snapshots(
    client: &Client,
    spec: &DatabaseBackupSpec,
    namespace: &str,
    name: &str,
    inputs: &JobInputs,
    plan: &Plan<'_>,
    repository: &Repository,
) -> Result<(), String> {
    let manifests = repository
        .list(Some((namespace, name)))
        .await
        .map_err(|e| format!("the snapshot objects were not updated: listing the backups failed: {e}"))?;
    let mut repo = plan.repo.clone();
    repo.bucket = plan.repo.bucket_for(namespace);
    let origin = Origin {
        labels: [
            (LABEL_CONFIGURATION.to_owned(), label_value(name)),
            (LABEL_REPO.to_owned(), label_value(&plan.repo.name)),
        ]
        .into(),
        owner: Origin::owned_by::<DatabaseBackup>(name, inputs.resource_uid.as_ref()),
        repo,
        plugin: Some(spec.plugin.clone()),
        database: Some(spec.database.clone()),
    };
    let api: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), namespace);
    let synced = snapshots::sync(&api, &origin, &manifests)
        .await
        .map_err(|e| format!("the snapshot objects were not updated: {e}"))?;
    tracing::info!(created = synced.created, removed = synced.removed, "snapshot objects in line with the repository");
    if synced.refused > 0 {
        return Err(format!("the API server refused the snapshot objects of {} backups", synced.refused));
    }
    Ok(())
}

/// Write what `progress` says every [`PROGRESS_INTERVAL`], when it changed, until the
/// returned sender fires; a write in progress is completed, never cut off.
fn report_progress<K>(
    mut status: StatusWriter<K>,
    progress: impl Fn() -> (String, u64) + Send + 'static,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
        interval.tick().await;
        let mut written = None;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = &mut stopped => return,
            }
            let now = progress();
            if written.as_ref() == Some(&now) {
                continue;
            }
            match status.running(now.0.clone(), now.1).await {
                Ok(()) => written = Some(now),
                Err(error) => tracing::warn!(%error, "cannot write progress to the status"),
            }
        }
    });
    (stop, task)
}
