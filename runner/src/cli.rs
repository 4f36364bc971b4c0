//! The `stowage` command line. Every option can also be set from an environment variable.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::archive::{Codec, Compression, Identities, Recipients, TransferLimits};
use crate::backup::{BackupError, BackupRequest, run_backup};
use crate::drill::run_drill;
use crate::job::drill::run_drill_job;
use crate::job::import::run_import_job;
use crate::job::restore::run_restore_job;
use crate::job::{JobError, JobInputs, run_job};
use crate::plugin::{Limits, Plugin, PluginEngine, PluginError, oci, operation_name};
use crate::repository::{DirState, RepoLocation, Repository, RepositoryError};
use crate::restore::{RestoreError, RestoreRequest, run_restore, verify_backup};
use crate::retention::Retention;
use crate::settings::{DatabaseTarget, SettingsError};
use crate::store::S3Options;

/// Database backups whose database-specific part is a WebAssembly plugin.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a database into a repository; prints the new backup's id.
    Backup(BackupArgs),
    /// Restore a backup into a database.
    Restore(RestoreArgs),
    /// List the backups in a repository.
    List(ListArgs),
    /// Check that every artifact of a backup is intact and decodes, without a database.
    Verify(VerifyArgs),
    /// Restore drill: restore a backup into a scratch database (replacing what it holds)
    /// and check that the plugin reports the counts it reported for the backup.
    Drill(DrillArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Back up for a DatabaseBackup resource and report in its status: the entry point
    /// of the operator's Jobs. Inputs come from the Job's environment.
    Job(JobArgs),
    /// Restore for a DatabaseRestore resource and report in its status: the entry point
    /// of the operator's restore Jobs. Inputs come from the Job's environment.
    RestoreJob(JobArgs),
    /// Import a repository's backups as DatabaseSnapshot objects for a
    /// DatabaseSnapshotImport resource and report in its status: the entry point of the
    /// operator's import Jobs. Inputs come from the Job's environment.
    ImportJob(JobArgs),
    /// Run a DatabaseBackup's restore drill and report it in its status: the entry point of
    /// the operator's drill CronJobs. Inputs come from the Job's environment.
    DrillJob(JobArgs),
}

