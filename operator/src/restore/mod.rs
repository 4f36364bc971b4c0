//! The DatabaseRestore controller: each generation of a resource is resolved into a
//! [`RestorePlan`](stowage_api::RestorePlan) once, run as one Job of the locked-down
//! runner, and reported in the status: `Succeeded` (True, or False with the reason of the
//! failure site), `Running`, the Job's outcome in `lastRun`. A generation whose backup
//! cannot be found or whose spec is invalid runs nothing and says why; an edit while a
//! restore runs waits for it, so two restores never write one target at once.

pub mod plan;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use stowage_api::{
    CONDITION_RUNNING, CONDITION_SUCCEEDED, ConditionUpdate, DatabaseBackup, DatabaseRestore, DatabaseSnapshot,
    set_condition,
};

use crate::controller::{Context, Error, FIELD_MANAGER, apply, is_status};
use crate::report::{announce, bounded, publish};
use crate::status::{JobState, Observation, observe};
use crate::workloads::restore::{
    LABEL_RESTORE, restore_identity, restore_job, restore_job_name, role, role_binding, service_account,
};
use plan::{Named, Refusal};

/// A generation that cannot run yet (its backup not found) is looked at again this often.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
/// Restores are reconciled at least this often.
const RESYNC: Duration = Duration::from_secs(300);

/// What the restore reconciles share besides the operator's [`Context`].
struct Restores {
    context: Arc<Context>,
    /// The Jobs of all restores, by the `stowage.dev/restore` label.
    jobs: Store<Job>,
}

/// What makes a restore worth reconciling: its spec, its deletion, and the phase of the
/// runner's report, not its progress or the operator's own status writes.
fn reconcile_trigger(restore: &DatabaseRestore) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    restore.metadata.generation.hash(&mut hasher);
    restore.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    let attempt = restore.status.as_ref().and_then(|s| s.latest_attempt.as_ref());
    attempt.map(|a| (&a.job_uid, format!("{:?}", a.phase), &a.reason)).hash(&mut hasher);
    Some(hasher.finish())
}

/// Run the restore controller until a shutdown signal.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let (jobs, jobs_writer) = reflector::store();
    let (job_changes, changed_jobs) = futures::channel::mpsc::unbounded();
    let job_watch = watcher(Api::<Job>::all(client.clone()), watcher::Config::default().labels(LABEL_RESTORE))
        .default_backoff()
        .reflect(jobs_writer)
        .touched_objects()
        .for_each(move |job| {
            match job {
                Ok(job) => drop(job_changes.unbounded_send(Ok(job))),
                Err(error) => tracing::warn!(%error, "watching restore Jobs failed; retrying"),
            }
            std::future::ready(())
        });
    let job_watch = tokio::spawn(job_watch);
    if jobs.wait_until_ready().await.is_err() {
        tracing::error!("the restore Job cache stopped before it was complete");
        return;
    }
    let (store, writer) = reflector::store();
    let forget = Arc::clone(&context);
    let restores = watcher(Api::<DatabaseRestore>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(restore) = event {
                forget.forget(&restore.uid().unwrap_or_default());
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_trigger, Default::default());
    let shared = Arc::new(Restores { context, jobs });
    let _stop_job_watch = crate::controller::AbortOnDrop(job_watch);
    Controller::for_stream(restores, store)
        .watches_stream(changed_jobs, |job: Job| {
            let name = job.labels().get(LABEL_RESTORE)?.clone();
            Some(ObjectRef::new(&name).within(&job.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "deleted before its reconcile")
                }
                Err(error) => tracing::warn!(%error, "restore reconcile failed"),
            }
        })
        .await;
}

