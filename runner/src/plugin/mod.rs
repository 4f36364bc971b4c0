//! The plugin host: loads database plugins (WebAssembly components of the
//! `stowage:plugin` world) and runs them inside a sandbox.
//!
//! One [`PluginEngine`] per process compiles each component once (cached on disk as a
//! precompiled artifact keyed by the component's sha256) and links it once; every run
//! gets a fresh store with its own limits.

mod bindings;
mod fetch;
mod guest_text;
mod host;
pub mod oci;
mod output;
mod sandbox;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

pub use bindings::stowage::plugin::types::{
    DatabaseSettings, Operation, PluginError as GuestError, PluginMetadata, RestoreOptions, SettingSpec, Summary,
};
use bindings::{DatabasePlugin, DatabasePluginPre};
pub use guest_text::sanitize;
use guest_text::{GuestLog, MAX_ERROR};
pub use host::{
    BackupJob, CreatedArtifact, Job, MAX_ARTIFACTS, MAX_OPEN_ARTIFACTS, PluginState, RestoreJob, RestoreProgress,
};
pub use sandbox::Limits;

/// The WIT package plugins implement.
pub const WIT_PACKAGE: &str = "stowage:plugin";
/// The WIT version this host implements; plugins built for any `0.1.x` work.
pub const WIT_VERSION: &str = "0.1.0";
/// The largest plugin component accepted.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// How often the epoch advances: the granularity of deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Time allowed for `metadata`, which must not touch the network.
const METADATA_DEADLINE: Duration = Duration::from_secs(10);
/// Bounds of what a plugin's summary may put into a manifest.
const MAX_DESCRIPTION: usize = 4096;
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_NAME: usize = 128;
const MAX_ATTRIBUTE_VALUE: usize = 4096;

/// Why a plugin could not be loaded or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot download plugin {url}: {message}")]
    Download { url: String, message: String },
    #[error("plugin {url} comes from the network, so it must be pinned: a sha256, or an OCI reference @sha256:...")]
    Unpinned { url: String },
    #[error("plugin {path} is {size} bytes; the limit is {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("plugin {path} has sha256 {actual}, but {expected} is pinned")]
    DigestMismatch { path: String, expected: String, actual: String },
    #[error("{path} is not a WebAssembly component; plugins are wasm32-wasip2 components")]
    NotAComponent { path: String },
    #[error("cannot compile plugin {path}: {message}")]
    Compile { path: String, message: String },
    #[error("{path} does not export {WIT_PACKAGE}/plugin, so it is not a Stowage plugin")]
    NotAPlugin { path: String },
    #[error("{path} is built for {WIT_PACKAGE}@{found}; this runner supports {WIT_PACKAGE}@{WIT_VERSION}")]
    UnsupportedWitVersion { path: String, found: String },
    #[error("{path} does not match the {WIT_PACKAGE} world: {message}")]
    Incompatible { path: String, message: String },
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin} panicked: {message}")]
    Panic { plugin: String, message: String },
    #[error("the run was interrupted (SIGTERM or SIGINT) while plugin {plugin} was working")]
    Interrupted { plugin: String },
    #[error("plugin {plugin} exceeded its memory limit of {limit_mib} MiB")]
    MemoryLimit { plugin: String, limit_mib: usize },
    #[error("plugin {plugin} did not finish within {}", humantime::format_duration(*.deadline))]
    Deadline { plugin: String, deadline: Duration },
    #[error("plugin {plugin} does not support {operation}")]
    Unsupported { plugin: String, operation: &'static str },
    #[error("plugin {plugin}: {}", describe_guest_error(.error))]
    Guest { plugin: String, error: GuestError },
}