/// The inputs of `stowage job`. All are checked by the job itself, so that a missing
/// one is reported in the resource's status.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Name of the DatabaseBackup resource.
    #[arg(long, env = "BACKUP_RESOURCE_NAME")]
    pub resource_name: Option<String>,
    /// Namespace of the resource.
    #[arg(long, env = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The spec the Job was created from (JSON); the run uses it, never the live resource.
    #[arg(long, env = "STOWAGE_RUN_SPEC", hide_env_values = true)]
    pub run_spec: Option<String>,
    /// The generation of that spec.
    #[arg(long, env = "STOWAGE_RUN_GENERATION")]
    pub run_generation: Option<i64>,
    /// The resource's UID (the snapshot objects a backup or import creates are owned by it).
    #[arg(long, env = "STOWAGE_RESOURCE_UID")]
    pub resource_uid: Option<String>,
    /// Name of the DatabaseRestore or DatabaseSnapshotImport resource (restore-job, import-job).
    #[arg(long, env = "STOWAGE_RESOURCE_NAME")]
    pub one_shot_name: Option<String>,
    /// The restore plan the Job was created with (JSON; restore-job).
    #[arg(long, env = "STOWAGE_RESTORE_PLAN", hide_env_values = true)]
    pub restore_plan: Option<String>,
    /// age identities (`AGE-SECRET-KEY-1...`, one per line) for encrypted backups (restore-job).
    #[arg(long, env = "STOWAGE_AGE_IDENTITY", hide_env_values = true)]
    pub age_identity: Option<String>,
    /// The Job this runs in (reported with the attempt).
    #[arg(long, env = "STOWAGE_JOB_NAME")]
    pub job_name: Option<String>,
    /// That Job's UID.
    #[arg(long, env = "STOWAGE_JOB_UID")]
    pub job_uid: Option<String>,
    /// The Pod this runs in.
    #[arg(long, env = "STOWAGE_POD_NAME")]
    pub pod_name: Option<String>,
    /// The repository (from spec.repos) to write to; default: the manual trigger's.
    #[arg(long, env = "BACKUP_REPO_NAME")]
    pub repo_name: Option<String>,
    /// Storage access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub access_key_id: Option<String>,
    /// Storage access key id under the original sample's name.
    #[arg(long, env = "CLOUD_OBJECT_STORAGE_HMAC_ACCESS_KEY_ID", hide_env_values = true, hide = true)]
    pub cos_access_key_id: Option<String>,
    /// Storage access key id under the IBM COS HMAC Secret key name `HmacAccessKeyId`.
    #[arg(long, env = "STOWAGE_HMAC_ACCESS_KEY_ID", hide_env_values = true, hide = true)]
    pub hmac_access_key_id: Option<String>,
    /// Storage secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// Storage secret access key under the original sample's name.
    #[arg(long, env = "CLOUD_OBJECT_STORAGE_HMAC_SECRET_ACCESS_KEY", hide_env_values = true, hide = true)]
    pub cos_secret_access_key: Option<String>,
    /// Storage secret access key under the IBM COS HMAC Secret key name `HmacSecretAccessKey`.
    #[arg(long, env = "STOWAGE_HMAC_SECRET_ACCESS_KEY", hide_env_values = true, hide = true)]
    pub hmac_secret_access_key: Option<String>,
    /// Storage region, when the repository does not set one.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Storage region under the original sample's name.
    #[arg(long, env = "CLOUD_OBJECT_STORAGE_REGION", hide = true)]
    pub cos_region: Option<String>,
    /// Storage endpoint, when the repository does not set one.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Storage endpoint under the original sample's name.
    #[arg(long, env = "CLOUD_OBJECT_STORAGE_SERVICE_ENDPOINT", hide = true)]
    pub cos_endpoint: Option<String>,
    /// The database password, from the Secret the resource names.
    #[arg(long, env = "STOWAGE_DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,
    /// The CA (PEM) of the database's TLS certificate, from the Secret the resource names.
    #[arg(long, env = "STOWAGE_DATABASE_TLS_CA", hide_env_values = true)]
    pub database_tls_ca: Option<String>,
    /// Registry credentials for an `oci` plugin: a Docker config JSON (`.dockerconfigjson`).
    #[arg(long, env = "STOWAGE_REGISTRY_AUTH", hide_env_values = true)]
    pub registry_auth: Option<String>,
    /// Directories searched for builtin plugins, `:`-separated.
    #[arg(long, env = "STOWAGE_PLUGIN_PATH", default_value = "/usr/lib/stowage/plugins")]
    pub plugin_path: String,
    /// The plugin of a `configMap` source, where the Job mounts it.
    #[arg(long, env = "STOWAGE_PLUGIN_FILE")]
    pub plugin_file: Option<PathBuf>,
    /// Directory for precompiled plugins; must be writable only by this user.
    #[arg(long, env = "STOWAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// If another backup of the resource is running (a scheduled one while a manual one
    /// runs, say), wait this long for it before failing with BackupAlreadyRunning.
    #[arg(long, env = "STOWAGE_LOCK_WAIT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub lock_wait: Duration,
}

