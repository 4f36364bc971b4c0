//! The reconcile loop: one DatabaseBackup in, its runner identity, Jobs, CronJob and
//! status out. Everything is applied with server-side apply under one field manager, so
//! reconciling is idempotent and drift is corrected. Reconciles run on a change of the
//! spec, of a run's phase or of the resource's Jobs, not on every progress report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::GroupVersion;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use stowage_api::{
    DatabaseBackup, DatabaseRestore, DatabaseSnapshotImport, FieldError, InvalidSpec, name_fits_a_label,
};

use crate::applied::{Applied, digest};
use crate::identity::{self, Identities};
use crate::report::{Workloads, observe_outcome, observe_schedule, publish, write_status};
use crate::status::{JobState, Observation, observe};
use crate::telemetry::{Labels, Telemetry};
use crate::workloads::{
    LABEL_BACKUP, LABEL_MANAGED_BY, MANAGED_BY, WorkloadSettings, cronjob, cronjob_name, drill_cronjob,
    drill_cronjob_name, manual_job, own_runner_identity,
};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "stowage-operator";
/// Resources are reconciled at least this often, which also repairs edited workloads.
const RESYNC: Duration = Duration::from_secs(300);
/// Reconciles in flight at once. At scale the API server is the bottleneck, and more
/// requests at once only add to its contention: 10,000 resources on 2 cores reached
/// steady state in 171 s with 32, 119 to 144 s with 16, 113 and 115 s with 8, 136 s with
/// 4 (`./dev bench`).
const RECONCILE_CONCURRENCY: u16 = 8;

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the resource has no namespace")]
    NoNamespace,
    #[error("applying {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },
    #[error("creating Job {name}: {source}")]
    CreateJob { name: String, source: kube::Error },
    #[error("deleting CronJob {name}: {source}")]
    DeleteCronJob { name: String, source: kube::Error },
    #[error("stopping the retries of Job {name}: {source}")]
    StopJob { name: String, source: kube::Error },
    /// A validated spec always makes workloads; this names the rule the validator missed.
    #[error("the validated spec cannot become a workload: {0}")]
    Workload(FieldError),
    #[error("reading the API server's version: {0}")]
    Version(kube::Error),
    #[error("writing status: {0}")]
    Status(kube::Error),
    #[error("reading {kind}: {source}")]
    Read { kind: &'static str, source: kube::Error },
    #[error("the API server serves no CronJob in batch/v1 or batch/v1beta1")]
    NoCronJobApi,
}