impl PluginError {
    /// The CamelCase reason shown in status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Read { .. } => "PluginUnreadable",
            PluginError::Download { .. } => "PluginDownloadFailed",
            PluginError::Unpinned { .. } => "PluginNotPinned",
            PluginError::TooLarge { .. } => "PluginTooLarge",
            PluginError::DigestMismatch { .. } => "PluginDigestMismatch",
            PluginError::NotAComponent { .. } | PluginError::NotAPlugin { .. } => "PluginInvalid",
            PluginError::Compile { .. } => "PluginCompileFailed",
            PluginError::UnsupportedWitVersion { .. } => "PluginWitVersionUnsupported",
            PluginError::Incompatible { .. } => "PluginIncompatible",
            PluginError::Trap { .. } | PluginError::Panic { .. } => "PluginTrapped",
            PluginError::Interrupted { .. } => "BackupInterrupted",
            PluginError::MemoryLimit { .. } => "PluginMemoryLimitExceeded",
            PluginError::Deadline { .. } => "DeadlineExceeded",
            PluginError::Unsupported { .. } => "OperationUnsupported",
            PluginError::Guest { error, .. } => match error {
                GuestError::InvalidSettings(_) => "InvalidPluginSettings",
                GuestError::Connection(_) => "DatabaseUnreachable",
                GuestError::Authentication(_) => "DatabaseAuthenticationFailed",
                GuestError::Database(_) => "DatabaseError",
                GuestError::Artifact(_) => "StorageFailed",
                GuestError::Unsupported(_) => "DatabaseUnsupported",
                GuestError::Other(_) => "PluginFailed",
            },
        }
    }
}

/// The WIT name of an operation.
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Backup => "backup",
        Operation::Restore => "restore",
    }
}

/// A one-line description of the error a plugin returned.
pub fn describe_guest_error(error: &GuestError) -> String {
    match error {
        GuestError::InvalidSettings(m) => format!("invalid settings: {m}"),
        GuestError::Connection(m) => format!("cannot connect to the database: {m}"),
        GuestError::Authentication(m) => format!("authentication failed: {m}"),
        GuestError::Database(m) => format!("database error: {m}"),
        GuestError::Artifact(m) => format!("artifact error: {m}"),
        GuestError::Unsupported(m) => format!("unsupported: {m}"),
        GuestError::Other(m) => m.clone(),
    }
}

