//! `stowage job`: the in-cluster entry point of the operator's Jobs. Reads the
//! DatabaseBackup, validates every input, runs the backup for the chosen repository and
//! keeps the resource's status true: a `Succeeded` condition replaced by type, with a
//! reason per failure site, `observedGeneration`, progress and the last backup.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use stowage_api::{CONDITION_SUCCEEDED, ConditionUpdate, DatabaseBackup, LastBackup, Progress, Repo, set_condition};
use tokio_util::sync::CancellationToken;

use crate::archive::{Codec, Compression, Recipients, TransferLimits};
use crate::backup::{BackupError, BackupReport, BackupRequest, run_backup};
use crate::plugin::{Limits, PluginEngine, locate};
use crate::repository::{RepoLocation, Repository};
use crate::retention::Retention;
use crate::settings::DatabaseTarget;
use crate::store::{S3Options, StaticCredentials};

/// The field manager of the runner's status writes.
const FIELD_MANAGER: &str = "stowage-runner";
/// How often progress is written to the status while a backup runs.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Leftovers of killed runs older than this are removed before a backup (and never
/// younger than the deadline plus grace, see [`crate::backup::LEFTOVER_GRACE`]).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);
/// Attempts of a status write, with doubling pauses from one second: the outcome of a
/// run must reach the resource through API server restarts and conflicts.
const STATUS_ATTEMPTS: u32 = 5;

/// The inputs of a Job, from its environment (see `stowage job --help`).
#[derive(Clone, Default)]
pub struct JobInputs {
    pub resource_name: Option<String>,
    pub namespace: Option<String>,
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
    pub plugin_path: String,
    pub cache_dir: Option<PathBuf>,
    /// How long to wait for another run of the same resource.
    pub lock_wait: Duration,
}

impl std::fmt::Debug for JobInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobInputs")
            .field("resource_name", &self.resource_name)
            .field("namespace", &self.namespace)
            .field("repo", &self.repo)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The plugin option that carries `spec.database.tlsCaSecret`.
const TLS_CA_OPTION: &str = "tls-ca";

/// Why a Job did not back up.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("environment variable {0} is not set")]
    MissingEnvironment(&'static str),
    #[error("cannot use the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("DatabaseBackup {namespace}/{name} does not exist")]
    ResourceNotFound { namespace: String, name: String },
    /// An input that makes the backup impossible; written to the status.
    #[error("{message}")]
    Invalid { reason: &'static str, message: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
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
            JobError::ResourceNotFound { .. } => "ResourceNotFound",
            JobError::Invalid { reason, .. } => reason,
            JobError::Backup(error) => error.reason(),
        }
    }
}

/// Where the plugin component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PluginChoice {
    /// A plugin of the runner image, found in the plugin path.
    Builtin(String),
    /// A `binaryData` (or `data`) key of a ConfigMap in the resource's namespace.
    ConfigMap { name: String, key: String },
    /// An `https://` URL, pinned by `spec.plugin.sha256`.
    Url(String),
    /// An OCI artifact, pinned by its manifest digest or `spec.plugin.sha256`.
    Oci(String),
}

/// Everything a backup needs, checked.
#[derive(Debug)]
struct Plan {
    repo: Repo,
    location: RepoLocation,
    s3: S3Options,
    plugin: PluginChoice,
    /// The pinned sha256 of the plugin, checked before it is compiled.
    plugin_sha256: Option<String>,
    request: BackupRequest,
}

fn parse_duration(field: &str, value: &str) -> Result<Duration, JobError> {
    humantime::parse_duration(value)
        .map_err(|e| JobError::invalid("InvalidSpec", format!("{field}: {value:?} is not a duration: {e}")))
}

