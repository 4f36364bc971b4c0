//! A backup from start to commit: run the plugin, wait for every upload, write the
//! manifest last, then apply retention. Anything short of that leaves no backup.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::archive::{Codec, TransferLimits};
use crate::manifest::{ArtifactEntry, DatabaseEntry, FORMAT_VERSION, Manifest, PluginEntry, SummaryEntry};
use crate::plugin::{BackupJob, Limits, Operation, Plugin, PluginError, operation_name};
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
}

impl BackupError {
    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Plugin(error) => error.reason(),
            BackupError::Settings(error) => error.reason(),
            BackupError::Repository(_) | BackupError::UploadLost(_) => "StorageFailed",
            BackupError::UnfinishedArtifact { .. } => "PluginFailed",
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
    /// killed runs and are removed.
    pub leftover_age: Duration,
    /// Plain bytes written so far, updated while the backup runs.
    pub written: Arc<AtomicU64>,
}

/// A finished backup and what retention removed after it.
#[derive(Debug)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub expired: Vec<String>,
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
    let metadata = plugin.metadata().await?;
    if !metadata.operations.contains(&Operation::Backup) {
        return Err(
            PluginError::Unsupported { plugin: metadata.name, operation: operation_name(Operation::Backup) }.into()
        );
    }
    request.database.check_options(&metadata)?;
    let addresses = request.database.resolve().await?;

    let removed =
        repository.remove_leftovers(&request.namespace, &request.name, started_at - request.leftover_age).await?;
    if removed > 0 {
        tracing::info!(removed, "removed leftovers of earlier failed backups");
    }

    let backup_id = new_backup_id(request);
    let prefix = repository.backup_prefix(&request.namespace, &request.name, &backup_id);
    tracing::info!(%backup_id, plugin = %metadata.name, "backup started");
    let job = BackupJob {
        store: Arc::clone(repository.store()),
        prefix: prefix.clone(),
        codec: request.codec.clone(),
        transfer: request.transfer,
        artifacts: Vec::new(),
        uploads: Vec::new(),
        written: Arc::clone(&request.written),
    };
    let settings = request.database.to_plugin_settings(&addresses);
    let (result, job) = plugin.backup(&metadata, &settings, addresses, job, &request.limits).await;

    // Every upload ends committed or aborted; wait for all before deciding.
    let mut lost = None;
    for upload in job.uploads {
        if let Err(error) = upload.await {
            lost = Some(error.to_string());
        }
    }
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
    let (summary, artifacts) = match outcome {
        Ok(done) => done,
        Err(error) => {
            discard(repository, &prefix).await;
            return Err(error);
        }
    };

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
    if let Err(error) = repository.write_manifest(&manifest).await {
        discard(repository, &prefix).await;
        return Err(error.into());
    }
    tracing::info!(backup_id = %manifest.backup_id, stored = manifest.stored_size(), "backup committed");

    let expired = apply_retention(repository, request, &manifest.backup_id).await?;
    Ok(BackupReport { manifest, expired })
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
