//! The reconcile loop: one DatabaseBackup in, its runner identity, Jobs, CronJob and
//! status out. Everything is applied with server-side apply under one field manager, so
//! reconciling is idempotent and drift is corrected.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersion;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use stowage_api::{CONDITION_READY, CONDITION_SUCCEEDED, ConditionUpdate, DatabaseBackup, set_condition};

use crate::telemetry::{Telemetry, resource_labels};
use crate::workloads::{
    InvalidSpec, LABEL_BACKUP, WorkloadSettings, cronjob, cronjob_name, manual_job, role, role_binding,
    runner_identity, service_account,
};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "stowage-operator";
/// Resources are reconciled at least this often, which also repairs edited workloads.
const RESYNC: Duration = Duration::from_secs(300);

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
    #[error("listing Jobs: {0}")]
    ListJobs(kube::Error),
    #[error("writing status: {0}")]
    Status(kube::Error),
    #[error("the API server serves no CronJob in batch/v1 or batch/v1beta1")]
    NoCronJobApi,
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoNamespace => "no_namespace",
            Error::Apply { .. } => "apply",
            Error::CreateJob { .. } => "create_job",
            Error::DeleteCronJob { .. } => "delete_cronjob",
            Error::ListJobs(_) => "list_jobs",
            Error::Status(_) => "status",
            Error::NoCronJobApi => "no_cronjob_api",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: WorkloadSettings,
    /// CronJob in the newest batch version the API server serves.
    pub cronjob_api: ApiResource,
    pub recorder: Recorder,
    pub telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("cronjob_api", &self.cronjob_api.api_version).finish_non_exhaustive()
    }
}

impl Context {
    /// Discover the CronJob version and prepare the event recorder.
    pub async fn new(
        client: Client,
        settings: WorkloadSettings,
        identity: &str,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, Error> {
        let cronjob_api = discover_cronjob(&client).await?;
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.to_owned()) };
        let recorder = Recorder::new(client.clone(), reporter);
        Ok(Context { client, settings, cronjob_api, recorder, telemetry })
    }
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

/// Run the controller until a shutdown signal.
pub async fn run(context: Context) {
    let client = context.client.clone();
    let backups: Api<DatabaseBackup> = Api::all(client.clone());
    // Jobs of scheduled runs belong to their CronJob, so map Jobs back by label.
    let jobs: Api<Job> = Api::all(client);
    Controller::new(backups, watcher::Config::default())
        .watches(jobs, watcher::Config::default().labels(LABEL_BACKUP), |job| {
            let name = job.labels().get(LABEL_BACKUP)?.clone();
            Some(ObjectRef::new(&name).within(&job.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(context))
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(_backup: Arc<DatabaseBackup>, error: &Error, context: Arc<Context>) -> Action {
    context.telemetry.reconcile_errors.get_or_create(&vec![("error".into(), error.metric_label().into())]).inc();
    tracing::warn!(%error, label = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn apply<K>(api: &Api<K>, kind: &'static str, name: &str, value: &Value) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value))
        .await
        .map(|_| ())
        .map_err(|source| Error::Apply { kind, name: name.to_owned(), source })
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Bring one resource's workloads and status in line with its spec.
pub async fn reconcile(backup: Arc<DatabaseBackup>, context: Arc<Context>) -> Result<Action, Error> {
    context.telemetry.reconciles.inc();
    let namespace = backup.namespace().ok_or(Error::NoNamespace)?;
    observe_outcome(&context.telemetry, &namespace, &backup);
    let client = &context.client;
    let identity = runner_identity(&backup);
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
        "ServiceAccount",
        &identity,
        &service_account(&backup),
    )
    .await?;
    apply(&Api::<Role>::namespaced(client.clone(), &namespace), "Role", &identity, &role(&backup)).await?;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), &namespace),
        "RoleBinding",
        &identity,
        &role_binding(&backup),
    )
    .await?;

    let spec = &backup.spec;
    let status = backup.status.clone().unwrap_or_default();
    let mut invalid: Option<InvalidSpec> = None;
    let mut manual_time = status.manual_trigger_time.clone();
    if let Some(trigger) = spec.manual_trigger.as_ref().filter(|t| t.enabled && !spec.suspend)
        && let Some(time) = trigger.time.as_ref().filter(|time| manual_time.as_ref() != Some(*time))
    {
        match manual_job(&backup, time, &trigger.repo, &context.settings) {
            Ok(job) => {
                let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
                let job: Job = serde_json::from_value(job)
                    .map_err(|e| Error::CreateJob { name: time.clone(), source: kube::Error::SerdeError(e) })?;
                let name = job.name_any();
                let handled = match jobs.create(&PostParams::default(), &job).await {
                    Ok(_) => {
                        context.telemetry.jobs_created.get_or_create(&vec![("trigger".into(), "manual".into())]).inc();
                        publish(
                            &context,
                            &backup,
                            EventType::Normal,
                            "BackupJobCreated",
                            format!("Created Job {name} for manual trigger time {time}"),
                        )
                        .await;
                        true
                    }
                    // The Job of this time exists: it ran or runs already, never twice; but
                    // only if it is this resource's (a Job made by hand could take the name).
                    Err(error) if is_status(&error, 409) => {
                        let existing =
                            jobs.get(&name).await.map_err(|source| Error::CreateJob { name: name.clone(), source })?;
                        let ours =
                            existing.owner_references().iter().any(|owner| Some(&owner.uid) == backup.uid().as_ref());
                        if !ours {
                            invalid = Some(InvalidSpec(format!(
                                "Job {name} exists but does not belong to this DatabaseBackup: delete it, \
                                 or change manualTrigger.time"
                            )));
                        }
                        ours
                    }
                    Err(source) => return Err(Error::CreateJob { name, source }),
                };
                if handled {
                    manual_time = Some(time.clone());
                }
            }
            Err(error) => invalid = Some(error),
        }
    }

    let cronjobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &context.cronjob_api);
    let cron_name = cronjob_name(&backup);
    match spec.scheduled_trigger.as_ref().filter(|t| t.enabled && !spec.suspend) {
        Some(trigger) => {
            match cronjob(
                &backup,
                &trigger.schedule,
                &trigger.repo,
                &context.cronjob_api.api_version,
                &context.settings,
            ) {
                Ok(value) => apply(&cronjobs, "CronJob", &cron_name, &value).await?,
                Err(error) => invalid = Some(error),
            }
        }
        None => match cronjobs.delete(&cron_name, &DeleteParams::background()).await {
            Ok(_) => {
                publish(&context, &backup, EventType::Normal, "CronJobDeleted", format!("Deleted CronJob {cron_name}"))
                    .await
            }
            Err(error) if is_status(&error, 404) => {}
            Err(source) => return Err(Error::DeleteCronJob { name: cron_name, source }),
        },
    }

    let failure = unreported_failure(client, &namespace, &backup).await?;
    write_status(&context, &backup, &namespace, invalid.as_ref(), failure.as_ref(), manual_time).await?;
    Ok(Action::requeue(RESYNC))
}

/// Export the latest backup's outcome, as the runner reported it, as metrics.
fn observe_outcome(telemetry: &Telemetry, namespace: &str, backup: &DatabaseBackup) {
    let Some(status) = &backup.status else { return };
    let labels = resource_labels(namespace, &backup.name_any());
    if let Some(condition) = status.conditions.iter().find(|c| c.type_ == CONDITION_SUCCEEDED && c.status != "Unknown")
    {
        telemetry.backup_succeeded.get_or_create(&labels).set(i64::from(condition.status == "True"));
    }
    if let Some(time) = status.last_backup.as_ref().and_then(|b| b.time.parse::<k8s_openapi::jiff::Timestamp>().ok()) {
        telemetry.last_success.get_or_create(&labels).set(time.as_second());
    }
}

/// A failed Job of this resource whose runner did not report (deadline exceeded, backoff
/// limit, a Pod that never started): the reason and message for `Succeeded`.
async fn unreported_failure(
    client: &Client,
    namespace: &str,
    backup: &DatabaseBackup,
) -> Result<Option<(String, String)>, Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{LABEL_BACKUP}={}", backup.name_any());
    let listed = jobs.list(&ListParams::default().labels(&selector)).await.map_err(Error::ListJobs)?;
    let Some(newest) = listed.items.iter().max_by_key(|job| job.metadata.creation_timestamp.clone()) else {
        return Ok(None);
    };
    let job_status = newest.status.clone().unwrap_or_default();
    let Some(failed) =
        job_status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Failed" && c.status == "True")
    else {
        return Ok(None);
    };
    let started = job_status.start_time.or(newest.metadata.creation_timestamp.clone());
    let reported =
        backup.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_SUCCEEDED)).is_some_and(
            |c| c.status != "Unknown" && started.as_ref().is_none_or(|started| c.last_transition_time >= *started),
        );
    if reported {
        return Ok(None);
    }
    let reason = format!("Job{}", failed.reason.unwrap_or_else(|| "Failed".into()));
    let message = format!(
        "Job {} failed without a report from the runner: {}",
        newest.name_any(),
        failed.message.unwrap_or_default()
    );
    Ok(Some((reason, message)))
}

