//! A backup from start to commit: take the configuration's lock, run the plugin, wait for
//! every upload, check that every artifact is stored, write the manifest last. Anything
//! short of that leaves no backup; nothing after it (retention, cleanup, reporting) can
//! turn a committed backup into a failure.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::archive::{Codec, TransferBudget, TransferLimits};
use crate::lock::{LockError, RepoLock};
use crate::manifest::{ArtifactEntry, DatabaseEntry, FORMAT_VERSION, Manifest, PluginEntry, SummaryEntry};
use crate::plugin::{BackupJob, Limits, Operation, Plugin, PluginError, PluginMetadata, operation_name};
use crate::repository::{Repository, RepositoryError};
use crate::retention::Retention;
use crate::settings::{DatabaseTarget, SettingsError};

/// Why a backup did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("plugin {plugin} returned without finishing artifact {artifact}")]
    UnfinishedArtifact { plugin: String, artifact: String },
    #[error("an upload of the backup was lost: {0}")]
    UploadLost(String),
    #[error("artifact {artifact} is not stored as written ({why}); the backup was not committed")]
    ArtifactMissing { artifact: String, why: String },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the backup was interrupted (SIGTERM or SIGINT) before it was committed; nothing was kept")]
    Interrupted,
}

impl BackupError {
    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Plugin(error) => error.reason(),
            BackupError::Settings(error) => error.reason(),
            BackupError::Repository(_) | BackupError::UploadLost(_) | BackupError::ArtifactMissing { .. } => {
                "StorageFailed"
            }
            BackupError::UnfinishedArtifact { .. } => "PluginFailed",
            BackupError::Lock(LockError::Held { .. }) => "BackupAlreadyRunning",
            BackupError::Lock(LockError::Lost { .. }) => "BackupLockLost",
            BackupError::Lock(LockError::Store { .. }) => "StorageFailed",
            BackupError::Interrupted => "BackupInterrupted",
        }
    }
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The configuration the backup belongs to (the DatabaseBackup resource).
    pub namespace: String,
    pub name: String,
    pub database: DatabaseTarget,
    pub codec: Codec,
    pub transfer: TransferLimits,
    pub limits: Limits,
    pub retention: Retention,
    /// Backup directories without a manifest and older than this are leftovers of
    /// killed runs and are removed; never younger than the longest allowed run
    /// (the deadline plus [`LEFTOVER_GRACE`]).
    pub leftover_age: Duration,
    /// How long to wait for another run of the same configuration to finish.
    pub lock_wait: Duration,
    /// Plain bytes written so far, updated while the backup runs.
    pub written: Arc<AtomicU64>,
}

/// Added to the deadline for the youngest leftovers that may be removed: a run that is
/// still alive is never younger than its deadline.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(1800);
/// Time allowed for aborting uploads and removing objects after an interruption; what
/// is left then is removed by the next run.
const INTERRUPTED_CLEANUP: Duration = Duration::from_secs(15);

/// A committed backup, what retention removed after it, and what went wrong after the
/// commit (best-effort steps; the backup stands regardless).
#[derive(Debug)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub expired: Vec<String>,
    pub warnings: Vec<String>,
}

/// A sortable, unique id: the start time and a few bits of entropy.
fn new_backup_id(request: &BackupRequest) -> String {
    let now = Utc::now();
    let salt = Sha256::digest(format!(
        "{}/{}/{}/{}",
        request.namespace,
        request.name,
        now.timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    ));
    format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), hex::encode(&salt[..3]))
}

