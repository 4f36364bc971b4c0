//! Resources that run one Job per generation (DatabaseRestore, DatabaseSnapshotImport):
//! each generation is prepared once (resolved into the Job it runs and the runner's
//! identity), run as one Job of the locked-down runner, and reported in the status:
//! `Succeeded` (True, or False with the reason of the failure site), `Running`, the Job's
//! outcome in `lastRun`. A generation that cannot run says why and runs nothing; an edit
//! while a Job runs waits for it, so two runs of one resource never overlap.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stowage_api::{
    CONDITION_RUNNING, CONDITION_SUCCEEDED, Conditions, OneShotRuns, bounded_message, name_fits_a_label,
};

use crate::controller::{AbortOnDrop, Context, Error, apply_status, is_status, watch_jobs};
use crate::identity::apply_identity;
use crate::report::{announce, publish};
use crate::status::{JobState, Observation, observe};
use crate::workloads::one_shot_job_name;

/// A generation that cannot run yet (its backup not found, say) is looked at again this often.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
/// Resources are reconciled at least this often.
const RESYNC: Duration = Duration::from_secs(300);

/// A resource that runs one Job per generation.
pub trait OneShot:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// What a run does, the first word of its reasons (`Restore`, `Import`).
    const WORK: &'static str;
    /// The label on its Jobs, valued with the resource's name.
    const LABEL: &'static str;

    /// What the status records of runs.
    fn runs(&self) -> Option<&OneShotRuns>;

    /// The identity and Job of `generation`, or why none can run.
    fn prepare(
        context: &Context,
        object: &Self,
        namespace: &str,
        generation: i64,
    ) -> impl Future<Output = Result<Result<Prepared, Refusal>, Error>> + Send;
}

/// What one generation runs.
#[derive(Debug)]
pub struct Prepared {
    pub service_account: Value,
    pub role_binding: Value,
    pub job: Value,
    /// The Event announcing the Job, after "Created Job NAME".
    pub note: String,
}

/// Why no Job can run for a generation: the `Succeeded` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal { reason, message: message.into() }
    }
}

/// What the reconciles of one kind share besides the operator's [`Context`].
struct Shared {
    context: Arc<Context>,
    /// The Jobs of all resources of the kind, by its label.
    jobs: Store<Job>,
}

/// What makes a resource worth reconciling: its spec, its deletion, and the phase of the
/// runner's report, not its progress or the operator's own status writes.
fn reconcile_trigger<K: OneShot>(object: &K) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    object.meta().generation.hash(&mut hasher);
    object.meta().deletion_timestamp.is_some().hash(&mut hasher);
    let attempt = object.runs().and_then(|runs| runs.latest_attempt.as_ref());
    attempt.map(|a| (&a.job_uid, format!("{:?}", a.phase), &a.reason)).hash(&mut hasher);
    Some(hasher.finish())
}

/// Run the controller of kind `K` until a shutdown signal.
pub async fn run<K: OneShot>(context: Arc<Context>) {
    let (jobs, jobs_writer) = reflector::store();
    let (changed_jobs, job_watch) = watch_jobs(context.watched(), K::LABEL, jobs_writer);
    if jobs.wait_until_ready().await.is_err() {
        tracing::error!(kind = %K::kind(&()), "the Job cache stopped before it was complete");
        return;
    }
    let (store, writer) = reflector::store();
    let forget = Arc::clone(&context);
    let objects = watcher(context.watched::<K>(), watcher::Config::default())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(object) = event {
                forget.forget(&object.uid().unwrap_or_default());
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_trigger::<K>, Default::default());
    let shared = Arc::new(Shared { context, jobs });
    let _stop_job_watch = AbortOnDrop(job_watch);
    Controller::for_stream(objects, store)
        .watches_stream(changed_jobs, |job: Job| {
            let name = job.labels().get(K::LABEL)?.clone();
            Some(ObjectRef::new(&name).within(&job.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, shared)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "deleted before its reconcile")
                }
                Err(error) => tracing::warn!(%error, kind = %K::kind(&()), "reconcile failed"),
            }
        })
        .await;
}

