//! What the operator says about a resource: its status (conditions derived from the runs,
//! `lastRun`, `observedGeneration`), one Event per outcome or invalid spec, and its
//! per-resource metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use stowage_api::{
    CONDITION_READY, CONDITION_RUNNING, CONDITION_SUCCEEDED, CONDITION_VERIFIED, Conditions, DatabaseBackup,
    DrillOutcome, InvalidSpec, RunOutcome, Schedule, bounded_message,
};

use crate::controller::{Context, Error, apply_status};
use crate::status::Observation;
use crate::telemetry::{Labels, Telemetry};

/// The reason of `Ready=False` when the API server refuses a workload of a valid spec.
pub const WORKLOAD_REFUSED: &str = "WorkloadRefused";

/// What the triggers came to, for the status.
#[derive(Debug)]
pub struct Workloads {
    /// The manual trigger time a Job was created for.
    pub manual_time: Option<String>,
    /// A manual trigger waiting for the active run.
    pub queued: Option<String>,
    pub invalid: Option<InvalidSpec>,
    /// Why the API server refused a workload of a valid spec.
    pub refused: Option<String>,
}

/// Export the latest backup's outcome as metrics.
pub fn observe_outcome(telemetry: &Telemetry, labels: &Labels, backup: &DatabaseBackup) {
    let Some(status) = &backup.status else { return };
    if let Some(run) = &status.last_run {
        telemetry.backup_succeeded.get_or_create(labels).set(i64::from(run.succeeded));
    }
    if let Some(time) = status.last_backup.as_ref().and_then(|b| b.time.parse::<k8s_openapi::jiff::Timestamp>().ok()) {
        telemetry.last_success.get_or_create(labels).set(time.as_second());
    }
    let verified = status.last_verification.as_ref().filter(|drill| drill.verified);
    if let Some(time) = verified.and_then(|drill| drill.finished_at.parse::<k8s_openapi::jiff::Timestamp>().ok()) {
        telemetry.last_verified.get_or_create(labels).set(time.as_second());
    }
}

/// Export the longest interval of an active schedule, which the sample alert compares the
/// last backup's age with.
pub fn observe_schedule(telemetry: &Telemetry, labels: &Labels, backup: &DatabaseBackup) {
    let spec = &backup.spec;
    let interval = spec
        .scheduled_trigger
        .as_ref()
        .filter(|trigger| trigger.enabled && !spec.suspend)
        .and_then(|trigger| trigger.schedule.parse::<Schedule>().ok())
        .and_then(|schedule| schedule.longest_interval());
    match interval {
        Some(interval) => {
            telemetry
                .schedule_interval
                .get_or_create(labels)
                .set(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
        }
        None => {
            telemetry.schedule_interval.remove(labels);
        }
    }
}

pub async fn write_status(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    observation: &Observation,
    workloads: Workloads,
) -> Result<(), Error> {
    let generation = backup.metadata.generation;
    let status = backup.status.clone().unwrap_or_default();
    let mut conditions =
        Conditions::new(status.conditions.clone(), generation, Time(k8s_openapi::jiff::Timestamp::now()));
    // Why the resource is not ready, if it is not: an invalid spec before a refusal.
    let not_ready = match (&workloads.invalid, workloads.refused) {
        (Some(invalid), _) => Some(("InvalidSpec", invalid.to_string())),
        (None, refused) => refused.map(|message| (WORKLOAD_REFUSED, message)),
    };
    match &not_ready {
        Some((reason, message)) => conditions.set(CONDITION_READY, "False", reason, message),
        None => conditions.set(CONDITION_READY, "True", "Reconciled", "Runner identity, Jobs and CronJob are in place"),
    }
    if let Some(run) = &observation.last_run {
        conditions.set(CONDITION_SUCCEEDED, if run.succeeded { "True" } else { "False" }, &run.reason, &run.message);
    }
    match (&backup.spec.verification, &status.last_verification) {
        (Some(_), Some(drill)) => {
            let state = if drill.verified { "True" } else { "False" };
            conditions.set(
                CONDITION_VERIFIED,
                state,
                &drill.reason,
                &format!("{}: {}", drill.finished_at, drill.message),
            )
        }
        (Some(verification), None) => conditions.set(
            CONDITION_VERIFIED,
            "Unknown",
            "DrillPending",
            &format!("no restore drill has run yet (schedule {})", verification.schedule),
        ),
        (None, _) => conditions.remove(CONDITION_VERIFIED),
    }
    match (&observation.active, &workloads.queued) {
        (Some(active), None) => conditions.set(CONDITION_RUNNING, "True", "BackupRunning", &active.message),
        (Some(active), Some(queued)) => {
            conditions.set(CONDITION_RUNNING, "True", "BackupRunning", &format!("{}; {queued}", active.message))
        }
        (None, _) => conditions.set(CONDITION_RUNNING, "False", "Idle", "No backup is running"),
    }
    let plugin = backup.spec.plugin.source().ok().map(|source| source.to_string());
    let conditions = conditions.into_vec();
    // What the operator writes is what the resource says already: no request (a resync of
    // thousands of resources would otherwise write every status again).
    let unchanged = status.observed_generation == generation
        && status.plugin == plugin
        && status.last_run == observation.last_run
        && status.manual_trigger_time == workloads.manual_time
        && status.conditions.len() == conditions.len()
        && conditions.iter().all(|condition| status.conditions.contains(condition));
    if !unchanged {
        let patch = json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseBackup",
            "status": {
                "observedGeneration": generation,
                "plugin": plugin,
                "conditions": conditions,
                "lastRun": observation.last_run,
                "manualTriggerTime": workloads.manual_time,
            }
        });
        let api: Api<DatabaseBackup> = Api::namespaced(context.client.clone(), namespace);
        if !apply_status(&api, &backup.name_any(), &patch).await? {
            // Deleted meanwhile: there is nothing left to say.
            return Ok(());
        }
    }
    // One Event per new reason not to be ready, not one per retry.
    if let Some((reason, message)) = not_ready {
        let was = status.condition(CONDITION_READY).filter(|c| c.reason == reason).map(|c| &c.message);
        if was.is_none_or(|was| bounded_message(&message) != was.as_str()) {
            publish(context, backup, EventType::Warning, reason, message).await;
        }
    }
    if let Some(run) = &observation.last_run {
        announce(context, backup, status.last_run.as_ref(), run).await;
        observe_run(context, backup, run);
    }
    if let Some(drill) = status.last_verification.as_ref().filter(|_| backup.spec.verification.is_some()) {
        // Recorded before (by an earlier process, say): announced already.
        let recorded = status
            .condition(CONDITION_VERIFIED)
            .is_some_and(|c| c.reason == drill.reason && c.message.starts_with(&format!("{}: ", drill.finished_at)));
        if !recorded {
            announce_drill(context, backup, drill).await;
        }
    }
    Ok(())
}