/// Run a backup with `plugin` into `repository`.
pub async fn run_backup(
    plugin: &Plugin,
    repository: &Repository,
    request: &BackupRequest,
) -> Result<BackupReport, BackupError> {
    let started_at = Utc::now();
    let metadata = plugin.metadata(&request.limits).await?;
    if !metadata.operations.contains(&Operation::Backup) {
        return Err(
            PluginError::Unsupported { plugin: metadata.name, operation: operation_name(Operation::Backup) }.into()
        );
    }
    request.database.check_options(&metadata)?;
    let addresses = request.database.resolve().await?;

    let backup_id = new_backup_id(request);
    let config = format!("{}/{}", request.namespace, request.name);
    let acquire = RepoLock::acquire(
        Arc::clone(repository.store()),
        repository.lock_key(&request.namespace, &request.name),
        config,
        &backup_id,
        request.lock_wait,
    );
    let lock = tokio::select! {
        lock = acquire => lock?,
        () = request.limits.interrupt.cancelled() => return Err(BackupError::Interrupted),
    };
    let result = locked_backup(plugin, repository, request, &metadata, addresses, backup_id, started_at, &lock).await;
    lock.release().await;
    result
}

/// The backup proper, while this run holds the configuration's lock.
#[allow(clippy::too_many_arguments)]
async fn locked_backup(
    plugin: &Plugin,
    repository: &Repository,
    request: &BackupRequest,
    metadata: &PluginMetadata,
    addresses: Vec<std::net::SocketAddr>,
    backup_id: String,
    started_at: chrono::DateTime<Utc>,
    lock: &RepoLock,
) -> Result<BackupReport, BackupError> {
    let mut warnings = Vec::new();
    // No other run of this configuration is alive (we hold the lock), but one whose lock
    // expired might still be: nothing younger than the longest allowed run is touched,
    // except what a run known to be dead left.
    let leftover_age = request.leftover_age.max(request.limits.deadline + LEFTOVER_GRACE);
    let dead_run = lock.dead_predecessor();
    match repository.remove_leftovers(&request.namespace, &request.name, started_at - leftover_age, dead_run).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed leftovers of earlier failed backups"),
        Err(error) => {
            tracing::warn!(%error, "cannot remove leftovers of earlier backups; backing up anyway");
            warnings.push(format!("leftovers of earlier backups were not removed: {error}"));
        }
    }

    let prefix = repository.backup_prefix(&request.namespace, &request.name, &backup_id);
    tracing::info!(%backup_id, plugin = %metadata.name, "backup started");
    let job = BackupJob {
        store: Arc::clone(repository.store()),
        prefix: prefix.clone(),
        codec: request.codec.clone(),
        transfer: request.transfer,
        budget: TransferBudget::new(&request.transfer),
        open: 0,
        artifacts: Vec::new(),
        uploads: Vec::new(),
        written: Arc::clone(&request.written),
    };
    let settings = request.database.to_plugin_settings(&addresses);
    let (result, job) = plugin.backup(metadata, &settings, addresses, job, &request.limits).await;

    // Every upload ends committed or aborted; wait for all before deciding.
    let interrupted = matches!(result, Err(PluginError::Interrupted { .. }));
    let mut lost = None;
    let settle = async {
        for upload in job.uploads {
            if let Err(error) = upload.await {
                lost = Some(error.to_string());
            }
        }
    };
    if interrupted {
        if tokio::time::timeout(INTERRUPTED_CLEANUP, settle).await.is_ok() {
            discard(repository, &prefix).await;
        }
        return Err(BackupError::Interrupted);
    }
    settle.await;
    let outcome = result.map_err(BackupError::from).and_then(|summary| {
        if let Some(error) = lost {
            return Err(BackupError::UploadLost(error));
        }
        let artifacts = job
            .artifacts
            .iter()
            .map(|created| {
                let outcome = created.outcome.as_ref().ok_or_else(|| BackupError::UnfinishedArtifact {
                    plugin: metadata.name.clone(),
                    artifact: created.name.clone(),
                })?;
                Ok(ArtifactEntry {
                    name: created.name.clone(),
                    media_type: created.media_type.clone(),
                    object: created.object.clone(),
                    raw_size: outcome.raw_size,
                    stored_size: outcome.stored_size,
                    sha256: outcome.sha256.clone(),
                    compression: request.codec.compression,
                    encryption: (!request.codec.recipients.is_empty()).then(|| request.codec.recipients.describe()),
                })
            })
            .collect::<Result<Vec<_>, BackupError>>()?;
        Ok((summary, artifacts))
    });
    let committed = match outcome {
        Ok((summary, artifacts)) => {
            let manifest = Manifest {
                format_version: FORMAT_VERSION,
                backup_id,
                namespace: request.namespace.clone(),
                name: request.name.clone(),
                started_at,
                finished_at: Utc::now(),
                plugin: PluginEntry {
                    source: plugin.source.clone(),
                    name: metadata.name.clone(),
                    version: metadata.version.clone(),
                    sha256: plugin.sha256.clone(),
                    wit_version: plugin.wit_version.clone(),
                },
                database: DatabaseEntry {
                    host: request.database.host.clone(),
                    port: request.database.port,
                    database: request.database.database.clone(),
                },
                artifacts,
                summary: SummaryEntry {
                    description: summary.description,
                    attributes: summary.attributes.into_iter().collect(),
                },
            };
            commit(repository, &prefix, &manifest, lock, &request.limits).await.map(|()| manifest)
        }
        Err(error) => Err(error),
    };
    let manifest = match committed {
        Ok(manifest) => manifest,
        Err(error) => {
            discard(repository, &prefix).await;
            return Err(error);
        }
    };
    tracing::info!(backup_id = %manifest.backup_id, stored = manifest.stored_size(), "backup committed");

    // From here on the backup exists; what fails now is a warning.
    let expired = match apply_retention(repository, request, &manifest.backup_id).await {
        Ok(expired) => expired,
        Err(error) => {
            tracing::warn!(%error, "retention did not run to the end; the new backup is committed");
            warnings.push(format!("retention did not run to the end: {error}"));
            Vec::new()
        }
    };
    Ok(BackupReport { manifest, expired, warnings })
}

