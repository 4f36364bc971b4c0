//! `stowage restore-job`: the entry point of a DatabaseRestore's Job. Restores exactly the
//! [`RestorePlan`] the operator wrote into the Job (`STOWAGE_RESTORE_PLAN`: repository,
//! backup, plugin and target, resolved once), and reports in the resource's status:
//! `latestAttempt` (progress: bytes read and the artifact being read; then the outcome
//! with a reason per failure site) and, once restored, `restored`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kube::{Api, Client};
use stowage_api::{DatabaseRestore, RestorePlan, Restored};
use tokio_util::sync::CancellationToken;

use super::inputs::{database_target, identities, load_plugin, storage};
use super::status::{StatusWriter, rfc3339};
use super::{JobError, JobInputs, invalid_spec, report_progress, run_limits};
use crate::plugin::{PluginEngine, RestoreProgress};
use crate::repository::Repository;
use crate::restore::{RestoreRequest, run_restore};

/// The longest attribute value copied into the status.
const MAX_ATTRIBUTE_VALUE: usize = 256;

/// Run the Job: restore and report. Errors are also written to the status where the
/// resource can be reached.
pub async fn run_restore_job(inputs: JobInputs, interrupt: CancellationToken) -> Result<Restored, JobError> {
    let name = inputs.one_shot_name.clone().ok_or(JobError::MissingEnvironment("STOWAGE_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let api = Api::namespaced(client.clone(), &namespace);
    let mut status = StatusWriter::new(api, &name, "Restore", &inputs).clearing("restored");
    let result = match restore_plan(&inputs) {
        Ok(plan) => restore(&plan, &inputs, &interrupt, &mut status).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        status.failed(error).await;
    }
    result
}

/// The plan the Job was created with.
fn restore_plan(inputs: &JobInputs) -> Result<RestorePlan, JobError> {
    let text = inputs.restore_plan.as_deref().ok_or(JobError::MissingEnvironment("STOWAGE_RESTORE_PLAN"))?;
    serde_json::from_str(text).map_err(|e| invalid_spec(format!("STOWAGE_RESTORE_PLAN is not a restore plan: {e}")))
}

async fn restore(
    plan: &RestorePlan,
    inputs: &JobInputs,
    interrupt: &CancellationToken,
    status: &mut StatusWriter<DatabaseRestore>,
) -> Result<Restored, JobError> {
    let (location, s3) = storage(&plan.repo, &plan.source_namespace, inputs)?;
    let target = database_target(&plan.database, inputs)?;
    let identities = identities(inputs)?;
    let engine = PluginEngine::new(inputs.cache_dir.clone())
        .map_err(|e| JobError::invalid("RunnerFailed", format!("cannot start the WebAssembly engine: {e:#}")))?;
    let plugin = load_plugin(&engine, &plan.plugin, inputs).await?;
    let repository = Repository::open(&location, &s3).await;
    let target_name = format!("{}/{}", plan.database.endpoint, plan.database.name);
    let request = RestoreRequest {
        namespace: plan.source_namespace.clone(),
        name: plan.database_backup.clone(),
        backup: plan.backup_id.clone(),
        database: target,
        limits: run_limits(plan.limits.as_ref(), interrupt)?,
        identities: Arc::new(identities),
        replace_existing: plan.replace,
        allow_other_plugin: plan.allow_other_plugin_digest,
        progress: Arc::<RestoreProgress>::default(),
    };

    let backup = format!("backup {} of {}/{}", plan.backup_id, plan.source_namespace, plan.database_backup);
    status.running(format!("Restoring {backup} into {target_name}"), 0).await?;
    let started = Instant::now();
    let progress = Arc::clone(&request.progress);
    let into = target_name.clone();
    let (stop, reporter) = report_progress(status.clone(), move || {
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let current = progress.current.lock().map(|c| c.clone()).unwrap_or_default();
        (format!("Restoring into {into}: {bytes} bytes read, artifact {current}"), bytes)
    });
    let result = run_restore(&plugin, &repository, &request).await;
    let _ = stop.send(());
    let _ = reporter.await;
    let (manifest, summary) = result?;
    let attributes: BTreeMap<String, String> = summary
        .attributes
        .iter()
        .filter(|(_, value)| value.len() <= MAX_ATTRIBUTE_VALUE)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let restored = Restored {
        backup_id: manifest.backup_id.clone(),
        snapshot: plan.snapshot.clone(),
        target: target_name.clone(),
        backup_time: rfc3339(manifest.finished_at),
        bytes: request.progress.bytes.load(Ordering::Relaxed),
        summary: summary.description.clone(),
        attributes,
        duration_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    let message = format!("Restored backup {} into {target_name}: {}", manifest.backup_id, summary.description);
    let value = serde_json::to_value(&restored).unwrap_or_default();
    // The database is restored: a status that cannot be written is logged, not a failure.
    if let Err(error) = status.succeeded(message, restored.bytes, "restored", &value).await {
        tracing::error!(%error, backup_id = %manifest.backup_id, "restored, but the status could not be written");
    }
    Ok(restored)
}
