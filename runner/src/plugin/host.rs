//! The host side of the `stowage:plugin` interfaces: what a plugin's calls do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::stowage::plugin::artifact_sink::{self, HostArtifactWriter};
use super::bindings::stowage::plugin::artifact_source::{self, ArtifactInfo, HostArtifactReader};
use super::bindings::stowage::plugin::report::{self, Level, Progress};
use super::bindings::stowage::plugin::types::{self, ArtifactError};
use super::guest_text::{GuestLevel, GuestLog, sanitize};
use crate::archive::{
    ArtifactDownload, ArtifactUpload, Codec, Identities, TransferBudget, TransferLimits, UploadError, UploadOutcome,
};
use crate::manifest::{ArtifactEntry, DATA_DIR, valid_artifact_name};
use crate::store::ObjectStore;

/// Progress is logged at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Artifacts a backup may have open at once, and in all. Each open artifact holds
/// encoder and part buffers, so the first bounds host memory.
pub const MAX_OPEN_ARTIFACTS: usize = 8;
pub const MAX_ARTIFACTS: usize = 10_000;
/// Longest media type accepted.
const MAX_MEDIA_TYPE: usize = 127;

/// Everything a plugin's store holds.
pub struct PluginState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) log: GuestLog,
    pub(super) job: Job,
    last_progress: Option<Instant>,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState").field("log", &self.log).finish_non_exhaustive()
    }
}

impl PluginState {
    pub(super) fn new(wasi: WasiCtx, limits: StoreLimits, log: GuestLog, job: Job) -> Self {
        PluginState { wasi, table: ResourceTable::new(), limits, log, job, last_progress: None }
    }
}

/// What the plugin is running for; decides which host interfaces work.
#[derive(Debug)]
pub enum Job {
    /// Only `metadata` is called.
    Describe,
    Backup(BackupJob),
    Restore(RestoreJob),
}

/// Where a backup's artifacts go, and what was written so far.
#[derive(Debug)]
pub struct BackupJob {
    pub store: Arc<dyn ObjectStore>,
    /// The backup's directory, ending in `/`.
    pub prefix: String,
    pub codec: Codec,
    pub transfer: TransferLimits,
    /// Host memory shared by all artifacts of the backup.
    pub budget: TransferBudget,
    /// Artifacts created and neither finished nor dropped yet.
    pub open: usize,
    /// Artifacts in creation order.
    pub artifacts: Vec<CreatedArtifact>,
    /// Background uploads; each resolves once its object is committed or cleaned up.
    pub uploads: Vec<crate::archive::UploadTask>,
    /// Plain bytes written so far by the plugin, for progress reports.
    pub written: Arc<AtomicU64>,
}

/// An artifact the plugin created, and how it was stored once finished.
#[derive(Debug)]
pub struct CreatedArtifact {
    pub name: String,
    pub media_type: String,
    pub object: String,
    pub outcome: Option<UploadOutcome>,
}

/// The backup a restore reads.
#[derive(Debug)]
pub struct RestoreJob {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub artifacts: Vec<ArtifactEntry>,
    pub identities: Arc<Identities>,
    pub progress: Arc<RestoreProgress>,
}

/// How far a restore has read, for its reports.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Plain bytes handed to the plugin.
    pub bytes: AtomicU64,
    /// The artifact opened last.
    pub current: std::sync::Mutex<String>,
}

/// The host object behind an `artifact-writer` resource.
#[derive(Debug)]
pub struct ArtifactWriter {
    index: usize,
    upload: ArtifactUpload,
    /// Whether it still counts as open.
    open: bool,
}

/// A media type as RFC 6838 spells one (`type/subtype`, parameters allowed), short.
fn valid_media_type(media_type: &str) -> bool {
    (3..=MAX_MEDIA_TYPE).contains(&media_type.len())
        && media_type.split_once('/').is_some_and(|(kind, _)| !kind.is_empty())
        && media_type.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-/;= \"".contains(&b))
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn upload_error(error: UploadError) -> ArtifactError {
    match error {
        UploadError::Finished => ArtifactError::NotAllowed("the artifact was already finished".into()),
        other => ArtifactError::Io(other.to_string()),
    }
}

impl types::Host for PluginState {}

impl artifact_sink::Host for PluginState {
    async fn create(
        &mut self,
        name: String,
        media_type: String,
    ) -> wasmtime::Result<Result<Resource<ArtifactWriter>, ArtifactError>> {
        let Job::Backup(job) = &mut self.job else {
            return Ok(Err(ArtifactError::NotAllowed("artifacts can only be created during a backup".into())));
        };
        if !valid_artifact_name(&name) {
            return Ok(Err(ArtifactError::InvalidName(sanitize(&name, 256))));
        }
        if !valid_media_type(&media_type) {
            return Ok(Err(ArtifactError::NotAllowed(format!(
                "media type {:?} of artifact {name} is not type/subtype of at most {MAX_MEDIA_TYPE} characters",
                sanitize(&media_type, 256)
            ))));
        }
        if job.open >= MAX_OPEN_ARTIFACTS {
            return Ok(Err(ArtifactError::NotAllowed(format!(
                "{MAX_OPEN_ARTIFACTS} artifacts are open already; finish one before creating {name}"
            ))));
        }
        if job.artifacts.len() >= MAX_ARTIFACTS {
            return Ok(Err(ArtifactError::NotAllowed(format!("a backup has at most {MAX_ARTIFACTS} artifacts"))));
        }
        if job.artifacts.iter().any(|artifact| artifact.name == name) {
            return Ok(Err(ArtifactError::AlreadyExists(name)));
        }
        let object = format!("{DATA_DIR}{name}{}", job.codec.extension());
        let (upload, task) = ArtifactUpload::start(
            Arc::clone(&job.store),
            format!("{}{object}", job.prefix),
            job.codec.clone(),
            job.transfer,
            job.budget.clone(),
        );
        job.uploads.push(task);
        job.open += 1;
        job.artifacts.push(CreatedArtifact { name, media_type, object, outcome: None });
        let writer = ArtifactWriter { index: job.artifacts.len() - 1, upload, open: true };
        Ok(Ok(self.table.push(writer)?))
    }
}