/// Make the backup exist: every artifact must be stored with the size recorded, the lock
/// must still be ours, and the run must not be interrupted; then the manifest is written.
async fn commit(
    repository: &Repository,
    prefix: &str,
    manifest: &Manifest,
    lock: &RepoLock,
    limits: &Limits,
) -> Result<(), BackupError> {
    for artifact in &manifest.artifacts {
        let key = format!("{prefix}{}", artifact.object);
        let missing = |why: String| BackupError::ArtifactMissing { artifact: artifact.name.clone(), why };
        match repository.store().head(&key).await.map_err(RepositoryError::from)? {
            None => return Err(missing(format!("object {key} does not exist"))),
            Some(object) if object.size != artifact.stored_size => {
                return Err(missing(format!(
                    "object {key} has {} bytes, {} were written",
                    object.size, artifact.stored_size
                )));
            }
            Some(_) => {}
        }
    }
    lock.check().await?;
    if limits.interrupt.is_cancelled() {
        return Err(BackupError::Interrupted);
    }
    Ok(repository.write_manifest(manifest).await?)
}

/// Remove what a failed backup stored. Best effort: leftovers are also removed later.
async fn discard(repository: &Repository, prefix: &str) {
    let store = repository.store();
    match store.list(prefix).await {
        Ok(objects) => {
            for object in objects {
                if let Err(error) = store.delete(&object.key).await {
                    tracing::warn!(%error, "cannot remove an object of the failed backup");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot list the objects of the failed backup"),
    }
}

async fn apply_retention(
    repository: &Repository,
    request: &BackupRequest,
    just_written: &str,
) -> Result<Vec<String>, BackupError> {
    if request.retention.is_unlimited() {
        return Ok(Vec::new());
    }
    let backups = repository.list(Some((&request.namespace, &request.name))).await?;
    let mut removed = Vec::new();
    for manifest in request.retention.expired(&backups, just_written, Utc::now()) {
        repository.delete(manifest).await?;
        tracing::info!(backup_id = %manifest.backup_id, "removed by retention");
        removed.push(manifest.backup_id.clone());
    }
    Ok(removed)
}