impl JobArgs {
    fn into_inputs(self) -> JobInputs {
        JobInputs {
            resource_name: self.resource_name,
            resource_uid: self.resource_uid,
            namespace: self.namespace,
            run_spec: self.run_spec,
            one_shot_name: self.one_shot_name,
            restore_plan: self.restore_plan,
            age_identity: self.age_identity,
            generation: self.run_generation,
            job_name: self.job_name,
            job_uid: self.job_uid,
            pod_name: self.pod_name,
            repo: self.repo_name,
            access_key_id: self.access_key_id.or(self.cos_access_key_id).or(self.hmac_access_key_id),
            secret_access_key: self.secret_access_key.or(self.cos_secret_access_key).or(self.hmac_secret_access_key),
            region: self.region.or(self.cos_region),
            endpoint: self.endpoint.or(self.cos_endpoint),
            database_password: self.database_password,
            database_tls_ca: self.database_tls_ca,
            registry_auth: self.registry_auth,
            plugin_path: self.plugin_path,
            plugin_file: self.plugin_file,
            cache_dir: self.cache_dir,
            lock_wait: self.lock_wait,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show a plugin's metadata, WIT version and sha256.
    Inspect(InspectArgs),
    /// Push a plugin component to an OCI registry in the layout `oci` references read
    /// (one `application/wasm` layer); prints the reference pinned by digest.
    Push(PushArgs),
}

/// Where backups are stored.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: s3://bucket/prefix or file:///directory.
    #[arg(long, env = "STOWAGE_REPO")]
    pub repo: String,
    /// Endpoint of an S3-compatible service (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: from the AWS configuration, else us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// Path-style bucket addressing; defaults to on when an endpoint is given.
    #[arg(long, env = "STOWAGE_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
}

impl RepoArgs {
    async fn open(&self) -> Result<Repository, CliError> {
        let location: RepoLocation = self.repo.parse()?;
        let options = S3Options {
            credentials: None,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style.unwrap_or(self.s3_endpoint.is_some()),
        };
        Ok(Repository::open(&location, &options).await)
    }
}

/// Which backup configuration (in Kubernetes: which DatabaseBackup resource).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Name of the backup configuration.
    #[arg(long, env = "STOWAGE_NAME", default_value = "default", value_parser = plain_name)]
    pub name: String,
    /// Namespace of the backup configuration.
    #[arg(long, env = "STOWAGE_NAMESPACE", default_value = "local", value_parser = plain_name)]
    pub namespace: String,
}

/// Which plugin, and how to run it.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// A plugin component (.wasm path) or the name of a builtin plugin.
    #[arg(long, env = "STOWAGE_PLUGIN")]
    pub plugin: String,
    /// The plugin's expected sha256 (hex); checked before anything is compiled.
    #[arg(long, env = "STOWAGE_PLUGIN_SHA256")]
    pub plugin_sha256: Option<String>,
    /// Registry credentials for an `oci://` plugin: a Docker config JSON.
    #[arg(long, env = "STOWAGE_REGISTRY_AUTH", hide_env_values = true)]
    pub registry_auth: Option<String>,
    /// Directories searched for builtin plugins, `:`-separated.
    #[arg(long, env = "STOWAGE_PLUGIN_PATH", default_value = "/usr/lib/stowage/plugins")]
    pub plugin_path: String,
    /// Directory for precompiled plugins, writable only by this user
    /// [default: $HOME/.cache/stowage/plugins].
    #[arg(long, env = "STOWAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory limit of the plugin, in MiB.
    #[arg(long, env = "STOWAGE_MEMORY_LIMIT_MIB", default_value_t = 512)]
    pub memory_limit_mib: usize,
    /// Time limit of the whole run (e.g. 90m, 6h).
    #[arg(long, env = "STOWAGE_TIMEOUT", default_value = "6h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The plugin engine with its compilation cache (default `$HOME/.cache/stowage/plugins`).
fn engine(cache_dir: Option<PathBuf>) -> Result<PluginEngine, CliError> {
    let cache_dir =
        cache_dir.or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/stowage/plugins")));
    PluginEngine::new(cache_dir).map_err(|e| CliError::Engine(format!("{e:#}")))
}

impl PluginArgs {
    fn limits(&self, interrupt: &CancellationToken) -> Limits {
        Limits { memory_bytes: self.memory_limit_mib << 20, deadline: self.timeout, interrupt: interrupt.clone() }
    }

    async fn load(&self) -> Result<(PluginEngine, Plugin), CliError> {
        let engine = engine(self.cache_dir.clone())?;
        let pin = self.plugin_sha256.as_deref();
        let plugin = if let Some(reference) = self.plugin.strip_prefix("oci://") {
            engine.load_oci(reference, pin, self.registry_auth.as_deref()).await?
        } else if self.plugin.contains("://") {
            engine.load_url(&self.plugin, pin).await?
        } else {
            engine.load(&crate::plugin::locate(&self.plugin, &self.plugin_path), pin)?
        };
        Ok((engine, plugin))
    }
}