/// Compiles, caches and links plugins. Create one per process.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// `cache_dir` holds precompiled plugins. It must be writable only by the runner:
    /// precompiled code is loaded without validation.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, wasmtime::Error> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        DatabasePlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = (engine.clone(), Arc::clone(&stop_ticker));
        std::thread::Builder::new()
            .name("stowage-epoch".into())
            .spawn(move || {
                while !ticker.1.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.0.increment_epoch();
                }
            })
            .map_err(wasmtime::Error::from)?;
        Ok(PluginEngine { engine, linker, cache_dir, stop_ticker })
    }

    /// Read, check and prepare a plugin component; with `expected_sha256`, the file must
    /// have that digest.
    pub fn load(&self, path: &Path, expected_sha256: Option<&str>) -> Result<Plugin, PluginError> {
        let label = path.display().to_string();
        let read_error = |source| PluginError::Read { path: label.clone(), source };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_PLUGIN_BYTES {
            return Err(PluginError::TooLarge { path: label, size, limit: MAX_PLUGIN_BYTES });
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        self.load_bytes(&label, &bytes, expected_sha256)
    }

    /// Download, check and prepare the plugin at an `https://` URL; `expected_sha256` is
    /// required, and checked before anything is compiled.
    pub async fn load_url(&self, url: &str, expected_sha256: Option<&str>) -> Result<Plugin, PluginError> {
        let expected = expected_sha256.ok_or_else(|| PluginError::Unpinned { url: url.to_owned() })?;
        let bytes = fetch::fetch(url).await?;
        self.load_bytes(url, &bytes, Some(expected))
    }

    /// Pull, check and prepare the plugin of an OCI reference; the reference's manifest
    /// digest or `expected_sha256` (of the component) must pin it. `registry_auth` is a
    /// Docker config JSON (`.dockerconfigjson`) with the registry's credentials.
    pub async fn load_oci(
        &self,
        reference: &str,
        expected_sha256: Option<&str>,
        registry_auth: Option<&str>,
    ) -> Result<Plugin, PluginError> {
        let label = format!("oci:{reference}");
        let fail = |message: String| PluginError::Download { url: label.clone(), message };
        let parsed = oci::Reference::parse(reference).map_err(fail)?;
        let credentials = match registry_auth {
            Some(json) => oci::Credentials::find(json, &parsed.registry).map_err(fail)?,
            None => None,
        };
        let pull = oci::pull(&parsed, expected_sha256.is_some(), credentials);
        let bytes = tokio::time::timeout(fetch::DOWNLOAD_TIMEOUT, pull).await.map_err(|_| {
            fail(format!("not pulled within {}", humantime::format_duration(fetch::DOWNLOAD_TIMEOUT)))
        })??;
        self.load_bytes(&label, &bytes, expected_sha256)
    }

    /// Check and prepare a plugin component given as bytes; `label` names it in errors
    /// and in manifests. Size and digest are checked before anything is compiled.
    pub fn load_bytes(&self, label: &str, bytes: &[u8], expected_sha256: Option<&str>) -> Result<Plugin, PluginError> {
        let path = label.to_owned();
        if bytes.len() as u64 > MAX_PLUGIN_BYTES {
            return Err(PluginError::TooLarge { path, size: bytes.len() as u64, limit: MAX_PLUGIN_BYTES });
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(PluginError::DigestMismatch { path, expected: expected.to_owned(), actual: sha256 });
        }
        // A component's preamble: "\0asm", version 0x0d, layer 1.
        if bytes.len() < 8 || bytes[..4] != *b"\0asm" || bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(PluginError::NotAComponent { path });
        }
        let component = self
            .compile(bytes, &sha256)
            .map_err(|e| PluginError::Compile { path: path.clone(), message: format!("{e:#}") })?;
        let wit_version =
            self.exported_wit_version(&component).ok_or_else(|| PluginError::NotAPlugin { path: path.clone() })?;
        if !supported_version(&wit_version) {
            return Err(PluginError::UnsupportedWitVersion { path, found: wit_version });
        }
        let incompatible =
            |e: wasmtime::Error| PluginError::Incompatible { path: path.clone(), message: format!("{e:#}") };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(incompatible)?;
        let pre = DatabasePluginPre::new(instance_pre).map_err(incompatible)?;
        Ok(Plugin { pre, source: path, sha256, wit_version, size: bytes.len() as u64 })
    }

    fn exported_wit_version(&self, component: &Component) -> Option<String> {
        let prefix = format!("{WIT_PACKAGE}/plugin@");
        component.component_type().exports(&self.engine).find_map(|(name, item)| {
            let version = name.strip_prefix(&prefix)?;
            matches!(item.ty, ComponentItem::ComponentInstance(_)).then(|| version.to_owned())
        })
    }

    /// Compile, or load the precompiled artifact cached for this digest and engine.
    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, wasmtime::Error> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let mut hasher = DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let cached = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if cached.exists() {
            match self.deserialize_cached(&cached) {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %cached.display(), %error, "ignoring unusable precompiled plugin")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let temp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
            std::fs::write(&temp, component.serialize().map_err(std::io::Error::other)?)?;
            std::fs::rename(&temp, &cached)
        };
        if let Err(error) = write() {
            tracing::warn!(path = %cached.display(), %error, "cannot cache the precompiled plugin");
        }
        Ok(component)
    }

    #[allow(unsafe_code)]
    fn deserialize_cached(&self, path: &Path) -> Result<Component, wasmtime::Error> {
        // SAFETY: the file was produced by `Component::serialize` of this engine
        // configuration (the name carries the compatibility hash) in the runner's own
        // cache directory, which the documentation requires to be writable only by it.
        unsafe { Component::deserialize_file(&self.engine, path) }
    }
}

/// The component file for `plugin`: a path (anything with a `/` or ending in `.wasm`), or
/// the name of a builtin plugin, found as `<name>.wasm` in the `:`-separated `search_path`.
pub fn locate(plugin: &str, search_path: &str) -> PathBuf {
    if plugin.contains('/') || plugin.ends_with(".wasm") {
        return PathBuf::from(plugin);
    }
    search_path
        .split(':')
        .map(|dir| Path::new(dir).join(format!("{plugin}.wasm")))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(plugin))
}

/// `0.1.x` plugins work with a `0.1.y` host: additions come with `@since` gates.
fn supported_version(version: &str) -> bool {
    let ours: Vec<&str> = WIT_VERSION.split('.').collect();
    let theirs: Vec<&str> = version.split('.').collect();
    theirs.len() == 3 && theirs[..2] == ours[..2]
}