async fn write_status(
    context: &Context,
    backup: &DatabaseBackup,
    namespace: &str,
    invalid: Option<&InvalidSpec>,
    failure: Option<&(String, String)>,
    manual_time: Option<String>,
) -> Result<(), Error> {
    let generation = backup.metadata.generation;
    let mut conditions: Vec<Condition> = backup.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let now = || Time(k8s_openapi::jiff::Timestamp::now());
    let ready = match invalid {
        Some(error) => ConditionUpdate {
            type_: CONDITION_READY,
            status: "False",
            reason: "InvalidSpec",
            message: &error.0,
            observed_generation: generation,
        },
        None => ConditionUpdate {
            type_: CONDITION_READY,
            status: "True",
            reason: "Reconciled",
            message: "Runner identity, Jobs and CronJob are in place",
            observed_generation: generation,
        },
    };
    set_condition(&mut conditions, &ready, now());
    let mut ours = vec![CONDITION_READY];
    if let Some((reason, message)) = failure {
        let update = ConditionUpdate {
            type_: CONDITION_SUCCEEDED,
            status: "False",
            reason,
            message,
            observed_generation: generation,
        };
        set_condition(&mut conditions, &update, now());
        ours.push(CONDITION_SUCCEEDED);
        publish(context, backup, EventType::Warning, reason, message.clone()).await;
    }
    let conditions: Vec<&Condition> = conditions.iter().filter(|c| ours.contains(&c.type_.as_str())).collect();
    let patch = json!({
        "apiVersion": "stowage.dev/v1alpha1",
        "kind": "DatabaseBackup",
        "status": {"observedGeneration": generation, "conditions": conditions, "manualTriggerTime": manual_time}
    });
    let api: Api<DatabaseBackup> = Api::namespaced(context.client.clone(), namespace);
    match api.patch_status(&backup.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
    {
        // Deleted meanwhile: there is no status left to write.
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => Err(Error::Status(error)),
        Ok(_) => Ok(()),
    }
}

async fn publish(context: &Context, backup: &DatabaseBackup, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(error) = context.recorder.publish(&event, &backup.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an event");
    }
}