/// The database to back up or restore into.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL: scheme://[user@]host[:port]/database[?option=value]. Omit for
    /// plugins that need no database.
    #[arg(long, env = "STOWAGE_DATABASE")]
    pub database: Option<String>,
    /// The database password (better from the environment than on the command line).
    #[arg(long, env = "STOWAGE_DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,
    /// A plugin option, NAME=VALUE; repeatable.
    #[arg(long = "option", value_parser = key_value)]
    pub options: Vec<(String, String)>,
}

impl DatabaseArgs {
    fn target(&self) -> Result<DatabaseTarget, CliError> {
        let mut target = match &self.database {
            Some(url) => DatabaseTarget::parse(url)?,
            None => DatabaseTarget::default(),
        };
        if self.database_password.is_some() {
            target.password = self.database_password.clone();
        }
        target.options.extend(self.options.iter().cloned());
        Ok(target)
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// none, zstd or zstd:LEVEL.
    #[arg(long, env = "STOWAGE_COMPRESSION", default_value = "zstd")]
    pub compression: Compression,
    /// Encrypt to this age public key (age1...); repeatable or comma-separated.
    #[arg(long = "age-recipient", env = "STOWAGE_AGE_RECIPIENTS", value_delimiter = ',')]
    pub age_recipients: Vec<String>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Size of the first uploaded parts in MiB (at least 5); parts grow as an artifact
    /// grows, so that --max-parts parts hold 5 TiB.
    #[arg(long, env = "STOWAGE_PART_SIZE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u16).range(5..=1024))]
    pub part_size_mib: u16,
    /// Parts per object the store accepts (S3: 10000; some compatible stores allow fewer).
    #[arg(long, env = "STOWAGE_MAX_PARTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_parts: u32,
    /// Backups without a manifest older than this are leftovers of killed runs and are
    /// removed before the next backup; never younger than --timeout plus 30 minutes.
    #[arg(long, env = "STOWAGE_LEFTOVER_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub leftover_age: Duration,
    /// If another backup of this configuration is running, wait this long for it to
    /// finish (0: fail at once with BackupAlreadyRunning).
    #[arg(long, env = "STOWAGE_LOCK_WAIT", default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_wait: Duration,
}

/// Decryption keys for encrypted backups.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// A file of age identities (AGE-SECRET-KEY-1...), as written by age-keygen.
    #[arg(long, env = "STOWAGE_AGE_IDENTITY_FILE")]
    pub age_identity_file: Option<PathBuf>,
}

