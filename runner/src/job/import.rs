//! `stowage import-job`: the entry point of a DatabaseSnapshotImport's Job. Lists the
//! committed backups of the repository that the import covers and brings the import's
//! DatabaseSnapshot objects in line with them (created for new backups, removed for
//! backups that are gone), then reports `imported` in the resource's status.

use kube::{Api, Client};
use stowage_api::{
    DatabaseSnapshot, DatabaseSnapshotImport, DatabaseSnapshotImportSpec, Imported, LABEL_IMPORT, label_value,
};

use super::inputs::storage;
use super::snapshots::{self, Origin};
use super::status::{StatusWriter, now_rfc3339};
use super::{JobError, JobInputs, invalid_spec};
use crate::backup::BackupError;
use crate::repository::Repository;

/// Run the Job: import and report. Errors are also written to the status where the
/// resource can be reached.
pub async fn run_import_job(inputs: JobInputs) -> Result<Imported, JobError> {
    let name = inputs.one_shot_name.clone().ok_or(JobError::MissingEnvironment("STOWAGE_RESOURCE_NAME"))?;
    let namespace = inputs.namespace.clone().ok_or(JobError::MissingEnvironment("NAMESPACE"))?;
    let client = Client::try_default().await?;
    let api = Api::namespaced(client.clone(), &namespace);
    let mut status = StatusWriter::new(api, &name, "Import", &inputs).clearing("imported");
    let result = import(&client, &name, &namespace, &inputs, &mut status).await;
    if let Err(error) = &result {
        status.failed(error).await;
    }
    result
}

async fn import(
    client: &Client,
    name: &str,
    namespace: &str,
    inputs: &JobInputs,
    status: &mut StatusWriter<DatabaseSnapshotImport>,
) -> Result<Imported, JobError> {
    let text = inputs.run_spec.as_deref().ok_or(JobError::MissingEnvironment("STOWAGE_RUN_SPEC"))?;
    let spec: DatabaseSnapshotImportSpec = serde_json::from_str(text)
        .map_err(|e| invalid_spec(format!("STOWAGE_RUN_SPEC is not a DatabaseSnapshotImport spec: {e}")))?;
    spec.validate().map_err(invalid_spec)?;
    // A bucket named after a namespace is the source namespace's.
    let bucket_namespace = spec.source_namespace.as_deref().unwrap_or(namespace);
    let (location, s3) = storage(&spec.repo, bucket_namespace, inputs)?;
    let repository = Repository::open(&location, &s3).await;
    status.running(format!("Listing the backups of repository {}", spec.repo.name), 0).await?;
    let time = now_rfc3339();
    let only = spec.source_namespace.as_deref().zip(spec.database_backup.as_deref());
    let mut manifests = repository.list(only).await.map_err(BackupError::from)?;
    if let Some(source) = &spec.source_namespace {
        manifests.retain(|manifest| &manifest.namespace == source);
    }
    let mut repo = spec.repo.clone();
    repo.bucket = spec.repo.bucket_for(bucket_namespace);
    let origin = Origin {
        labels: [(LABEL_IMPORT.to_owned(), label_value(name))].into(),
        owner: Origin::owned_by::<DatabaseSnapshotImport>(name, inputs.resource_uid.as_ref()),
        repo,
        plugin: spec.plugin.clone(),
        database: None,
    };
    let api: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), namespace);
    let synced = snapshots::sync(&api, &origin, &manifests).await?;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let imported = Imported {
        snapshots: count(manifests.len()),
        created: count(synced.created),
        removed: count(synced.removed),
        time,
    };
    let mut message = format!(
        "{} backups in repository {}: {} snapshot objects created, {} removed",
        imported.snapshots, spec.repo.name, imported.created, imported.removed
    );
    if synced.refused > 0 {
        message.push_str(&format!(
            "; the API server refused the objects of {} backups (see the runner's log)",
            synced.refused
        ));
    }
    let value = serde_json::to_value(&imported).unwrap_or_default();
    status.succeeded(message, 0, "imported", &value).await?;
    Ok(imported)
}