impl Error {
    /// What a user reads in `Ready`: the API server's own words where it refused a
    /// workload, without the response's dump.
    pub fn for_status(&self) -> String {
        match self {
            Error::Apply { kind, name, source: kube::Error::Api(status) } => {
                format!("the API server refuses {kind} {name}: {}", status.message)
            }
            Error::CreateJob { name, source: kube::Error::Api(status) } => {
                format!("the API server refuses Job {name}: {}", status.message)
            }
            other => other.to_string(),
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoNamespace => "no_namespace",
            Error::Apply { .. } => "apply",
            Error::CreateJob { .. } => "create_job",
            Error::DeleteCronJob { .. } => "delete_cronjob",
            Error::StopJob { .. } => "stop_job",
            Error::Version(_) => "version",
            Error::Workload(_) => "workload",
            Error::Status(_) => "status",
            Error::Read { .. } => "read",
            Error::NoCronJobApi => "no_cronjob_api",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The one namespace this context watches; `None`: every namespace.
    pub namespace: Option<String>,
    pub settings: WorkloadSettings,
    /// CronJob in the newest batch version the API server serves.
    pub cronjob_api: ApiResource,
    pub recorder: Recorder,
    pub telemetry: Arc<Telemetry>,
    /// The Jobs of all resources, by the `stowage.dev/backup` label.
    pub jobs: Store<Job>,
    /// The CronJobs the operator made, metadata only: whether one exists is known without
    /// a request (a delete per CronJob and resource at start-up, otherwise).
    cronjobs: Store<PartialObjectMeta<DynamicObject>>,
    /// Every DatabaseBackup (managed fields stripped): the controller's store.
    pub(crate) backups: Store<DatabaseBackup>,
    /// The runner identities the operator made and applied.
    pub(crate) identities: Identities,
    writers: Mutex<Option<CacheWriters>>,
    /// The outcome last announced with an Event, per resource UID: a reconcile that reads
    /// a status not yet updated by the previous one never announces an outcome twice.
    pub(crate) announced: Mutex<HashMap<String, (String, String)>>,
    /// The Job UID of the run last observed in the duration and size metrics, per
    /// resource UID.
    pub(crate) observed: Mutex<HashMap<String, String>>,
    /// CronJobs this process applied and has not deleted since, by `UID/NAME` (the CronJob
    /// cache may not have seen them yet), with the resourceVersion after.
    applied_cronjobs: Applied<Option<String>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("cronjob_api", &self.cronjob_api.api_version).finish_non_exhaustive()
    }
}

impl Context {
    /// Discover the CronJob version and what Jobs support, and prepare the event recorder.
    pub async fn new(
        client: Client,
        runner_image: String,
        allowed_runner_images: Vec<String>,
        identity: &str,
        telemetry: Arc<Telemetry>,
        namespace: Option<String>,
    ) -> Result<Self, Error> {
        let cronjob_api = discover_cronjob(&client).await?;
        let version = client.apiserver_version().await.map_err(Error::Version)?;
        let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or_default();
        let served_from = |wanted: u32| version.major == "1" && minor >= wanted;
        let (pod_failure_policy, cronjob_time_zone) = (served_from(26), served_from(27));
        let allowed_runner_images =
            allowed_runner_images.into_iter().filter(|image| !image.trim().is_empty()).collect();
        let settings = WorkloadSettings {
            runner_image,
            allowed_runner_images,
            pod_failure_policy,
            cronjob_time_zone,
            server_version: version.git_version,
        };
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.to_owned()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let (jobs, writer) = reflector::store();
        let cronjob_writer = reflector::store::Writer::new(cronjob_api.clone());
        let (accounts, accounts_writer) = reflector::store();
        let (bindings, bindings_writer) = reflector::store();
        let (backups, backups_writer) = reflector::store();
        Ok(Context {
            client,
            namespace,
            settings,
            cronjob_api,
            recorder,
            telemetry,
            jobs,
            cronjobs: cronjob_writer.as_reader(),
            backups,
            identities: Identities::new(accounts, bindings),
            writers: Mutex::new(Some(CacheWriters {
                backups: backups_writer,
                jobs: writer,
                cronjobs: cronjob_writer,
                accounts: accounts_writer,
                bindings: bindings_writer,
            })),
            announced: Mutex::default(),
            observed: Mutex::default(),
            applied_cronjobs: Applied::default(),
        })
    }

    /// The objects of kind `K` this context watches: in its namespace, or in all.
    pub(crate) fn watched<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Whether CronJob `name` of `backup` may exist: in the cache, or applied by this
    /// process and not deleted since. Absent, it needs no delete or suspend request.
    fn may_have_cronjob(&self, backup: &DatabaseBackup, namespace: &str, name: &str) -> bool {
        self.applied_cronjobs.may_exist(&cronjob_key(backup, name)) || self.cronjob_version(namespace, name).is_some()
    }

    /// The resourceVersion of CronJob `name` in the cache.
    fn cronjob_version(&self, namespace: &str, name: &str) -> Option<String> {
        let cronjob = self.cronjobs.get(&ObjectRef::new_with(name, self.cronjob_api.clone()).within(namespace))?;
        cronjob.metadata.resource_version.clone()
    }

    /// Forget what is remembered of a deleted resource.
    pub(crate) fn forget(&self, uid: &str) {
        self.applied_cronjobs.forget_prefix(&format!("{uid}/"));
        if let Ok(mut announced) = self.announced.lock() {
            announced.retain(|key, _| key != uid && !key.starts_with(&format!("{uid}/")));
        }
        if let Ok(mut observed) = self.observed.lock() {
            observed.remove(uid);
        }
    }

