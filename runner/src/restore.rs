//! Restoring a backup through its plugin, and verifying a backup without a database.

use std::sync::Arc;

use crate::archive::{DownloadError, Identities, check_stored, verify_object};
use crate::manifest::Manifest;
use crate::plugin::{
    GuestError, Limits, Operation, Plugin, PluginError, RestoreJob, RestoreOptions, RestoreProgress, Summary,
    operation_name,
};
use crate::repository::{Repository, RepositoryError};
use crate::settings::{DatabaseTarget, SettingsError};

/// Why a restore or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Artifact(#[from] DownloadError),
    #[error(
        "backup {backup_id} was written by plugin {expected} (sha256 {expected_sha256}); \
         the given plugin is {actual} (sha256 {actual_sha256}). Allow a different plugin explicitly to use it"
    )]
    DifferentPlugin {
        backup_id: String,
        expected: String,
        expected_sha256: String,
        actual: String,
        actual_sha256: String,
    },
}

/// How a plugin's `unsupported` error starts when the restore target holds data and
/// replace was not asked for (the convention the WIT documents for `plugin-error`).
pub const TARGET_NOT_EMPTY: &str = "target not empty:";

impl RestoreError {
    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            RestoreError::Plugin(PluginError::Guest { error: GuestError::Unsupported(message), .. })
                if message.starts_with(TARGET_NOT_EMPTY) =>
            {
                "TargetNotEmpty"
            }
            RestoreError::Plugin(PluginError::Interrupted { .. }) => "RestoreInterrupted",
            RestoreError::Plugin(error) => error.reason(),
            RestoreError::Settings(error) => error.reason(),
            RestoreError::Repository(RepositoryError::BackupNotFound { .. } | RepositoryError::NoBackups { .. }) => {
                "BackupNotFound"
            }
            RestoreError::Repository(RepositoryError::InvalidManifest { .. }) => "BackupInvalid",
            RestoreError::Repository(_) => "StorageFailed",
            RestoreError::Artifact(DownloadError::ChecksumMismatch { .. } | DownloadError::SizeMismatch { .. }) => {
                "ChecksumMismatch"
            }
            RestoreError::Artifact(DownloadError::Decode { .. }) => "BackupUndecodable",
            RestoreError::Artifact(_) => "StorageFailed",
            RestoreError::DifferentPlugin { .. } => "PluginDigestMismatch",
        }
    }
}

/// Which backup to restore where.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub namespace: String,
    pub name: String,
    /// A backup id, or `latest`.
    pub backup: String,
    pub database: DatabaseTarget,
    pub limits: Limits,
    pub identities: Arc<Identities>,
    pub replace_existing: bool,
    /// Use a plugin other than the one that wrote the backup.
    pub allow_other_plugin: bool,
    /// Where the reading stands, for progress reports.
    pub progress: Arc<RestoreProgress>,
}

/// Restore a backup with `plugin`. Checksums are verified while the plugin reads.
pub async fn run_restore(
    plugin: &Plugin,
    repository: &Repository,
    request: &RestoreRequest,
) -> Result<(Manifest, Summary), RestoreError> {
    let manifest = repository.find(&request.namespace, &request.name, &request.backup).await?;
    let metadata = plugin.metadata(&request.limits).await?;
    if !metadata.operations.contains(&Operation::Restore) {
        return Err(
            PluginError::Unsupported { plugin: metadata.name, operation: operation_name(Operation::Restore) }.into()
        );
    }
    if plugin.sha256 != manifest.plugin.sha256 && !request.allow_other_plugin {
        return Err(RestoreError::DifferentPlugin {
            backup_id: manifest.backup_id,
            expected: format!("{} {}", manifest.plugin.name, manifest.plugin.version),
            expected_sha256: manifest.plugin.sha256,
            actual: format!("{} {}", metadata.name, metadata.version),
            actual_sha256: plugin.sha256.clone(),
        });
    }
    request.database.check_options(&metadata)?;
    let addresses = request.database.resolve().await?;
    // Check every stored artifact before the plugin touches the database, so that a
    // corrupt backup fails the restore before anything is written. Streaming reads verify
    // again, in case an object changes in between.
    let prefix = repository.backup_prefix(&manifest.namespace, &manifest.name, &manifest.backup_id);
    for entry in &manifest.artifacts {
        check_stored(repository.store(), &prefix, entry).await?;
    }
    let job = RestoreJob {
        store: Arc::clone(repository.store()),
        prefix,
        artifacts: manifest.artifacts.clone(),
        identities: Arc::clone(&request.identities),
        progress: Arc::clone(&request.progress),
    };
    let settings = request.database.to_plugin_settings(&addresses);
    let options = RestoreOptions { replace_existing: request.replace_existing };
    tracing::info!(backup_id = %manifest.backup_id, plugin = %metadata.name, "restore started");
    let summary = plugin.restore(&metadata, &settings, options, addresses, job, &request.limits).await?;
    Ok((manifest, summary))
}

/// Read every artifact of a backup back, checking sizes and sha256 and that it decrypts
/// and decompresses; returns the manifest.
pub async fn verify_backup(
    repository: &Repository,
    namespace: &str,
    name: &str,
    backup: &str,
    identities: Arc<Identities>,
) -> Result<Manifest, RestoreError> {
    let manifest = repository.find(namespace, name, backup).await?;
    let prefix = repository.backup_prefix(&manifest.namespace, &manifest.name, &manifest.backup_id);
    for entry in &manifest.artifacts {
        verify_object(repository.store(), &prefix, entry, Arc::clone(&identities)).await?;
        tracing::info!(artifact = %entry.name, bytes = entry.raw_size, "verified");
    }
    Ok(manifest)
}
