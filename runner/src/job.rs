//! `stowage job`: the in-cluster entry point of the operator's Jobs. Runs exactly the
//! spec the Job was created from (`STOWAGE_RUN_SPEC`, never the live resource, which may
//! have changed since), for the chosen repository, and reports the attempt in the
//! resource's status: `latestAttempt` (progress, then the outcome with a reason per
//! failure site) and, once a backup is committed, `lastBackup`. Conditions are the
//! operator's, derived from these reports and the Job's own state.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use stowage_api::{Attempt, AttemptPhase, DatabaseBackup, DatabaseBackupSpec, LastBackup, PluginRef, Repo};
use tokio_util::sync::CancellationToken;

use crate::archive::{Codec, Recipients, TransferLimits};
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
    /// The spec the Job was created from, as JSON.
    pub run_spec: Option<String>,
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
            .field("job_name", &self.job_name)
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
            JobError::Invalid { reason, .. } => reason,
            JobError::Backup(error) => error.reason(),
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
];

/// Everything a backup needs, checked.
#[derive(Debug)]
struct Plan<'a> {
    repo: &'a Repo,
    location: RepoLocation,
    s3: S3Options,
    plugin: PluginRef<'a>,
    /// The pinned sha256 of the plugin, checked before it is compiled.
    plugin_sha256: Option<&'a str>,
    request: BackupRequest,
}