impl IdentityArgs {
    fn identities(&self) -> Result<Arc<Identities>, CliError> {
        let Some(path) = &self.age_identity_file else {
            return Ok(Arc::new(Identities::default()));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
        let identities =
            Identities::parse(&text).map_err(|e| CliError::InvalidArgument(format!("{}: {e}", path.display())))?;
        Ok(Arc::new(identities))
    }
}

/// One backup of one configuration in a repository, and the keys to read it.
#[derive(Debug, Args)]
pub struct BackupSelection {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The backup id, or `latest`.
    #[arg(long, env = "STOWAGE_BACKUP", default_value = "latest")]
    pub backup: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub selection: BackupSelection,
    /// Replace existing objects in the target database.
    #[arg(long)]
    pub replace: bool,
    /// Use this plugin even though another one wrote the backup.
    #[arg(long)]
    pub allow_other_plugin: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// The scratch database; what it holds is replaced. Never the backed-up database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub selection: BackupSelection,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only backups of this configuration (namespace/name).
    #[arg(long)]
    pub only: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub selection: BackupSelection,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The plugin component (.wasm) or builtin name.
    #[command(flatten)]
    pub plugin: PluginArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The plugin component (.wasm file); it is checked like any plugin before it is pushed.
    pub component: PathBuf,
    /// Where to: `oci://registry/repository:tag`.
    pub destination: String,
    /// Registry credentials: a Docker config JSON.
    #[arg(long, env = "STOWAGE_REGISTRY_AUTH", hide_env_values = true)]
    pub registry_auth: Option<String>,
    /// Directory for precompiled plugins [default: $HOME/.cache/stowage/plugins].
    #[arg(long, env = "STOWAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// Which backups of the configuration to keep after a successful backup; a backup is
/// kept when any rule keeps it (restic's rules). Without a rule, all are kept.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Keep the newest N backups.
    #[arg(long, env = "STOWAGE_KEEP_LAST")]
    pub keep_last: Option<usize>,
    /// Keep the newest backup of each of the newest N hours that have one (UTC).
    #[arg(long, env = "STOWAGE_KEEP_HOURLY")]
    pub keep_hourly: Option<usize>,
    /// The same per day.
    #[arg(long, env = "STOWAGE_KEEP_DAILY")]
    pub keep_daily: Option<usize>,
    /// The same per ISO week.
    #[arg(long, env = "STOWAGE_KEEP_WEEKLY")]
    pub keep_weekly: Option<usize>,
    /// The same per month.
    #[arg(long, env = "STOWAGE_KEEP_MONTHLY")]
    pub keep_monthly: Option<usize>,
    /// The same per year.
    #[arg(long, env = "STOWAGE_KEEP_YEARLY")]
    pub keep_yearly: Option<usize>,
    /// Keep backups younger than this (e.g. 30d).
    #[arg(long, env = "STOWAGE_MAX_AGE", value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
}

impl From<RetentionArgs> for Retention {
    fn from(args: RetentionArgs) -> Self {
        Retention {
            keep_last: args.keep_last,
            keep_hourly: args.keep_hourly,
            keep_daily: args.keep_daily,
            keep_weekly: args.keep_weekly,
            keep_monthly: args.keep_monthly,
            keep_yearly: args.keep_yearly,
            max_age: args.max_age,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the restore drill did not pass ({reason}): {message}")]
    DrillFailed { reason: &'static str, message: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot push to {destination}: {message}")]
    Push { destination: String, message: String },
}

impl CliError {
    /// The process exit code: [`stowage_api::EXIT_PERMANENT_FAILURE`] when no retry
    /// can succeed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Job(error) if error.permanent() => stowage_api::EXIT_PERMANENT_FAILURE,
            _ => 1,
        }
    }
}

/// A progress bar of the bytes written so far, redrawn until the task is aborted.
fn show_progress(written: Arc<std::sync::atomic::AtomicU64>) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {bytes} backed up ({bytes_per_sec}, {elapsed})")
    {
        bar.set_style(style);
    }
    tokio::spawn(async move {
        let _clear = ClearOnDrop(bar.clone());
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            bar.set_position(written.load(std::sync::atomic::Ordering::Relaxed));
        }
    })
}

/// Removes the progress bar when its task ends or is aborted.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The process's peak resident memory (VmHWM), where the platform tells.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn plain_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && !value.starts_with('.')
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid { Ok(value.to_owned()) } else { Err(format!("{value:?} must be letters, digits, '-', '.' or '_'")) }
}

fn key_value(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not NAME=VALUE"))
}

/// Run one command; what it prints goes to `out`. SIGTERM or SIGINT stops a backup or
/// restore cleanly (see [`crate::interrupt`]).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let interrupt = crate::interrupt::on_signals();
    match cli.command {
        Command::Backup(args) => backup(args, out, &interrupt).await,
        Command::Restore(args) => restore(args, out, &interrupt).await,
        Command::List(args) => list(args, out).await,
        Command::Verify(VerifyArgs { selection }) => {
            let repository = selection.repo.open().await?;
            let identities = selection.identity.identities()?;
            let config = &selection.config;
            let manifest =
                verify_backup(&repository, &config.namespace, &config.name, &selection.backup, identities).await?;
            writeln!(
                out,
                "backup {} is intact: {} artifacts, {} bytes",
                manifest.backup_id,
                manifest.artifacts.len(),
                manifest.raw_size()
            )?;
            Ok(())
        }
        Command::Plugin(PluginCommand::Inspect(args)) => inspect(args, out, &interrupt).await,
        Command::Plugin(PluginCommand::Push(args)) => push(args, out).await,
        Command::Job(args) => {
            let report = run_job(args.into_inputs(), interrupt).await?;
            writeln!(out, "{}", report.manifest.backup_id)?;
            Ok(())
        }
        Command::RestoreJob(args) => {
            let restored = run_restore_job(args.into_inputs(), interrupt).await?;
            writeln!(out, "restored backup {} into {}", restored.backup_id, restored.target)?;
            Ok(())
        }
        Command::Drill(args) => drill(args, out, &interrupt).await,
        Command::DrillJob(args) => {
            let outcome = run_drill_job(args.into_inputs(), interrupt).await?;
            writeln!(out, "{}", outcome.message)?;
            Ok(())
        }
        Command::ImportJob(args) => {
            let imported = run_import_job(args.into_inputs()).await?;
            writeln!(
                out,
                "{} snapshots ({} created, {} removed)",
                imported.snapshots, imported.created, imported.removed
            )?;
            Ok(())
        }
    }
}

