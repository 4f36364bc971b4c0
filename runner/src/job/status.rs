//! The runner's part of a resource's status: `latestAttempt` (progress, then the
//! outcome with a reason per failure site) and, on success, one field of the run's result
//! (`lastBackup` of a DatabaseBackup, `restored` of a DatabaseRestore). Written with merge
//! patches: the runner never reads the resource, and never touches the operator's fields.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stowage_api::{Attempt, AttemptPhase};

use super::{JobError, JobInputs};

/// The field manager of the runner's status writes.
const FIELD_MANAGER: &str = "stowage-runner";
/// Attempts of a status write, with doubling pauses from one second: the outcome of a
/// run must reach the resource through API server restarts and conflicts.
const STATUS_ATTEMPTS: u32 = 5;

/// Writes one resource's runner status.
#[derive(Clone)]
pub(super) struct StatusWriter<K: Clone> {
    api: Api<K>,
    name: String,
    /// What runs: `Backup` or `Restore`, the first word of every reason written.
    work: &'static str,
    attempt: Attempt,
    /// The result field an earlier run wrote, cleared while this one has none.
    clears: Option<&'static str>,
}

impl<K> StatusWriter<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    pub(super) fn new(api: Api<K>, name: &str, work: &'static str, inputs: &JobInputs) -> Self {
        let now = now_rfc3339();
        let attempt = Attempt {
            job: inputs.job_name.clone().unwrap_or_default(),
            job_uid: inputs.job_uid.clone().unwrap_or_default(),
            pod: inputs.pod_name.clone().unwrap_or_default(),
            generation: inputs.generation,
            phase: AttemptPhase::Running,
            reason: format!("{work}Starting"),
            message: "Loading the plugin".into(),
            started_at: now.clone(),
            finished_at: None,
            permanent: false,
            bytes: 0,
            updated: now,
        };
        StatusWriter { api, name: name.to_owned(), work, attempt, clears: None }
    }

    /// Clear `field` (the result of an earlier run) with every write until this run has its own.
    pub(super) fn clearing(mut self, field: &'static str) -> Self {
        self.clears = Some(field);
        self
    }

    fn status(&self, result: Option<(&str, &Value)>) -> Value {
        let mut status = json!({"latestAttempt": self.attempt});
        match (result, self.clears) {
            (Some((field, value)), _) => status[field] = value.clone(),
            (None, Some(field)) => status[field] = Value::Null,
            (None, None) => {}
        }
        status
    }

    async fn write(&self, result: Option<(&str, &Value)>) -> Result<(), kube::Error> {
        merge_status(&self.api, &self.name, self.status(result)).await
    }

    /// [`write`](Self::write), retried with backoff.
    async fn write_retrying(&self, result: Option<(&str, &Value)>) -> Result<(), kube::Error> {
        merge_status_retrying(&self.api, &self.name, self.status(result)).await
    }

    pub(super) async fn running(&mut self, message: String, bytes: u64) -> Result<(), kube::Error> {
        self.attempt.reason = format!("{}Running", self.work);
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

    /// Report success, with the run's result in status field `field`.
    pub(super) async fn succeeded(
        &mut self,
        message: String,
        bytes: u64,
        field: &str,
        result: &Value,
    ) -> Result<(), kube::Error> {
        self.finish(AttemptPhase::Succeeded, &format!("{}Succeeded", self.work), message);
        self.attempt.bytes = bytes;
        self.write_retrying(Some((field, result))).await
    }

    pub(super) async fn failed(&mut self, error: &JobError) {
        self.finish(AttemptPhase::Failed, error.reason(), error.to_string());
        self.attempt.permanent = error.permanent();
        if let Err(status_error) = self.write_retrying(None).await {
            tracing::error!(%status_error, "cannot write the failure to the status");
        }
    }
}

/// Merge `status` into the status of `name`.
async fn merge_status<K>(api: &Api<K>, name: &str, status: Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    api.patch_status(name, &params, &Patch::Merge(json!({"status": status}))).await?;
    Ok(())
}

/// [`merge_status`], retried with backoff.
pub(super) async fn merge_status_retrying<K>(api: &Api<K>, name: &str, status: Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut pause = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match merge_status(api, name, status.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= STATUS_ATTEMPTS => return Err(error),
            Err(error) => tracing::warn!(%error, attempt, "cannot write the status; trying again"),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// A time as the statuses write it: RFC 3339 in whole seconds, UTC.
pub(super) fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}