/// Check the resource and the environment; every problem has its own reason.
fn plan(
    resource: &DatabaseBackup,
    namespace: &str,
    name: &str,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
) -> Result<Plan, JobError> {
    let spec = &resource.spec;
    let repo_name =
        inputs.repo.clone().or_else(|| spec.manual_trigger.as_ref().map(|t| t.repo.clone())).ok_or_else(|| {
            JobError::invalid("RepoNotFound", "no repository chosen: set BACKUP_REPO_NAME or manualTrigger.repo")
        })?;
    let repo = spec.repos.iter().find(|r| r.name == repo_name).cloned().ok_or_else(|| {
        let known: Vec<&str> = spec.repos.iter().map(|r| r.name.as_str()).collect();
        JobError::invalid(
            "RepoNotFound",
            format!("repository {repo_name:?} is not in spec.repos ({})", known.join(", ")),
        )
    })?;
    let bucket = repo.bucket_for(namespace).ok_or_else(|| {
        JobError::invalid("InvalidRepo", format!("repository {repo_name:?} sets neither bucket nor bucketNamePrefix"))
    })?;
    let prefix = repo.prefix.clone().unwrap_or_default();
    let location: RepoLocation = format!("s3://{bucket}/{prefix}")
        .parse()
        .map_err(|e: crate::repository::RepositoryError| JobError::invalid("InvalidRepo", e.to_string()))?;
    let (Some(access_key_id), Some(secret_access_key)) = (&inputs.access_key_id, &inputs.secret_access_key) else {
        return Err(JobError::invalid(
            "MissingStorageCredentials",
            format!(
                "storage credentials of repository {repo_name:?} are missing: AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY must come from Secret {:?}",
                repo.secret_name
            ),
        ));
    };
    let endpoint = repo.service_endpoint.clone().or_else(|| inputs.endpoint.clone()).map(|endpoint| {
        // The original sample gives IBM COS endpoints without a scheme.
        if endpoint.contains("://") { endpoint } else { format!("https://{endpoint}") }
    });
    let s3 = S3Options {
        credentials: Some(StaticCredentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        }),
        path_style: repo.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region: repo.region.clone().or_else(|| inputs.region.clone()),
    };

    let plugin = match (&spec.plugin.builtin, &spec.plugin.config_map, &spec.plugin.url, &spec.plugin.oci) {
        (Some(builtin), None, None, None) => PluginChoice::Builtin(builtin.clone()),
        (None, Some(map), None, None) => PluginChoice::ConfigMap { name: map.name.clone(), key: map.key.clone() },
        (None, None, Some(url), None) => PluginChoice::Url(url.clone()),
        (None, None, None, Some(reference)) => PluginChoice::Oci(reference.clone()),
        (None, None, None, None) => return Err(JobError::invalid("InvalidSpec", "spec.plugin names no source")),
        (Some(_), _, _, _) | (_, Some(_), Some(_), _) | (_, Some(_), _, Some(_)) | (_, _, Some(_), Some(_)) => {
            return Err(JobError::invalid("InvalidSpec", "spec.plugin must name exactly one source"));
        }
    };

    let database = &spec.database;
    let (host, port) = database
        .endpoint
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']).to_owned(), port.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            JobError::invalid(
                "InvalidDatabaseEndpoint",
                format!("spec.database.endpoint {:?} is not host:port", database.endpoint),
            )
        })?;
    let password = match &database.password_secret {
        Some(secret) => Some(inputs.database_password.clone().ok_or_else(|| {
            JobError::invalid(
                "MissingDatabaseCredentials",
                format!("STOWAGE_DATABASE_PASSWORD must come from key {:?} of Secret {:?}", secret.key, secret.name),
            )
        })?),
        None => None,
    };
    let mut options: Vec<(String, String)> = database.options.clone().into_iter().collect();
    if let Some(secret) = &database.tls_ca_secret {
        // The convention for every plugin that speaks TLS: the CA arrives as option `tls-ca`.
        let ca = inputs.database_tls_ca.clone().ok_or_else(|| {
            JobError::invalid(
                "MissingDatabaseCredentials",
                format!("STOWAGE_DATABASE_TLS_CA must come from key {:?} of Secret {:?}", secret.key, secret.name),
            )
        })?;
        options.retain(|(name, _)| name != TLS_CA_OPTION);
        options.push((TLS_CA_OPTION.into(), ca));
    }
    let target =
        DatabaseTarget { host, port, database: database.name.clone(), user: database.user.clone(), password, options };

    let compression: Compression = spec
        .compression
        .as_deref()
        .unwrap_or("zstd")
        .parse()
        .map_err(|e: String| JobError::invalid("InvalidSpec", format!("spec.compression: {e}")))?;
    let recipients = Recipients::parse(spec.encryption.as_ref().map(|e| e.age_recipients.as_slice()).unwrap_or(&[]))
        .map_err(|e| JobError::invalid("InvalidSpec", format!("spec.encryption: {e}")))?;
    let retention = match &spec.retention {
        Some(retention) => Retention {
            keep_last: retention.keep_last.map(|n| n as usize),
            max_age: retention.max_age.as_deref().map(|v| parse_duration("spec.retention.maxAge", v)).transpose()?,
        },
        None => Retention::default(),
    };
    let mut limits = Limits { interrupt: interrupt.clone(), ..Limits::default() };
    if let Some(spec_limits) = &spec.limits {
        if let Some(mib) = spec_limits.plugin_memory_mib {
            limits.memory_bytes = (mib as usize) << 20;
        }
        if let Some(deadline) = &spec_limits.deadline {
            limits.deadline = parse_duration("spec.limits.deadline", deadline)?;
        }
    }
    Ok(Plan {
        location,
        s3,
        plugin,
        plugin_sha256: spec.plugin.sha256.clone(),
        request: BackupRequest {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            database: target,
            codec: Codec { compression, recipients },
            transfer: TransferLimits::default(),
            limits,
            retention,
            leftover_age: LEFTOVER_AGE,
            lock_wait: inputs.lock_wait,
            written: Arc::default(),
        },
        repo,
    })
}