async fn backup(args: BackupArgs, out: &mut dyn Write, interrupt: &CancellationToken) -> Result<(), CliError> {
    let recipients = Recipients::parse(&args.age_recipients).map_err(CliError::InvalidArgument)?;
    let request = BackupRequest {
        namespace: args.config.namespace,
        name: args.config.name,
        database: args.database.target()?,
        codec: Codec { compression: args.compression, recipients },
        transfer: TransferLimits {
            part_size: usize::from(args.part_size_mib) << 20,
            max_parts: args.max_parts,
            ..TransferLimits::default()
        },
        limits: args.plugin.limits(interrupt),
        retention: args.retention.into(),
        leftover_age: args.leftover_age,
        lock_wait: args.lock_wait,
        written: Arc::default(),
    };
    let (_engine, plugin) = args.plugin.load().await?;
    let repository = args.repo.open().await?;
    let started = std::time::Instant::now();
    let progress = std::io::stderr().is_terminal().then(|| show_progress(Arc::clone(&request.written)));
    let result = run_backup(&plugin, &repository, &request).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let report = result?;
    let manifest = &report.manifest;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        backup_id = %manifest.backup_id,
        raw_bytes = manifest.raw_size(),
        stored_bytes = manifest.stored_size(),
        seconds = format!("{seconds:.2}"),
        mib_per_second = format!("{:.1}", manifest.raw_size() as f64 / f64::from(1 << 20) / seconds.max(1e-9)),
        peak_rss_mib = peak_rss_mib().unwrap_or_default(),
        expired = report.expired.len(),
        "backup complete"
    );
    for warning in &report.warnings {
        tracing::warn!("after the commit: {warning}");
    }
    writeln!(out, "{}", manifest.backup_id)?;
    Ok(())
}

async fn restore(args: RestoreArgs, out: &mut dyn Write, interrupt: &CancellationToken) -> Result<(), CliError> {
    let selection = args.selection;
    let request = RestoreRequest {
        namespace: selection.config.namespace,
        name: selection.config.name,
        backup: selection.backup,
        database: args.database.target()?,
        limits: args.plugin.limits(interrupt),
        identities: selection.identity.identities()?,
        replace_existing: args.replace,
        allow_other_plugin: args.allow_other_plugin,
        progress: Arc::default(),
    };
    let (_engine, plugin) = args.plugin.load().await?;
    let repository = selection.repo.open().await?;
    let (manifest, summary) = run_restore(&plugin, &repository, &request).await?;
    writeln!(out, "restored backup {}: {}", manifest.backup_id, summary.description)?;
    Ok(())
}

async fn drill(args: DrillArgs, out: &mut dyn Write, interrupt: &CancellationToken) -> Result<(), CliError> {
    let selection = args.selection;
    let database = args.database.target()?;
    let target = format!("{}:{}/{}", database.host, database.port, database.database);
    let request = RestoreRequest {
        namespace: selection.config.namespace,
        name: selection.config.name,
        backup: selection.backup,
        database,
        limits: args.plugin.limits(interrupt),
        identities: selection.identity.identities()?,
        replace_existing: true,
        allow_other_plugin: false,
        progress: Arc::default(),
    };
    let (_engine, plugin) = args.plugin.load().await?;
    let repository = selection.repo.open().await?;
    let report = run_drill(&plugin, &repository, &request).await;
    let message = report.message(&target);
    if !report.verdict.passed() {
        return Err(CliError::DrillFailed { reason: report.verdict.reason(), message });
    }
    writeln!(out, "{message}")?;
    Ok(())
}