    /// Write the metric series of `backup`, unless it is gone (see [`Telemetry::export`]).
    pub(crate) fn export(&self, backup: &DatabaseBackup, write: impl FnOnce(&Telemetry, &Labels)) {
        let (uid, namespace) = (backup.uid().unwrap_or_default(), backup.namespace().unwrap_or_default());
        self.telemetry.export(&uid, &namespace, &backup.name_any(), write);
    }

    /// Remove the metric series of `backup`, deleted or being deleted, for good.
    pub(crate) fn bury(&self, backup: &DatabaseBackup) {
        let (uid, namespace) = (backup.uid().unwrap_or_default(), backup.namespace().unwrap_or_default());
        self.telemetry.bury(&uid, &namespace, &backup.name_any());
    }

    /// The Jobs of `backup`, from the cache: manual ones owned by it, scheduled ones
    /// owned by its CronJob, all labelled with its name.
    fn jobs_of(&self, namespace: &str, backup: &DatabaseBackup) -> Vec<JobState> {
        let (name, uid) = (backup.name_any(), backup.uid());
        let ours = |job: &Job| {
            job.namespace().as_deref() == Some(namespace)
                && job.labels().get(LABEL_BACKUP) == Some(&name)
                // A Job of a deleted resource of the same name is not this one's.
                && job.owner_references().iter().all(|owner| owner.kind != "DatabaseBackup" || Some(&owner.uid) == uid.as_ref())
        };
        self.jobs.state().iter().filter(|job| ours(job)).filter_map(|job| JobState::of(job)).collect()
    }
}

/// `UID/NAME`: CronJob `name` of `backup` (a resource recreated under its name is another).
fn cronjob_key(backup: &DatabaseBackup, name: &str) -> String {
    format!("{}/{name}", backup.uid().unwrap_or_default())
}

/// The writers of the caches the backup controller fills, taken once by [`run`].
struct CacheWriters {
    backups: reflector::store::Writer<DatabaseBackup>,
    jobs: reflector::store::Writer<Job>,
    cronjobs: reflector::store::Writer<PartialObjectMeta<DynamicObject>>,
    accounts: reflector::store::Writer<PartialObjectMeta<ServiceAccount>>,
    bindings: reflector::store::Writer<PartialObjectMeta<RoleBinding>>,
}

/// batch/v1 CronJob where served (Kubernetes 1.21+), else batch/v1beta1.
async fn discover_cronjob(client: &Client) -> Result<ApiResource, Error> {
    for version in ["v1", "v1beta1"] {
        if let Ok(group) = kube::discovery::pinned_group(client, &GroupVersion::gv("batch", version)).await
            && let Some((resource, _)) = group.recommended_kind("CronJob")
        {
            return Ok(resource);
        }
    }
    Err(Error::NoCronJobApi)
}

/// What makes a resource worth reconciling: its spec, its metadata (deletion, owner
/// changes), the phase of the runner's report and a new drill outcome, but not the
/// report's progress or the operator's own status writes.
fn reconcile_trigger(backup: &DatabaseBackup) -> Option<u64> {
    let attempt = backup.status.as_ref().and_then(|s| s.latest_attempt.as_ref());
    // Two drills can end in the same second (a passed one, then one run by hand on a
    // damaged backup): the outcome, not only its time, is what is new.
    let drill = backup.status.as_ref().and_then(|s| s.last_verification.as_ref());
    Some(digest(&(
        backup.metadata.generation,
        backup.metadata.deletion_timestamp.is_some(),
        attempt.map(|a| (&a.job_uid, &a.pod, format!("{:?}", a.phase), &a.reason)),
        drill.map(|d| (&d.finished_at, d.verified, &d.reason, &d.message)),
    )))
}

/// Run the DatabaseBackup, DatabaseRestore and DatabaseSnapshotImport controllers until a
/// shutdown signal.
pub async fn run(context: Context) {
    let client = context.client.clone();
    let Some(writers) = context.writers.lock().ok().and_then(|mut writers| writers.take()) else {
        tracing::error!("the controller runs once per context");
        return;
    };
    let context = Arc::new(context);
    let forget = Arc::clone(&context);
    let backups = watcher(context.watched::<DatabaseBackup>(), watcher::Config::default())
        .default_backoff()
        // Most of a cached object's size, and read by nothing here.
        .modify(|backup| backup.managed_fields_mut().clear())
        .reflect(writers.backups)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(backup) = event {
                forget.bury(backup);
                forget.forget(&backup.uid().unwrap_or_default());
                let (context, namespace) = (Arc::clone(&forget), backup.namespace().unwrap_or_default());
                context.identities.forget(&namespace, &own_runner_identity(backup));
                tokio::spawn(async move { identity::retire_unused(&context, &namespace).await });
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_trigger, PredicateConfig::default());
    // Jobs of scheduled runs belong to their CronJob, so map Jobs back by label.
    let (changed_jobs, job_watch) = watch_jobs(context.watched(), LABEL_BACKUP, writers.jobs);
    let cronjobs = match &context.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &context.cronjob_api),
        None => Api::all_with(client, &context.cronjob_api),
    };
    let _stop_metadata_watches = [
        AbortOnDrop(watch_metadata("CronJob", cronjobs, writers.cronjobs)),
        AbortOnDrop(watch_metadata("ServiceAccount", context.watched(), writers.accounts)),
        AbortOnDrop(watch_metadata("RoleBinding", context.watched(), writers.bindings)),
    ];
    if context.jobs.wait_until_ready().await.is_err()
        || context.cronjobs.wait_until_ready().await.is_err()
        || !context.identities.ready().await
    {
        tracing::error!("a cache stopped before it was complete");
        return;
    }
    let sweep = Arc::clone(&context);
    let _stop_sweep = AbortOnDrop(tokio::spawn(async move {
        if sweep.backups.wait_until_ready().await.is_ok() {
            identity::retire_all_unused(&sweep).await;
        }
    }));
    let controller = Controller::for_stream(backups, context.backups.clone())
        .watches_stream(changed_jobs, |job: Job| {
            let name = job.labels().get(LABEL_BACKUP)?.clone();
            Some(ObjectRef::new(&name).within(&job.namespace()?))
        })
        // Unbounded, thousands of resources at start-up are thousands of requests at once,
        // which the API server answers with 429 and 504 (measured at 10,000 resources).
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY));
    let _stop_job_watch = AbortOnDrop(job_watch);
    let restores = crate::oneshot::run::<DatabaseRestore>(Arc::clone(&context));
    let imports = crate::oneshot::run::<DatabaseSnapshotImport>(Arc::clone(&context));
    let backups = controller.shutdown_on_signal().run(reconcile, error_policy, context).for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(%object, "reconciled"),
            // A resource deleted while its reconcile was queued.
            Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                tracing::debug!(%object, "deleted before its reconcile")
            }
            Err(error) => tracing::warn!(%error, "reconcile failed"),
        }
    });
    futures::join!(backups, restores, imports);
}