/// One Event per outcome: when `lastRun` of `object` (a DatabaseBackup or
/// DatabaseRestore) moves to another run or another reason.
pub(crate) async fn announce<K>(context: &Context, object: &K, recorded: Option<&RunOutcome>, run: &RunOutcome)
where
    K: Resource<DynamicType = ()>,
{
    let key = (run.job_uid.clone(), run.reason.clone());
    if recorded.is_some_and(|recorded| (&recorded.job_uid, &recorded.reason) == (&key.0, &key.1)) {
        return;
    }
    let uid = object.uid().unwrap_or_default();
    let first = match context.announced.lock() {
        Ok(mut announced) => announced.insert(uid, key.clone()).as_ref() != Some(&key),
        Err(_) => true,
    };
    if !first {
        return;
    }
    let kind = if run.succeeded { EventType::Normal } else { EventType::Warning };
    publish(context, object, kind, &run.reason, format!("Job {}: {}", run.job, run.message)).await;
}

/// One Event per restore drill, the first time this process sees its outcome.
async fn announce_drill(context: &Context, backup: &DatabaseBackup, drill: &DrillOutcome) {
    let key = (format!("drill:{}", drill.finished_at), drill.reason.clone());
    let first = match context.announced.lock() {
        Ok(mut announced) => {
            let uid = format!("{}/drill", backup.uid().unwrap_or_default());
            announced.insert(uid, key.clone()).as_ref() != Some(&key)
        }
        Err(_) => true,
    };
    if first {
        let kind = if drill.verified { EventType::Normal } else { EventType::Warning };
        publish(context, backup, kind, &drill.reason, format!("Restore drill: {}", drill.message)).await;
    }
}

/// Record the duration and size of a successful run announced by this process, once,
/// at the first reconcile that has both the Job's outcome and the runner's report of
/// it (they arrive in either order).
fn observe_run(context: &Context, backup: &DatabaseBackup, run: &RunOutcome) {
    let Some(status) = backup.status.as_ref() else { return };
    let reported = status.latest_attempt.as_ref().is_some_and(|a| a.job_uid == run.job_uid && a.finished());
    let (true, true, Some(last)) = (run.succeeded, reported, status.last_backup.as_ref()) else { return };
    let uid = backup.uid().unwrap_or_default();
    let announced_here = context
        .announced
        .lock()
        .is_ok_and(|announced| announced.get(&uid).is_some_and(|(job_uid, _)| *job_uid == run.job_uid));
    let first = announced_here
        && context
            .observed
            .lock()
            .is_ok_and(|mut observed| observed.insert(uid, run.job_uid.clone()).as_ref() != Some(&run.job_uid));
    if !first {
        return;
    }
    context.export(backup, |telemetry, labels| {
        telemetry.backup_duration.get_or_create(labels).observe(last.duration_seconds);
        telemetry.backup_stored_bytes.get_or_create(labels).observe(last.stored_bytes as f64);
    });
}

/// Publish an Event about `object` (a DatabaseBackup or DatabaseRestore).
pub async fn publish<K>(context: &Context, object: &K, type_: EventType, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let note = bounded_message(&note).to_owned();
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(error) = context.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an event");
    }
}
