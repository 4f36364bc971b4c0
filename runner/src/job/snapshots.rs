//! `DatabaseSnapshot` objects: after every committed backup the run brings the objects of
//! its configuration and repository in line with the repository's committed backups, so
//! the new backup appears, the ones retention removed disappear, and whatever an earlier
//! killed run left undone is mended.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use stowage_api::{
    Database, DatabaseBackup, DatabaseSnapshot, DatabaseSnapshotSpec, LABEL_CONFIGURATION, LABEL_REPO, PluginSource,
    Repo, SnapshotPlugin, snapshot_name,
};

use crate::manifest::Manifest;

/// The longest plugin summary copied into an object.
const MAX_SUMMARY: usize = 1024;

/// Where the backups of one configuration come from, as its objects record it.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The configuration's name (and the objects' label).
    pub configuration: String,
    /// Its UID: the objects are owned by it.
    pub uid: Option<String>,
    /// The repository, with its bucket resolved, so that it names the same place from any namespace.
    pub repo: Repo,
    pub plugin: PluginSource,
    pub database: Database,
}

/// What a sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Synced {
    pub created: usize,
    pub removed: usize,
}

/// Make the objects of `origin` in `api`'s namespace match `manifests`, the committed
/// backups of its configuration in its repository. An object is removed only if its
/// backup is older than the newest listed one: a backup committed by a concurrent run
/// after the listing keeps its object.
pub(super) async fn sync(
    api: &Api<DatabaseSnapshot>,
    origin: &Origin,
    manifests: &[Manifest],
) -> Result<Synced, kube::Error> {
    let selector = format!("{LABEL_CONFIGURATION}={},{LABEL_REPO}={}", origin.configuration, origin.repo.name);
    let existing = api.list(&ListParams::default().labels(&selector)).await?.items;
    let listed: BTreeSet<&str> = manifests.iter().map(|m| m.backup_id.as_str()).collect();
    let known: BTreeSet<&str> = existing.iter().map(|object| object.spec.backup_id.as_str()).collect();
    let mut synced = Synced::default();
    for manifest in manifests.iter().filter(|m| !known.contains(m.backup_id.as_str())) {
        match api.create(&PostParams::default(), &object(origin, manifest)).await {
            Ok(_) => synced.created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    let newest = manifests.iter().map(|m| rfc3339(m.finished_at)).max();
    for object in existing {
        let gone = !listed.contains(object.spec.backup_id.as_str());
        if gone && newest.as_ref().is_some_and(|newest| object.spec.finished_at <= *newest) {
            match api.delete(&object.name_any(), &DeleteParams::default()).await {
                Ok(_) => synced.removed += 1,
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(synced)
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The object of one backup.
fn object(origin: &Origin, manifest: &Manifest) -> DatabaseSnapshot {
    let mut summary = manifest.summary.description.clone();
    if summary.len() > MAX_SUMMARY {
        let mut end = MAX_SUMMARY;
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary.truncate(end);
    }
    let spec = DatabaseSnapshotSpec {
        database_backup: manifest.name.clone(),
        source_namespace: manifest.namespace.clone(),
        backup_id: manifest.backup_id.clone(),
        repo: origin.repo.clone(),
        started_at: rfc3339(manifest.started_at),
        finished_at: rfc3339(manifest.finished_at),
        bytes: manifest.raw_size(),
        stored_bytes: manifest.stored_size(),
        artifacts: u32::try_from(manifest.artifacts.len()).unwrap_or(u32::MAX),
        encrypted: manifest.artifacts.iter().any(|artifact| artifact.encryption.is_some()),
        plugin: SnapshotPlugin {
            name: manifest.plugin.name.clone(),
            version: manifest.plugin.version.clone(),
            sha256: manifest.plugin.sha256.clone(),
            source: PluginSource { sha256: Some(manifest.plugin.sha256.clone()), ..origin.plugin.clone() },
        },
        database: origin.database.clone(),
        summary,
    };
    let mut snapshot = DatabaseSnapshot::new(&snapshot_name(&origin.configuration, &manifest.backup_id), spec);
    snapshot.metadata.labels = Some(
        [
            (LABEL_CONFIGURATION.to_owned(), origin.configuration.clone()),
            (LABEL_REPO.to_owned(), origin.repo.name.clone()),
            ("app.kubernetes.io/managed-by".to_owned(), "stowage-runner".to_owned()),
        ]
        .into(),
    );
    // Owned, not controlled: garbage collection removes the objects with their
    // configuration, and the stored backups stay.
    snapshot.metadata.owner_references = origin.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: DatabaseBackup::api_version(&()).into_owned(),
            kind: DatabaseBackup::kind(&()).into_owned(),
            name: origin.configuration.clone(),
            uid: uid.clone(),
            ..OwnerReference::default()
        }]
    });
    snapshot
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_object_carries_everything_a_restore_needs() {
        let manifest = crate::manifest::sample("20261204T101500Z-0a1b2c", chrono::Utc::now());
        let repo: Repo =
            serde_json::from_value(json!({"name": "s3", "secretName": "s3", "bucket": "backups"})).expect("repo");
        let database: Database =
            serde_json::from_value(json!({"endpoint": "db:5432", "name": "shop"})).expect("database");
        let origin = Origin {
            configuration: "db".into(),
            uid: Some("uid-1".into()),
            repo,
            plugin: PluginSource { builtin: Some("postgres".into()), ..PluginSource::default() },
            database,
        };
        let object = object(&origin, &manifest);
        assert_eq!(object.name_any(), "db-20261204t101500z-0a1b2c");
        assert_eq!(object.spec.plugin.source.sha256.as_deref(), Some(manifest.plugin.sha256.as_str()));
        assert_eq!(object.spec.plugin.source.builtin.as_deref(), Some("postgres"));
        assert_eq!((object.spec.source_namespace.as_str(), object.spec.database.name.as_str()), ("ns", "shop"));
        let owner = &object.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("DatabaseBackup", "uid-1", None));
        assert_eq!(object.metadata.labels.expect("labels")[LABEL_REPO], "s3");
    }
}