fn invalid_spec(error: impl std::fmt::Display) -> JobError {
    JobError::invalid("InvalidSpec", error.to_string())
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
    let bucket = repo.bucket_for(namespace).ok_or_else(|| {
        JobError::invalid("InvalidRepo", format!("repository {repo_name:?} sets neither bucket nor bucketNamePrefix"))
    })?;
    let prefix = repo.prefix.clone().unwrap_or_default();
    let location: RepoLocation = format!("s3://{bucket}/{prefix}")
        .parse()
        .map_err(|e: crate::repository::RepositoryError| JobError::invalid("InvalidRepo", e.to_string()))?;
    let credentials = match (&inputs.access_key_id, &inputs.secret_access_key, &repo.secret_name) {
        (Some(access_key_id), Some(secret_access_key), _) => Some(StaticCredentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        }),
        (_, _, Some(secret)) => {
            return Err(JobError::invalid(
                "MissingStorageCredentials",
                format!(
                    "storage credentials of repository {repo_name:?} are missing: Secret {secret:?} needs \
                     accessKeyId and secretAccessKey (or access_key_id and secret_access_key, or \
                     HmacAccessKeyId and HmacSecretAccessKey)"
                ),
            ));
        }
        // No Secret: the AWS SDK's default chain (web identity, Pod Identity, profile, ...).
        (_, _, None) => None,
    };
    let endpoint = repo.service_endpoint.clone().or_else(|| inputs.endpoint.clone()).map(|endpoint| {
        // The original sample gives IBM COS endpoints without a scheme.
        if endpoint.contains("://") { endpoint } else { format!("https://{endpoint}") }
    });
    let s3 = S3Options {
        credentials,
        path_style: repo.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region: repo.region().map(str::to_owned).or_else(|| inputs.region.clone()),
    };

    let plugin = spec.plugin.source().map_err(invalid_spec)?;
    let database = &spec.database;
    let (host, port) =
        database.host_port().map_err(|error| JobError::invalid("InvalidDatabaseEndpoint", error.to_string()))?;
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
    let mut limits =
        Limits { interrupt: interrupt.clone(), deadline: spec.deadline().map_err(invalid_spec)?, ..Limits::default() };
    if let Some(mib) = spec.limits.as_ref().and_then(|l| l.plugin_memory_mib) {
        limits.memory_bytes = (mib as usize) << 20;
    }
    Ok(Plan {
        location,
        s3,
        plugin,
        plugin_sha256: spec.plugin.sha256.as_deref(),
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

/// Writes the runner's part of the status, `latestAttempt` and `lastBackup`, with merge
/// patches: the runner never reads the resource, and never touches the operator's fields.
#[derive(Clone)]
struct StatusWriter {
    api: Api<DatabaseBackup>,
    name: String,
    attempt: Attempt,
}

impl StatusWriter {
    fn new(api: Api<DatabaseBackup>, name: &str, inputs: &JobInputs) -> Self {
        let now = now_rfc3339();
        let attempt = Attempt {
            job: inputs.job_name.clone().unwrap_or_default(),
            job_uid: inputs.job_uid.clone().unwrap_or_default(),
            pod: inputs.pod_name.clone().unwrap_or_default(),
            generation: inputs.generation,
            phase: AttemptPhase::Running,
            reason: "BackupStarting".into(),
            message: "Loading the plugin".into(),
            started_at: now.clone(),
            finished_at: None,
            permanent: false,
            bytes: 0,
            updated: now,
        };
        StatusWriter { api, name: name.to_owned(), attempt }
    }

    async fn write(&self, last_backup: Option<&LastBackup>) -> Result<(), kube::Error> {
        let mut status = json!({"latestAttempt": self.attempt});
        if let Some(backup) = last_backup {
            status["lastBackup"] = json!(backup);
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        self.api.patch_status(&self.name, &params, &Patch::Merge(json!({"status": status}))).await?;
        Ok(())
    }

    /// [`write`](Self::write), retried with backoff.
    async fn write_retrying(&self, last_backup: Option<&LastBackup>) -> Result<(), kube::Error> {
        let mut pause = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match self.write(last_backup).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= STATUS_ATTEMPTS => return Err(error),
                Err(error) => tracing::warn!(%error, attempt, "cannot write the status; trying again"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    async fn running(&mut self, message: String, bytes: u64) -> Result<(), kube::Error> {
        self.attempt.reason = "BackupRunning".into();
        self.attempt.message = message;
        self.attempt.bytes = bytes;
        self.attempt.updated = now_rfc3339();
        self.write(None).await
    }

    fn finish(&mut self, phase: AttemptPhase, reason: &str, message: String) {
        let now = now_rfc3339();
        self.attempt.phase = phase;
        self.attempt.reason = reason.to_owned();
        self.attempt.message = message;
        self.attempt.finished_at = Some(now.clone());
        self.attempt.updated = now;
    }

    async fn succeeded(&mut self, message: String, backup: &LastBackup) -> Result<(), kube::Error> {
        self.finish(AttemptPhase::Succeeded, "BackupSucceeded", message);
        self.attempt.bytes = backup.bytes;
        self.write_retrying(Some(backup)).await
    }

    async fn failed(&mut self, error: &JobError) {
        self.finish(AttemptPhase::Failed, error.reason(), error.to_string());
        self.attempt.permanent = error.permanent();
        if let Err(status_error) = self.write_retrying(None).await {
            tracing::error!(%status_error, "cannot write the failure to the status");
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Run the Job: back up and report. Errors are also written to the status where the
/// resource can be reached.
pub async fn run_job(inputs: JobInputs, interrupt: CancellationToken) -> Result<BackupReport, JobError> {
    let name = inputs.resource_name.clone().ok_or(JobError::MissingEnvironment("BACKUP_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let mut status = StatusWriter::new(Api::namespaced(client.clone(), &namespace), &name, &inputs);
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
    status: &mut StatusWriter,
) -> Result<BackupReport, JobError> {
    let plan = plan(spec, namespace, name, inputs, interrupt)?;
    let engine = PluginEngine::new(inputs.cache_dir.clone())
        .map_err(|e| JobError::invalid("RunnerFailed", format!("cannot start the WebAssembly engine: {e:#}")))?;
    let pin = plan.plugin_sha256;
    let plugin = match plan.plugin {
        PluginRef::Builtin(name) => engine.load(&locate(name, &inputs.plugin_path), pin),
        PluginRef::ConfigMap { name, key } => {
            let bytes = config_map_plugin(client, namespace, name, key).await?;
            engine.load_bytes(&format!("configMap:{name}/{key}"), &bytes, pin)
        }
        PluginRef::Url(url) => engine.load_url(url, pin).await,
        PluginRef::Oci(reference) => {
            if let (Some(secret), None) = (&spec.plugin.pull_secret, &inputs.registry_auth) {
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

    status.running(format!("Backing up to repository {}", plan.repo.name), 0).await?;
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
    let last_backup = LastBackup {
        id: manifest.backup_id.clone(),
        time: manifest.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        repo: plan.repo.name.clone(),
        bytes: manifest.raw_size(),
        stored_bytes: manifest.stored_size(),
        duration_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    // The backup is committed: from here nothing may fail the Job, or its retry would
    // make a second backup.
    let mut message = "Database has been archived".to_owned();
    for warning in &report.warnings {
        message.push_str(&format!("; after the commit, {warning}"));
    }
    if let Err(error) = status.succeeded(message, &last_backup).await {
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
        let bytes = written.load(Ordering::Relaxed);
        let message = format!("Backing up to repository {repo}: {bytes} bytes so far");
        if let Err(error) = status.running(message, bytes).await {
            tracing::warn!(%error, "cannot write progress to the status");
        }
    }
}