/// A loaded plugin, ready to run any number of times.
pub struct Plugin {
    pre: DatabasePluginPre<PluginState>,
    /// Where the component came from (a path, `builtin:NAME`, `configMap:NAME/KEY`).
    pub source: String,
    /// sha256 of the component, lowercase hex.
    pub sha256: String,
    /// The `stowage:plugin` version the plugin exports.
    pub wit_version: String,
    /// Size of the component in bytes.
    pub size: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("source", &self.source).field("sha256", &self.sha256).finish_non_exhaustive()
    }
}

impl Plugin {
    fn store(&self, job: Job, allowed: Vec<SocketAddr>, limits: &Limits, log: &GuestLog) -> Store<PluginState> {
        let wasi = sandbox::wasi_context(log, allowed);
        let state = PluginState::new(wasi, limits.store_limits(), log.clone(), job);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        // Yield to the runtime at every epoch tick so that the deadline can cancel a
        // plugin that computes forever as well as one blocked on the network.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Run `call` against a fresh instance under the limits, and map every failure to a
    /// [`PluginError`]. The run stops at the deadline, or when `limits.interrupt` fires.
    /// Returns the store's state for cleanup, also on failure.
    async fn run<R, F>(
        &self,
        job: Job,
        allowed: Vec<SocketAddr>,
        limits: &Limits,
        name: &str,
        call: F,
    ) -> (Result<R, PluginError>, PluginState)
    where
        F: AsyncFnOnce(&DatabasePlugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    {
        let log = GuestLog::new(name);
        let plugin = log.plugin().to_owned();
        let mut store = self.store(job, allowed, limits, &log);
        let work = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            call(&instance, &mut store).await
        };
        let interrupted = limits.interrupt.cancelled();
        let result = tokio::select! {
            outcome = tokio::time::timeout(limits.deadline, work) => match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(trap)) => Err(classify_trap(&plugin, limits, &log, trap)),
                Err(_) => Err(PluginError::Deadline { plugin: plugin.clone(), deadline: limits.deadline }),
            },
            () = interrupted => Err(PluginError::Interrupted { plugin: plugin.clone() }),
        };
        log.finish();
        (result, store.into_data())
    }

    /// What the plugin says about itself, under the run's memory limit and at most
    /// [`METADATA_DEADLINE`], with every text bounded.
    pub async fn metadata(&self, limits: &Limits) -> Result<PluginMetadata, PluginError> {
        let limits = Limits { deadline: METADATA_DEADLINE.min(limits.deadline), ..limits.clone() };
        let (result, _) = self
            .run(Job::Describe, Vec::new(), &limits, &self.source, async |instance, store| {
                instance.stowage_plugin_plugin().call_metadata(store).await
            })
            .await;
        result.map(bound_metadata)
    }

    /// Run a backup. The job comes back with the artifacts created, whatever happened.
    pub async fn backup(
        &self,
        metadata: &PluginMetadata,
        settings: &DatabaseSettings,
        allowed: Vec<SocketAddr>,
        job: BackupJob,
        limits: &Limits,
    ) -> (Result<Summary, PluginError>, BackupJob) {
        let (result, state) = self
            .run(Job::Backup(job), allowed, limits, &metadata.name, async |instance, store| {
                instance.stowage_plugin_plugin().call_backup(store, settings).await
            })
            .await;
        let Job::Backup(job) = state.job else { unreachable!("the job kind does not change") };
        (flatten(result, &state.log), job)
    }

    /// Run a restore.
    pub async fn restore(
        &self,
        metadata: &PluginMetadata,
        settings: &DatabaseSettings,
        options: RestoreOptions,
        allowed: Vec<SocketAddr>,
        job: RestoreJob,
        limits: &Limits,
    ) -> Result<Summary, PluginError> {
        let (result, state) = self
            .run(Job::Restore(job), allowed, limits, &metadata.name, async |instance, store| {
                instance.stowage_plugin_plugin().call_restore(store, settings, options).await
            })
            .await;
        flatten(result, &state.log)
    }
}