/// Watch the Jobs labelled `label` into `writer` on a task of its own, so that the cache
/// is complete before the first reconcile reads it; a controller hears of the changes
/// through the returned stream. The task stops when the returned handle is aborted.
pub(crate) fn watch_jobs(
    api: Api<Job>,
    label: &'static str,
    writer: reflector::store::Writer<Job>,
) -> (futures::channel::mpsc::UnboundedReceiver<Result<Job, watcher::Error>>, tokio::task::JoinHandle<()>) {
    let (job_changes, changed_jobs) = futures::channel::mpsc::unbounded();
    let job_watch = watcher(api, watcher::Config::default().labels(label))
        .default_backoff()
        // The Pod template (the run's spec and environment) and the managed fields are
        // most of a Job's size; the operator reads a Job's metadata and status only.
        .modify(|job| {
            job.managed_fields_mut().clear();
            if let Some(spec) = job.spec.as_mut() {
                spec.template = Default::default();
            }
        })
        .reflect(writer)
        .touched_objects()
        .for_each(move |job| {
            match job {
                Ok(job) => drop(job_changes.unbounded_send(Ok(job))),
                Err(error) => tracing::warn!(%error, label, "watching Jobs failed; retrying"),
            }
            std::future::ready(())
        });
    (changed_jobs, tokio::spawn(job_watch))
}