fn error_policy<K: OneShot>(_object: Arc<K>, error: &Error, shared: Arc<Shared>) -> Action {
    let telemetry = &shared.context.telemetry;
    telemetry.reconcile_errors.get_or_create(&vec![("error".into(), error.metric_label().into())]).inc();
    tracing::warn!(%error, label = error.metric_label(), kind = %K::kind(&()), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

impl Shared {
    /// The Jobs of `object`, from the cache (a Job of a deleted namesake is not its).
    fn jobs_of<K: OneShot>(&self, namespace: &str, object: &K) -> Vec<JobState> {
        let (name, uid) = (object.name_any(), object.uid());
        let ours = |job: &Job| {
            job.namespace().as_deref() == Some(namespace)
                && job.labels().get(K::LABEL) == Some(&name)
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

async fn reconcile<K: OneShot>(object: Arc<K>, shared: Arc<Shared>) -> Result<Action, Error> {
    let context = &shared.context;
    context.telemetry.reconciles.inc();
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    if object.meta().deletion_timestamp.is_some() {
        // Being deleted: no Job is started for it, and the garbage collector ends its own.
        return Ok(Action::await_change());
    }
    let generation = object.meta().generation.unwrap_or_default();
    let runs = object.runs().cloned().unwrap_or_default();
    let jobs = shared.jobs_of(&namespace, object.as_ref());
    let observation = observe(K::WORK, &jobs, runs.latest_attempt.as_ref(), runs.last_run.as_ref());
    let current = one_shot_job_name(&object.name_any(), &object.uid().unwrap_or_default(), K::WORK, generation);
    // Started: recorded, or created by a reconcile whose status write did not land.
    let progress = if runs.run_generation == Some(generation) || jobs.iter().any(|job| job.name == current) {
        Progress::Started { job: current }
    } else if let Some(active) = &observation.active {
        Progress::Waiting { job: active.job.clone() }
    } else {
        start(context, object.as_ref(), &namespace, generation, current).await?
    };
    write_status(context, object.as_ref(), &namespace, generation, &runs, &observation, &progress).await?;
    if let Some(run) = &observation.last_run {
        announce(context, object.as_ref(), runs.last_run.as_ref(), run).await;
    }
    Ok(match progress {
        Progress::Refused(_) => Action::requeue(RETRY_REFUSED),
        _ => Action::requeue(RESYNC),
    })
}

/// Prepare the generation and create its identity and Job.
async fn start<K: OneShot>(
    context: &Context,
    object: &K,
    namespace: &str,
    generation: i64,
    name: String,
) -> Result<Progress, Error> {
    if let Err(error) = name_fits_a_label(&object.name_any()) {
        return Ok(Progress::Refused(Refusal::new("InvalidSpec", error.to_string())));
    }
    let prepared = match K::prepare(context, object, namespace, generation).await? {
        Ok(prepared) => prepared,
        Err(refusal) => return Ok(Progress::Refused(refusal)),
    };
    let client = &context.client;
    let identity = prepared.service_account["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let account = Some((identity.as_str(), &prepared.service_account));
    apply_identity(client, namespace, account, (&identity, &prepared.role_binding)).await?;
    let job: Job = serde_json::from_value(prepared.job)
        .map_err(|e| Error::CreateJob { name: name.clone(), source: kube::Error::SerdeError(e) })?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {
            let note = format!("Created Job {name} {}", prepared.note);
            publish(context, object, EventType::Normal, &format!("{}JobCreated", K::WORK), note).await;
        }
        // Created by an earlier reconcile whose status write did not land.
        Err(error) if is_status(&error, 409) => {}
        Err(source) => return Err(Error::CreateJob { name, source }),
    }
    Ok(Progress::Started { job: name })
}

async fn write_status<K: OneShot>(
    context: &Context,
    object: &K,
    namespace: &str,
    generation: i64,
    runs: &OneShotRuns,
    observation: &Observation,
    progress: &Progress,
) -> Result<(), Error> {
    let work = K::WORK;
    let mut conditions =
        Conditions::new(runs.conditions.clone(), Some(generation), Time(k8s_openapi::jiff::Timestamp::now()));
    let (run_generation, job) = match progress {
        Progress::Started { job } => (Some(generation), Some(job.clone())),
        _ => (runs.run_generation, runs.job.clone()),
    };
    let finished = match progress {
        Progress::Started { job } => observation.last_run.as_ref().filter(|run| &run.job == job),
        _ => None,
    };
    match (progress, finished) {
        (Progress::Refused(refusal), _) => {
            conditions.set(CONDITION_SUCCEEDED, "False", refusal.reason, &refusal.message)
        }
        (_, Some(run)) => {
            conditions.set(CONDITION_SUCCEEDED, if run.succeeded { "True" } else { "False" }, &run.reason, &run.message)
        }
        (Progress::Waiting { job }, _) => conditions.set(
            CONDITION_SUCCEEDED,
            "Unknown",
            &format!("{work}Waiting"),
            &format!("generation {generation} waits for Job {job} of an earlier generation to finish"),
        ),
        (Progress::Started { job }, None) => {
            conditions.set(CONDITION_SUCCEEDED, "Unknown", &format!("{work}Running"), &format!("Job {job} runs"))
        }
    }
    match &observation.active {
        Some(active) => conditions.set(CONDITION_RUNNING, "True", &format!("{work}Running"), &active.message),
        None => conditions.set(CONDITION_RUNNING, "False", "Idle", &format!("No {} runs", work.to_lowercase())),
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": {
            "observedGeneration": generation,
            "conditions": conditions.into_vec(),
            "runGeneration": run_generation,
            "job": job,
            "lastRun": observation.last_run,
        }
    });
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    if !apply_status(&api, &object.name_any(), &patch).await? {
        return Ok(());
    }
    if let Progress::Refused(refusal) = progress {
        let previous = runs.condition(CONDITION_SUCCEEDED).map(|c| (c.reason.as_str(), c.message.as_str()));
        if previous != Some((refusal.reason, bounded_message(&refusal.message))) {
            publish(context, object, EventType::Warning, refusal.reason, refusal.message.clone()).await;
        }
    }
    Ok(())
}