async fn list(args: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let only = match &args.only {
        Some(config) => Some(
            config
                .split_once('/')
                .ok_or_else(|| CliError::InvalidArgument(format!("--only {config:?} is not NAMESPACE/NAME")))?,
        ),
        None => None,
    };
    let repository = args.repo.open().await?;
    let row = |config: &str, id: &str, started: &str, size: &str, stored: &str, status: &str, plugin: &str| {
        format!("{config:<24} {id:<26} {started:<20} {size:>12} {stored:>12}  {status:<10} {plugin}")
    };
    writeln!(out, "{}", row("CONFIG", "BACKUP", "STARTED", "SIZE", "STORED", "STATUS", "PLUGIN"))?;
    // One listing of the objects; directories without a manifest are running now or are
    // leftovers that the next backup of their configuration removes.
    for dir in repository.scan(only).await? {
        let config = format!("{}/{}", dir.namespace, dir.name);
        let line = match repository.inspect(&dir).await? {
            DirState::Complete(manifest) => row(
                &config,
                &manifest.backup_id,
                &manifest.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                &manifest.raw_size().to_string(),
                &manifest.stored_size().to_string(),
                "complete",
                &format!("{} {}", manifest.plugin.name, manifest.plugin.version),
            ),
            DirState::Incomplete => row(&config, &dir.id, "-", "-", &dir.stored_size().to_string(), "incomplete", "-"),
            DirState::Invalid { key, why } => {
                tracing::warn!(%key, %why, "a manifest that is not valid");
                row(&config, &dir.id, "-", "-", &dir.stored_size().to_string(), "invalid", "-")
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(())
}

async fn push(args: PushArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let fail = |message: String| CliError::Push { destination: args.destination.clone(), message };
    let reference = args
        .destination
        .strip_prefix("oci://")
        .ok_or_else(|| fail("the destination is oci://registry/repository:tag".into()))?;
    let reference = oci::Reference::parse(reference).map_err(fail)?;
    let credentials = match &args.registry_auth {
        Some(json) => oci::Credentials::find(json, &reference.registry).map_err(fail)?,
        None => None,
    };
    // Only what would load is pushed.
    let plugin = engine(args.cache_dir.clone())?.load(&args.component, None)?;
    let component = std::fs::read(&args.component)?;
    let digest = oci::push(&reference, component, credentials).await.map_err(fail)?;
    let pinned = oci::Reference { digest: Some(digest), ..reference };
    writeln!(out, "oci://{pinned}")?;
    tracing::info!(sha256 = %plugin.sha256, "pushed; reference it as spec.plugin.oci: {pinned}");
    Ok(())
}

async fn inspect(args: InspectArgs, out: &mut dyn Write, interrupt: &CancellationToken) -> Result<(), CliError> {
    let (_engine, plugin) = args.plugin.load().await?;
    let metadata = plugin.metadata(&args.plugin.limits(interrupt)).await?;
    writeln!(out, "name:        {}", metadata.name)?;
    writeln!(out, "version:     {}", metadata.version)?;
    writeln!(out, "description: {}", metadata.description)?;
    let operations: Vec<&str> = metadata.operations.iter().map(|op| operation_name(*op)).collect();
    writeln!(out, "operations:  {}", operations.join(", "))?;
    writeln!(out, "wit:         {}@{}", crate::plugin::WIT_PACKAGE, plugin.wit_version)?;
    writeln!(out, "sha256:      {}", plugin.sha256)?;
    writeln!(out, "size:        {} bytes", plugin.size)?;
    writeln!(out, "settings:")?;
    for spec in &metadata.settings {
        let default = spec.default_value.as_deref().map(|d| format!(" (default {d})")).unwrap_or_default();
        let required = if spec.required { " (required)" } else { "" };
        writeln!(out, "  {:<16} {}{required}{default}", spec.name, spec.description)?;
    }
    Ok(())
}