impl HostArtifactWriter for PluginState {
    async fn write(
        &mut self,
        writer: Resource<ArtifactWriter>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ArtifactError>> {
        if let Job::Backup(job) = &self.job {
            job.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let writer = self.table.get_mut(&writer)?;
        Ok(writer.upload.write(data).await.map_err(upload_error))
    }

    async fn finish(&mut self, writer: Resource<ArtifactWriter>) -> wasmtime::Result<Result<u64, ArtifactError>> {
        let writer = self.table.get_mut(&writer)?;
        let index = writer.index;
        let result = writer.upload.finish().await;
        let was_open = std::mem::replace(&mut writer.open, false);
        let Job::Backup(job) = &mut self.job else {
            return Ok(Err(ArtifactError::NotAllowed("artifacts can only be written during a backup".into())));
        };
        if was_open {
            job.open -= 1;
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => return Ok(Err(upload_error(error))),
        };
        let raw_size = outcome.raw_size;
        job.artifacts[index].outcome = Some(outcome);
        Ok(Ok(raw_size))
    }

    async fn drop(&mut self, writer: Resource<ArtifactWriter>) -> wasmtime::Result<()> {
        // An unfinished upload aborts itself once its handle is gone.
        let writer = self.table.delete(writer)?;
        if let (true, Job::Backup(job)) = (writer.open, &mut self.job) {
            job.open -= 1;
        }
        Ok(())
    }
}

impl artifact_source::Host for PluginState {
    async fn artifacts(&mut self) -> wasmtime::Result<Vec<ArtifactInfo>> {
        let Job::Restore(job) = &self.job else {
            return Ok(Vec::new());
        };
        Ok(job
            .artifacts
            .iter()
            .map(|entry| ArtifactInfo {
                name: entry.name.clone(),
                media_type: entry.media_type.clone(),
                size: entry.raw_size,
            })
            .collect())
    }

    async fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<ArtifactDownload>, ArtifactError>> {
        let Job::Restore(job) = &self.job else {
            return Ok(Err(ArtifactError::NotAllowed("artifacts can only be read during a restore".into())));
        };
        let Some(entry) = job.artifacts.iter().find(|entry| entry.name == name) else {
            return Ok(Err(ArtifactError::NotFound(name)));
        };
        if let Ok(mut current) = job.progress.current.lock() {
            current.clone_from(&entry.name);
        }
        match ArtifactDownload::open(&job.store, &job.prefix, entry, Arc::clone(&job.identities)).await {
            Ok(download) => Ok(Ok(self.table.push(download)?)),
            Err(error) => Ok(Err(ArtifactError::Io(error.to_string()))),
        }
    }
}

impl HostArtifactReader for PluginState {
    async fn read(
        &mut self,
        reader: Resource<ArtifactDownload>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ArtifactError>> {
        let reader = self.table.get_mut(&reader)?;
        let read = reader.read(max as usize).await.map(Vec::from);
        if let (Ok(bytes), Job::Restore(job)) = (&read, &self.job) {
            job.progress.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(read.map_err(|error| ArtifactError::Io(error.to_string())))
    }

    async fn drop(&mut self, reader: Resource<ArtifactDownload>) -> wasmtime::Result<()> {
        self.table.delete(reader)?;
        Ok(())
    }
}

impl report::Host for PluginState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => GuestLevel::Trace,
            Level::Debug => GuestLevel::Debug,
            Level::Info => GuestLevel::Info,
            Level::Warn => GuestLevel::Warn,
            Level::Error => GuestLevel::Error,
        };
        self.log.log(level, None, &message);
        Ok(())
    }

    async fn set_progress(&mut self, progress: Progress) -> wasmtime::Result<()> {
        let now = Instant::now();
        if self.last_progress.is_some_and(|last| now.duration_since(last) < PROGRESS_INTERVAL) {
            return Ok(());
        }
        self.last_progress = Some(now);
        let total = progress.items_total.map(|t| format!("/{t}")).unwrap_or_default();
        tracing::info!(
            target: "stowage::plugin",
            plugin = %self.log.plugin(),
            current = %sanitize(&progress.current, 256),
            records = progress.records_done,
            "progress: {}{total} items",
            progress.items_done,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::valid_media_type;

    #[test]
    fn media_types_are_short_and_plain() {
        for good in ["application/sql", "text/plain; charset=utf-8", "application/vnd.stowage.copy+text"] {
            assert!(valid_media_type(good), "{good}");
        }
        for bad in ["", "plain", "/x", "text/\nforged", &format!("text/{}", "x".repeat(200))] {
            assert!(!valid_media_type(bad), "{bad}");
        }
    }
}