/// Watch the metadata of the objects of `api` the operator made into `writer` (without
/// their managed fields, most of their size) on a task of its own; the task stops when
/// the returned handle is aborted.
fn watch_metadata<K>(
    kind: &'static str,
    api: Api<PartialObjectMeta<K>>,
    writer: reflector::store::Writer<PartialObjectMeta<K>>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    PartialObjectMeta<K>: Resource<DynamicType = K::DynamicType>,
{
    let labels = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let watch = watcher(api, watcher::Config::default().labels(&labels))
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .for_each(move |event| {
            if let Err(error) = event {
                tracing::warn!(%error, kind, "watching failed; retrying");
            }
            std::future::ready(())
        });
    tokio::spawn(watch)
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn error_policy(_backup: Arc<DatabaseBackup>, error: &Error, context: Arc<Context>) -> Action {
    context.telemetry.reconcile_errors.get_or_create(&vec![("error".into(), error.metric_label().into())]).inc();
    tracing::warn!(%error, label = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Apply `value` as `name` of `kind`; the object after.
pub(crate) async fn apply<K>(api: &Api<K>, kind: &'static str, name: &str, value: &Value) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value))
        .await
        .map_err(|source| Error::Apply { kind, name: name.to_owned(), source })
}

/// Apply `patch` to the status of `name` in `api`; false when the resource is gone.
pub(crate) async fn apply_status<K>(api: &Api<K>, name: &str, patch: &Value) -> Result<bool, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await {
        Ok(_) => Ok(true),
        Err(error) if is_status(&error, 404) => Ok(false),
        Err(error) => Err(Error::Status(error)),
    }
}

pub(crate) fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Bring one resource's workloads and status in line with its spec.
pub async fn reconcile(backup: Arc<DatabaseBackup>, context: Arc<Context>) -> Result<Action, Error> {
    context.telemetry.reconciles.inc();
    let namespace = backup.namespace().ok_or(Error::NoNamespace)?;
    if backup.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes what the resource owns; creating any of it again
        // would only hold up a foreground deletion.
        context.bury(&backup);
        return Ok(Action::await_change());
    }
    context.export(&backup, |telemetry, labels| {
        observe_outcome(telemetry, labels, &backup);
        observe_schedule(telemetry, labels, &backup);
    });
    let client = &context.client;
    let status = backup.status.clone().unwrap_or_default();
    let observation = observe(
        "Backup",
        &context.jobs_of(&namespace, &backup),
        status.latest_attempt.as_ref(),
        status.last_run.as_ref(),
    );
    let active = observation.active.is_some();
    identity::in_place(&context, &backup, &namespace, active).await?;
    if let Some(active) = observation.active.as_ref().filter(|active| active.stop_retrying) {
        stop_retries(client, &namespace, &active.job).await?;
    }
    let mut workloads =
        Workloads { manual_time: status.manual_trigger_time.clone(), queued: None, invalid: None, refused: None };
    let mut invalid = context.settings.check(&backup.spec).err().map(|invalid| invalid.0).unwrap_or_default();
    invalid.extend(name_fits_a_label(&backup.name_any()).err());
    let made = if invalid.is_empty() {
        // The Job of the manual trigger and the CronJobs of the schedule and the drills.
        async {
            manual_trigger(&context, &backup, &namespace, &observation, &mut workloads).await?;
            scheduled_trigger(&context, &backup, &namespace, &mut workloads).await?;
            verification(&context, &backup, &namespace, &mut workloads).await
        }
        .await
    } else {
        workloads.invalid = Some(InvalidSpec(invalid));
        suspend_cronjobs(&context, &backup, &namespace).await
    };
    // A refusal (a quota, an admission policy, ...) is what Ready says until it passes.
    workloads.refused = made.as_ref().err().map(Error::for_status);
    write_status(&context, &backup, &namespace, &observation, workloads).await?;
    made.map(|()| Action::requeue(RESYNC))
}

/// Create the manual trigger's Job for a new `time`, once no other run is active.
async fn manual_trigger(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    observation: &Observation,
    workloads: &mut Workloads,
) -> Result<(), Error> {
    let spec = &backup.spec;
    let Some(trigger) = spec.manual_trigger.as_ref().filter(|t| t.enabled && !spec.suspend) else { return Ok(()) };
    let Some(time) = trigger.time.as_ref().filter(|time| workloads.manual_time.as_ref() != Some(*time)) else {
        return Ok(());
    };
    if let Some(active) = &observation.active {
        workloads.queued = Some(format!("manual trigger {time} waits for Job {}", active.job));
        return Ok(());
    }
    let job = manual_job(backup, time, &trigger.repo, &context.settings).map_err(Error::Workload)?;
    let job: Job = serde_json::from_value(job)
        .map_err(|e| Error::CreateJob { name: time.clone(), source: kube::Error::SerdeError(e) })?;
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {
            context.telemetry.jobs_created.get_or_create(&vec![("trigger".into(), "manual".into())]).inc();
            let note = format!("Created Job {name} for manual trigger time {time}");
            publish(context, backup, EventType::Normal, "BackupJobCreated", note).await;
        }
        // The Job of this time exists: it ran or runs already, never twice; but only if it
        // is this resource's (a Job made by hand could take the name).
        Err(error) if is_status(&error, 409) => {
            let existing = jobs.get(&name).await.map_err(|source| Error::CreateJob { name: name.clone(), source })?;
            if !existing.owner_references().iter().any(|owner| Some(&owner.uid) == backup.uid().as_ref()) {
                workloads.invalid = Some(InvalidSpec(vec![FieldError::new(
                    "spec.manualTrigger.time",
                    format!(
                        "Job {name} exists but does not belong to this DatabaseBackup: delete it, or change the time"
                    ),
                )]));
                return Ok(());
            }
        }
        Err(source) => return Err(Error::CreateJob { name, source }),
    }
    workloads.manual_time = Some(time.clone());
    Ok(())
}

/// Apply the CronJob of an enabled scheduled trigger (suspended with the resource), or
/// remove it; its running Job finishes either way.
async fn scheduled_trigger(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    workloads: &mut Workloads,
) -> Result<(), Error> {
    let trigger = backup.spec.scheduled_trigger.as_ref().filter(|t| t.enabled);
    let api_version = &context.cronjob_api.api_version;
    let value = trigger.map(|trigger| cronjob(backup, trigger, api_version, &context.settings));
    let name = cronjob_name(backup);
    cronjob_in_place(context, backup, namespace, name, value, "spec.scheduledTrigger", workloads).await
}

/// Apply the CronJob of the restore drills, or remove it.
async fn verification(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    workloads: &mut Workloads,
) -> Result<(), Error> {
    let api_version = &context.cronjob_api.api_version;
    let value = backup.spec.verification.as_ref().map(|v| drill_cronjob(backup, v, api_version, &context.settings));
    let name = drill_cronjob_name(backup);
    cronjob_in_place(context, backup, namespace, name, value, "spec.verification", workloads).await
}

/// Apply CronJob `name` as `value`, or delete it when there is no value (its running Job
/// finishes). A CronJob the API server refuses makes the spec at `field` invalid.
async fn cronjob_in_place(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    name: String,
    value: Option<Result<Value, FieldError>>,
    field: &str,
    workloads: &mut Workloads,
) -> Result<(), Error> {
    let cronjobs: Api<DynamicObject> = Api::namespaced_with(context.client.clone(), namespace, &context.cronjob_api);
    let Some(value) = value else {
        if !context.may_have_cronjob(backup, namespace, &name) {
            return Ok(());
        }
        let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() };
        match cronjobs.delete(&name, &orphan).await {
            Ok(_) => {
                publish(context, backup, EventType::Normal, "CronJobDeleted", format!("Deleted CronJob {name}")).await
            }
            Err(error) if is_status(&error, 404) => {}
            Err(source) => return Err(Error::DeleteCronJob { name, source }),
        }
        context.applied_cronjobs.forget(&cronjob_key(backup, &name));
        return Ok(());
    };
    let value = value.map_err(Error::Workload)?;
    let (key, digest) = (cronjob_key(backup, &name), digest(&value.to_string()));
    if context.applied_cronjobs.is_current(&key, digest, || context.cronjob_version(namespace, &name)) {
        return Ok(());
    }
    context.applied_cronjobs.unknown(&key);
    match apply(&cronjobs, "CronJob", &name, &value).await {
        // The API server refuses what the operator's checks let pass: the spec is at fault.
        Err(Error::Apply { source: kube::Error::Api(status), .. }) if status.code == 422 => {
            workloads.invalid = Some(InvalidSpec(vec![FieldError::new(
                field,
                format!("the API server refuses CronJob {name}: {}", status.message),
            )]));
            Ok(())
        }
        Ok(applied) => {
            match applied.metadata.resource_version {
                version @ Some(_) => context.applied_cronjobs.applied(&key, digest, version),
                None => context.applied_cronjobs.unknown(&key),
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// An invalid spec runs nothing: its CronJobs, made from the last valid spec, are suspended.
async fn suspend_cronjobs(context: &Context, backup: &DatabaseBackup, namespace: &str) -> Result<(), Error> {
    let cronjobs: Api<DynamicObject> = Api::namespaced_with(context.client.clone(), namespace, &context.cronjob_api);
    for name in [cronjob_name(backup), drill_cronjob_name(backup)] {
        if !context.may_have_cronjob(backup, namespace, &name) {
            continue;
        }
        let patch = Patch::Merge(json!({"spec": {"suspend": true}}));
        match cronjobs.patch(&name, &PatchParams::default(), &patch).await {
            Err(error) if !is_status(&error, 404) => return Err(Error::Apply { kind: "CronJob", name, source: error }),
            // No longer as applied: a valid spec applies it again, even before the cache
            // has seen this patch.
            _ => context.applied_cronjobs.unknown(&cronjob_key(backup, &name)),
        }
    }
    Ok(())
}

/// End a Job whose runner reported a failure no retry can mend. Where `podFailurePolicy`
/// is served the Job has failed already; elsewhere the deadline is moved to now, which
/// every Job controller honours at once.
async fn stop_retries(client: &Client, namespace: &str, name: &str) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let patch = Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 1}}));
    match jobs.patch(name, &PatchParams::default(), &patch).await {
        Err(error) if !is_status(&error, 404) => Err(Error::StopJob { name: name.to_owned(), source: error }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DatabaseBackup with `status`.
    fn with_status(status: Value) -> DatabaseBackup {
        serde_json::from_value(json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseBackup",
            "metadata": {"name": "shop", "namespace": "prod", "uid": "1234", "generation": 1},
            "spec": {
                "repos": [{"name": "s3", "secretName": "s3", "bucket": "backups"}],
                "plugin": {"builtin": "postgres"},
                "database": {"endpoint": "db:5432", "name": "shop"}
            },
            "status": status
        }))
        .expect("valid resource")
    }

    #[test]
    fn a_new_drill_outcome_in_the_same_second_is_a_reason_to_reconcile() {
        let backup = |verified: bool, reason: &str| {
            with_status(json!({"lastVerification": {
                "repo": "s3", "target": "db:5432/shop_stowage_drill", "verified": verified, "reason": reason,
                "message": reason, "finishedAt": "2026-12-06T21:41:06Z", "durationSeconds": 0.0
            }}))
        };
        let passed = reconcile_trigger(&backup(true, "DrillPassed"));
        assert_eq!(passed, reconcile_trigger(&backup(true, "DrillPassed")));
        assert_ne!(passed, reconcile_trigger(&backup(false, "ChecksumMismatch")));
    }

    #[test]
    fn progress_reports_are_no_reason_to_reconcile_but_a_new_phase_is() {
        let backup = |bytes: u64, updated: &str, phase: &str| {
            with_status(json!({"latestAttempt": {
                "job": "shop-t1", "jobUid": "5678", "pod": "shop-t1-x", "generation": 1, "phase": phase,
                "reason": "BackupRunning", "message": "backing up", "startedAt": "2026-12-06T21:41:06Z",
                "bytes": bytes, "updated": updated
            }}))
        };
        let first = reconcile_trigger(&backup(64 << 20, "2026-12-06T21:41:36Z", "Running"));
        assert_eq!(first, reconcile_trigger(&backup(128 << 20, "2026-12-06T21:42:06Z", "Running")));
        assert_ne!(first, reconcile_trigger(&backup(128 << 20, "2026-12-06T21:42:06Z", "Failed")));
    }
}
