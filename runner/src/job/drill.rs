//! `stowage drill-job`: the entry point of a DatabaseBackup's drill CronJob. Restores the
//! newest backup of the spec's verification repository into the scratch database (with
//! replace), compares the counts (see [`crate::drill`]), and writes the outcome into the
//! DatabaseBackup's `lastVerification` and the backup's DatabaseSnapshot `status`. It never
//! writes `latestAttempt`: a drill is not a backup run.

use std::sync::Arc;

use kube::{Api, Client};
use serde_json::json;
use stowage_api::{DatabaseBackup, DatabaseSnapshot, DrillOutcome, snapshot_name};
use tokio_util::sync::CancellationToken;

use super::inputs::{database_target, identities, load_plugin, storage};
use super::status::{merge_status_retrying, now_rfc3339};
use super::{JobError, JobInputs, invalid_spec, run_limits, run_spec};
use crate::drill::run_drill;
use crate::plugin::PluginEngine;
use crate::repository::Repository;
use crate::restore::RestoreRequest;

/// Run the drill and report it; a drill that did not pass is an error (the Job fails).
pub async fn run_drill_job(inputs: JobInputs, interrupt: CancellationToken) -> Result<DrillOutcome, JobError> {
    let name = inputs.resource_name.clone().ok_or(JobError::MissingEnvironment("BACKUP_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let outcome = match drill(&name, &namespace, &inputs, &interrupt).await {
        Ok(outcome) => outcome,
        // Inputs that keep any drill from starting are reported like a failed one.
        Err(error) => DrillOutcome {
            reason: error.reason().to_owned(),
            message: error.to_string(),
            finished_at: now_rfc3339(),
            ..DrillOutcome::default()
        },
    };
    let backups: Api<DatabaseBackup> = Api::namespaced(client.clone(), &namespace);
    merge_status_retrying(&backups, &name, json!({"lastVerification": outcome})).await?;
    if let Some(backup_id) = &outcome.backup_id {
        let snapshots: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), &namespace);
        let snapshot = snapshot_name(&name, backup_id);
        if let Err(error) = merge_status_retrying(&snapshots, &snapshot, json!({"verification": outcome})).await {
            tracing::warn!(%error, %snapshot, "the drill is reported, but not on the snapshot object");
        }
    }
    if outcome.verified { Ok(outcome) } else { Err(JobError::Drill(outcome.message)) }
}

async fn drill(
    name: &str,
    namespace: &str,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
) -> Result<DrillOutcome, JobError> {
    let spec = run_spec(inputs)?;
    spec.validate().map_err(invalid_spec)?;
    let repo = spec.verification_repo().map_err(invalid_spec)?;
    let (location, s3) = storage(repo, namespace, inputs)?;
    let scratch = spec.drill_target();
    let identities = identities(inputs)?;
    let target = format!("{}/{}", scratch.endpoint, scratch.name);
    let engine = PluginEngine::new(inputs.cache_dir.clone())
        .map_err(|e| JobError::invalid("RunnerFailed", format!("cannot start the WebAssembly engine: {e:#}")))?;
    let plugin = load_plugin(&engine, &spec.plugin, inputs).await?;
    let repository = Repository::open(&location, &s3).await;
    let request = RestoreRequest {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        backup: "latest".into(),
        database: database_target(&scratch, inputs)?,
        limits: run_limits(spec.limits.as_ref(), interrupt)?,
        identities: Arc::new(identities),
        replace_existing: true,
        allow_other_plugin: false,
        progress: Arc::default(),
    };
    let report = run_drill(&plugin, &repository, &request).await;
    Ok(DrillOutcome {
        backup_id: report.backup_id.clone(),
        repo: repo.name.clone(),
        target: target.clone(),
        verified: report.verdict.passed(),
        reason: report.verdict.reason().to_owned(),
        message: report.message(&target),
        compared: report.compared.clone(),
        finished_at: now_rfc3339(),
        duration_seconds: report.duration_seconds as f64,
    })
}