/// Writes the runner's part of the status with server-side apply.
#[derive(Clone)]
struct StatusWriter {
    api: Api<DatabaseBackup>,
    name: String,
    generation: Option<i64>,
    conditions: Vec<Condition>,
    last_backup: Option<LastBackup>,
}

impl StatusWriter {
    fn new(api: Api<DatabaseBackup>, resource: &DatabaseBackup, name: &str) -> Self {
        let status = resource.status.clone().unwrap_or_default();
        StatusWriter {
            api,
            name: name.to_owned(),
            generation: resource.metadata.generation,
            conditions: status.conditions,
            last_backup: status.last_backup,
        }
    }

    async fn apply(
        &mut self,
        status: &str,
        reason: &str,
        message: &str,
        progress: Option<Progress>,
    ) -> Result<(), kube::Error> {
        let update = ConditionUpdate {
            type_: CONDITION_SUCCEEDED,
            status,
            reason,
            message,
            observed_generation: self.generation,
        };
        set_condition(&mut self.conditions, &update, Time(k8s_openapi::jiff::Timestamp::now()));
        let ours: Vec<&Condition> = self.conditions.iter().filter(|c| c.type_ == CONDITION_SUCCEEDED).collect();
        let patch = json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseBackup",
            "status": {
                "observedGeneration": self.generation,
                "conditions": ours,
                "lastBackup": self.last_backup,
                "progress": progress,
            }
        });
        self.api.patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        Ok(())
    }

    /// [`apply`](Self::apply), retried with backoff.
    async fn apply_retrying(&mut self, status: &str, reason: &str, message: &str) -> Result<(), kube::Error> {
        let mut pause = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match self.apply(status, reason, message, None).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= STATUS_ATTEMPTS => return Err(error),
                Err(error) => tracing::warn!(%error, attempt, "cannot write the status; trying again"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    async fn failed(&mut self, error: &JobError) {
        if let Err(status_error) = self.apply_retrying("False", error.reason(), &error.to_string()).await {
            tracing::error!(%status_error, "cannot write the failure to the status");
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Run the Job: back up and report. Errors are also written to the status where the
/// resource can be read.
pub async fn run_job(inputs: JobInputs, interrupt: CancellationToken) -> Result<BackupReport, JobError> {
    let name = inputs.resource_name.clone().ok_or(JobError::MissingEnvironment("BACKUP_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let api: Api<DatabaseBackup> = Api::namespaced(client.clone(), &namespace);
    let resource = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| JobError::ResourceNotFound { namespace: namespace.clone(), name: name.clone() })?;
    let mut status = StatusWriter::new(api, &resource, &name);
    let result = backup(&client, &resource, &namespace, &name, &inputs, &interrupt, &mut status).await;
    if let Err(error) = &result {
        status.failed(error).await;
    }
    result
}

async fn backup(
    client: &Client,
    resource: &DatabaseBackup,
    namespace: &str,
    name: &str,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
    status: &mut StatusWriter,
) -> Result<BackupReport, JobError> {
    let plan = plan(resource, namespace, name, inputs, interrupt)?;
    let engine = PluginEngine::new(inputs.cache_dir.clone())
        .map_err(|e| JobError::invalid("RunnerFailed", format!("cannot start the WebAssembly engine: {e:#}")))?;
    let pin = plan.plugin_sha256.as_deref();
    let plugin = match &plan.plugin {
        PluginChoice::Builtin(name) => engine.load(&locate(name, &inputs.plugin_path), pin),
        PluginChoice::ConfigMap { name, key } => {
            let bytes = config_map_plugin(client, namespace, name, key).await?;
            engine.load_bytes(&format!("configMap:{name}/{key}"), &bytes, pin)
        }
        PluginChoice::Url(url) => engine.load_url(url, pin).await,
        PluginChoice::Oci(reference) => {
            if let (Some(secret), None) = (&resource.spec.plugin.pull_secret, &inputs.registry_auth) {
                return Err(JobError::invalid(
                    "MissingRegistryCredentials",
                    format!("STOWAGE_REGISTRY_AUTH must come from key .dockerconfigjson of Secret {secret:?}"),
                ));
            }
            engine.load_oci(reference, pin, inputs.registry_auth.as_deref()).await
        }
    }
    .map_err(BackupError::from)?;
    let repository = Repository::open(&plan.location, &plan.s3).await;

    status.apply("Unknown", "BackupRunning", &format!("Backing up to repository {}", plan.repo.name), None).await?;
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let reporter = tokio::spawn(report_progress(
        status.clone(),
        Arc::clone(&plan.request.written),
        plan.repo.name.clone(),
        stopped,
    ));
    let result = run_backup(&plugin, &repository, &plan.request).await;
    // Let a progress write in flight finish first, so that it cannot land after the outcome.
    let _ = stop.send(());
    let _ = reporter.await;
    let report = result?;
    let manifest = &report.manifest;
    status.last_backup = Some(LastBackup {
        id: manifest.backup_id.clone(),
        time: manifest.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        repo: plan.repo.name.clone(),
        bytes: manifest.raw_size(),
        stored_bytes: manifest.stored_size(),
        duration_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    // The backup is committed: from here nothing may fail the Job, or its retry would
    // make a second backup.
    let mut message = "Database has been archived".to_owned();
    for warning in &report.warnings {
        message.push_str(&format!("; after the commit, {warning}"));
    }
    if let Err(error) = status.apply_retrying("True", "BackupSucceeded", &message).await {
        tracing::error!(%error, backup_id = %manifest.backup_id, "the backup is committed, but its status could not be written");
    }
    Ok(report)
}

/// The plugin component stored in a ConfigMap key (`binaryData`, or `data` for text).
async fn config_map_plugin(client: &Client, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, JobError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = maps
        .get_opt(name)
        .await?
        .ok_or_else(|| JobError::invalid("PluginNotFound", format!("ConfigMap {name} of the plugin does not exist")))?;
    let binary = map.binary_data.and_then(|data| data.get(key).map(|bytes| bytes.0.clone()));
    let text = || map.data.as_ref().and_then(|data| data.get(key).map(|text| text.clone().into_bytes()));
    binary
        .or_else(text)
        .ok_or_else(|| JobError::invalid("PluginNotFound", format!("ConfigMap {name} has no key {key}")))
}

/// Write the bytes backed up so far every [`PROGRESS_INTERVAL`] until `stop` fires; a
/// write in progress is completed, never cut off.
async fn report_progress(
    mut status: StatusWriter,
    written: Arc<AtomicU64>,
    repo: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = &mut stop => return,
        }
        let progress = Progress { bytes: written.load(Ordering::Relaxed), updated: now_rfc3339() };
        let message = format!("Backing up to repository {repo}: {} bytes so far", progress.bytes);
        if let Err(error) = status.apply("Unknown", "BackupRunning", &message, Some(progress)).await {
            tracing::warn!(%error, "cannot write progress to the status");
        }
    }
}