fn error_policy(_restore: Arc<DatabaseRestore>, error: &Error, shared: Arc<Restores>) -> Action {
    let telemetry = &shared.context.telemetry;
    telemetry.reconcile_errors.get_or_create(&vec![("error".into(), error.metric_label().into())]).inc();
    tracing::warn!(%error, label = error.metric_label(), "restore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

impl Restores {
    /// The Jobs of `restore`, from the cache (a Job of a deleted namesake is not its).
    fn jobs_of(&self, namespace: &str, restore: &DatabaseRestore) -> Vec<JobState> {
        let (name, uid) = (restore.name_any(), restore.uid());
        let ours = |job: &Job| {
            job.namespace().as_deref() == Some(namespace)
                && job.labels().get(LABEL_RESTORE) == Some(&name)
                && job.owner_references().iter().any(|owner| Some(&owner.uid) == uid.as_ref())
        };
        self.jobs.state().iter().filter(|job| ours(job)).filter_map(|job| JobState::of(job)).collect()
    }
}

/// Where a generation stands after this reconcile.
enum Progress {
    /// Its Job exists (or was just created).
    Started { job: String },
    /// It waits for the Job of an earlier generation.
    Waiting { job: String },
    /// It cannot run.
    Refused(Refusal),
}

async fn reconcile(restore: Arc<DatabaseRestore>, shared: Arc<Restores>) -> Result<Action, Error> {
    let context = &shared.context;
    context.telemetry.reconciles.inc();
    let namespace = restore.namespace().ok_or(Error::NoNamespace)?;
    let generation = restore.metadata.generation.unwrap_or_default();
    let status = restore.status.clone().unwrap_or_default();
    let jobs = shared.jobs_of(&namespace, &restore);
    let observation = observe("Restore", &jobs, status.latest_attempt.as_ref(), status.last_run.as_ref());
    let current = restore_job_name(&restore, generation);
    // Started: recorded, or created by a reconcile whose status write did not land.
    let progress = if status.run_generation == Some(generation) || jobs.iter().any(|job| job.name == current) {
        Progress::Started { job: current }
    } else if let Some(active) = &observation.active {
        Progress::Waiting { job: active.job.clone() }
    } else {
        start(context, &restore, &namespace, generation).await?
    };
    write_status(context, &restore, &namespace, generation, &observation, &progress).await?;
    if let Some(run) = &observation.last_run {
        announce(context, restore.as_ref(), status.last_run.as_ref(), run).await;
    }
    Ok(match progress {
        Progress::Refused(_) => Action::requeue(RETRY_REFUSED),
        _ => Action::requeue(RESYNC),
    })
}

/// Resolve the generation's plan and create its identity and Job.
async fn start(
    context: &Context,
    restore: &DatabaseRestore,
    namespace: &str,
    generation: i64,
) -> Result<Progress, Error> {
    let named = match named(context, restore, namespace).await? {
        Ok(named) => named,
        Err(refusal) => return Ok(Progress::Refused(refusal)),
    };
    let plan = match plan::plan(restore, namespace, &named) {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Progress::Refused(refusal)),
    };
    let client = &context.client;
    let identity = restore_identity(restore);
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
        "ServiceAccount",
        &identity,
        &service_account(restore),
    )
    .await?;
    apply(&Api::<Role>::namespaced(client.clone(), namespace), "Role", &identity, &role(restore, &plan)).await?;
    apply(&Api::<RoleBinding>::namespaced(client.clone(), namespace), "RoleBinding", &identity, &role_binding(restore))
        .await?;
    let job = restore_job(restore, generation, &plan, &context.settings).map_err(Error::Workload)?;
    let name = restore_job_name(restore, generation);
    let job: Job = serde_json::from_value(job)
        .map_err(|e| Error::CreateJob { name: name.clone(), source: kube::Error::SerdeError(e) })?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {
            let note = format!(
                "Created Job {name} restoring backup {} of {}/{} into {}/{}",
                plan.backup_id, plan.source_namespace, plan.database_backup, plan.database.endpoint, plan.database.name
            );
            publish(context, restore, EventType::Normal, "RestoreJobCreated", note).await;
        }
        // Created by an earlier reconcile whose status write did not land.
        Err(error) if is_status(&error, 409) => {}
        Err(source) => return Err(Error::CreateJob { name, source }),
    }
    Ok(Progress::Started { job: name })
}