/// The plugin's answer with its error message or summary bounded and escaped.
fn flatten(result: Result<Result<Summary, GuestError>, PluginError>, log: &GuestLog) -> Result<Summary, PluginError> {
    let plugin = log.plugin().to_owned();
    match result? {
        Ok(summary) => Ok(bound_summary(summary, &plugin)),
        Err(error) => Err(PluginError::Guest { plugin, error: bound_error(error) }),
    }
}

fn bound_error(error: GuestError) -> GuestError {
    let bound = |message: String| sanitize(&message, MAX_ERROR);
    match error {
        GuestError::InvalidSettings(m) => GuestError::InvalidSettings(bound(m)),
        GuestError::Connection(m) => GuestError::Connection(bound(m)),
        GuestError::Authentication(m) => GuestError::Authentication(bound(m)),
        GuestError::Database(m) => GuestError::Database(bound(m)),
        GuestError::Artifact(m) => GuestError::Artifact(bound(m)),
        GuestError::Unsupported(m) => GuestError::Unsupported(bound(m)),
        GuestError::Other(m) => GuestError::Other(bound(m)),
    }
}

/// A summary that fits a manifest: description and attributes cut to their bounds, with
/// a warning saying what was cut.
fn bound_summary(summary: Summary, plugin: &str) -> Summary {
    if summary.description.len() > MAX_DESCRIPTION {
        tracing::warn!(%plugin, bytes = summary.description.len(), "the plugin's summary description was cut to {MAX_DESCRIPTION} bytes");
    }
    if summary.attributes.len() > MAX_ATTRIBUTES {
        tracing::warn!(%plugin, count = summary.attributes.len(), "only the first {MAX_ATTRIBUTES} summary attributes are kept");
    }
    Summary {
        description: sanitize(&summary.description, MAX_DESCRIPTION),
        attributes: summary
            .attributes
            .into_iter()
            .take(MAX_ATTRIBUTES)
            .map(|(name, value)| (sanitize(&name, MAX_ATTRIBUTE_NAME), sanitize(&value, MAX_ATTRIBUTE_VALUE)))
            .collect(),
    }
}

/// Metadata with its texts bounded: names end up in logs, errors and manifests.
fn bound_metadata(metadata: PluginMetadata) -> PluginMetadata {
    PluginMetadata {
        name: sanitize(&metadata.name, 64),
        version: sanitize(&metadata.version, 64),
        description: sanitize(&metadata.description, MAX_DESCRIPTION),
        settings: metadata
            .settings
            .into_iter()
            .take(MAX_ATTRIBUTES)
            .map(|spec| SettingSpec {
                name: sanitize(&spec.name, MAX_ATTRIBUTE_NAME),
                description: sanitize(&spec.description, MAX_ATTRIBUTE_VALUE),
                default_value: spec.default_value.map(|value| sanitize(&value, MAX_ATTRIBUTE_VALUE)),
                ..spec
            })
            .collect(),
        ..metadata
    }
}

/// Turn a wasmtime error from a plugin call into the precise reason, leading with the
/// cause; the wasm backtrace goes to the debug log.
fn classify_trap(plugin: &str, limits: &Limits, log: &GuestLog, error: wasmtime::Error) -> PluginError {
    tracing::debug!(%plugin, "plugin trap: {error:?}");
    let full = format!("{error:#}");
    if full.contains("forcing trap when growing memory") {
        return PluginError::MemoryLimit { plugin: plugin.to_owned(), limit_mib: limits.memory_bytes >> 20 };
    }
    if let Some(message) = log.panic_message() {
        return PluginError::Panic { plugin: plugin.to_owned(), message };
    }
    let cause = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::StackOverflow) => "stack overflow (the plugin recursed too deeply)".to_owned(),
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    PluginError::Trap { plugin: plugin.to_owned(), message: sanitize(&cause, MAX_ERROR) }
}

#[cfg(test)]
mod tests {
    use super::supported_version;

    #[test]
    fn compatible_wit_versions() {
        assert!(supported_version("0.1.0"));
        assert!(supported_version("0.1.7"));
        assert!(!supported_version("0.2.0"));
        assert!(!supported_version("1.1.0"));
        assert!(!supported_version("0.1"));
    }
}