/// The snapshot object or DatabaseBackup the restore names.
async fn named(context: &Context, restore: &DatabaseRestore, namespace: &str) -> Result<Result<Named, Refusal>, Error> {
    let client = &context.client;
    let read = |kind: &'static str, source: kube::Error| Error::Read { kind, source };
    if let Some(name) = &restore.spec.snapshot {
        let snapshots: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), namespace);
        return Ok(match snapshots.get_opt(name).await.map_err(|e| read("DatabaseSnapshot", e))? {
            Some(snapshot) => Ok(Named::Snapshot(Box::new(snapshot))),
            None => Err(Refusal::new(
                "BackupNotFound",
                format!("DatabaseSnapshot {name} does not exist in namespace {namespace}"),
            )),
        });
    }
    if let Some(selector) = &restore.spec.database_backup {
        let backups: Api<DatabaseBackup> = Api::namespaced(client.clone(), namespace);
        return Ok(match backups.get_opt(&selector.name).await.map_err(|e| read("DatabaseBackup", e))? {
            Some(backup) => Ok(Named::Backup(Box::new(backup))),
            None => Err(Refusal::new(
                "BackupNotFound",
                format!(
                    "DatabaseBackup {} does not exist in namespace {namespace}; its backups stay restorable \
                     through their DatabaseSnapshot objects",
                    selector.name
                ),
            )),
        });
    }
    Ok(Err(Refusal::new("InvalidSpec", "names no backup: set snapshot or databaseBackup")))
}

async fn write_status(
    context: &Context,
    restore: &DatabaseRestore,
    namespace: &str,
    generation: i64,
    observation: &Observation,
    progress: &Progress,
) -> Result<(), Error> {
    let status = restore.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = status.conditions.clone();
    let now = || Time(k8s_openapi::jiff::Timestamp::now());
    let mut set = |type_: &str, state: &str, reason: &str, message: &str| {
        let update = ConditionUpdate {
            type_,
            status: state,
            reason,
            message: bounded(message),
            observed_generation: Some(generation),
        };
        set_condition(&mut conditions, &update, now());
    };
    let (run_generation, job) = match progress {
        Progress::Started { job } => (Some(generation), Some(job.clone())),
        _ => (status.run_generation, status.job.clone()),
    };
    let finished = observation
        .last_run
        .as_ref()
        .filter(|run| Some(&run.job) == job.as_ref() && matches!(progress, Progress::Started { .. }));
    match (progress, finished) {
        (Progress::Refused(refusal), _) => set(CONDITION_SUCCEEDED, "False", refusal.reason, &refusal.message),
        (_, Some(run)) => {
            set(CONDITION_SUCCEEDED, if run.succeeded { "True" } else { "False" }, &run.reason, &run.message)
        }
        (Progress::Waiting { job }, _) => set(
            CONDITION_SUCCEEDED,
            "Unknown",
            "RestoreWaiting",
            &format!("generation {generation} waits for Job {job} of an earlier generation to finish"),
        ),
        (Progress::Started { job }, None) => {
            set(CONDITION_SUCCEEDED, "Unknown", "RestoreRunning", &format!("Job {job} restores"))
        }
    }
    match &observation.active {
        Some(active) => set(CONDITION_RUNNING, "True", "RestoreRunning", &active.message),
        None => set(CONDITION_RUNNING, "False", "Idle", "No restore is running"),
    }
    let patch = json!({
        "apiVersion": "stowage.dev/v1alpha1",
        "kind": "DatabaseRestore",
        "status": {
            "observedGeneration": generation,
            "conditions": conditions,
            "runGeneration": run_generation,
            "job": job,
            "lastRun": observation.last_run,
        }
    });
    let api: Api<DatabaseRestore> = Api::namespaced(context.client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&restore.name_any(), &params, &Patch::Apply(&patch)).await {
        Err(error) if is_status(&error, 404) => return Ok(()),
        Err(error) => return Err(Error::Status(error)),
        Ok(_) => {}
    }
    if let Progress::Refused(refusal) = progress {
        let previous = status.condition(CONDITION_SUCCEEDED).map(|c| (c.reason.as_str(), c.message.as_str()));
        if previous != Some((refusal.reason, bounded(&refusal.message))) {
            publish(context, restore, EventType::Warning, refusal.reason, refusal.message.clone()).await;
        }
    }
    Ok(())
}
