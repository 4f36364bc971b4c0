//! `DatabaseSnapshot` objects: after every committed backup the run brings the objects of
//! its configuration and repository in line with the repository's committed backups, so
//! the new backup appears, the ones retention removed disappear, and whatever an earlier
//! killed run left undone is mended. An import run does the same for the objects of its
//! DatabaseSnapshotImport and the backups the import covers.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use stowage_api::{
    Database, DatabaseSnapshot, DatabaseSnapshotSpec, LABEL_CONFIGURATION, PluginSource, Repo, SnapshotPlugin,
    cut_text, label_value, snapshot_name,
};

use super::status::rfc3339;
use crate::manifest::Manifest;

/// The longest plugin summary copied into an object.
const MAX_SUMMARY: usize = 1024;

/// Where a set of backups comes from, as their objects record it.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The labels of the objects, which also select them for a sync.
    pub labels: BTreeMap<String, String>,
    /// The resource that owns the objects (the DatabaseBackup, or the import).
    pub owner: Option<OwnerReference>,
    /// The repository, with its bucket resolved, so that it names the same place from any namespace.
    pub repo: Repo,
    /// Where restores fetch the plugin, pinned to each backup's digest; unset: the
    /// runner's builtin of the name each backup records.
    pub plugin: Option<PluginSource>,
    /// The backed-up database; unset: what each backup records (endpoint and name).
    pub database: Option<Database>,
}

impl Origin {
    /// The owner reference of `object`, which does not control its snapshot objects.
    pub fn owned_by<K: Resource<DynamicType = ()>>(name: &str, uid: Option<&String>) -> Option<OwnerReference> {
        uid.map(|uid| OwnerReference {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: name.to_owned(),
            uid: uid.clone(),
            ..OwnerReference::default()
        })
    }
}

/// What a sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Synced {
    pub created: usize,
    pub removed: usize,
    /// Backups whose object the API server refused.
    pub refused: usize,
}

/// Whether two repositories name the same place (bucket, prefix, endpoint).
fn same_place(a: &Repo, b: &Repo) -> bool {
    (&a.bucket, &a.prefix, &a.service_endpoint) == (&b.bucket, &b.prefix, &b.service_endpoint)
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
    let selector: Vec<String> = origin.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let selector = selector.join(",");
    let existing = api.list(&ListParams::default().labels(&selector)).await?.items;
    let listed: BTreeSet<&str> = manifests.iter().map(|m| m.backup_id.as_str()).collect();
    let known: BTreeSet<&str> = existing.iter().map(|object| object.spec.backup_id.as_str()).collect();
    let mut synced = Synced::default();
    for manifest in manifests.iter().filter(|m| !known.contains(m.backup_id.as_str())) {
        match api.create(&PostParams::default(), &object(origin, manifest)).await {
            Ok(_) => synced.created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            // One object the API server refuses (a foreign bucket may hold anything) does
            // not keep the others from appearing.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::warn!(backup_id = %manifest.backup_id, message = %status.message, "no snapshot object for a backup");
                synced.refused += 1;
            }
            Err(error) => return Err(error),
        }
    }
    let newest = manifests.iter().map(|m| rfc3339(m.finished_at)).max();
    for object in existing {
        // Objects of another place (the repository was moved) describe backups still there.
        let here = same_place(&object.spec.repo, &origin.repo);
        let gone = here && !listed.contains(object.spec.backup_id.as_str());
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

/// `host:port`, with brackets around an IPv6 host.
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The object of one backup.
fn object(origin: &Origin, manifest: &Manifest) -> DatabaseSnapshot {
    let summary = cut_text(&manifest.summary.description, MAX_SUMMARY).to_owned();
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
            source: PluginSource {
                sha256: Some(manifest.plugin.sha256.clone()),
                ..origin.plugin.clone().unwrap_or_else(|| PluginSource {
                    builtin: Some(manifest.plugin.name.clone()),
                    ..PluginSource::default()
                })
            },
        },
        database: origin.database.clone().unwrap_or_else(|| Database {
            endpoint: endpoint(&manifest.database.host, manifest.database.port),
            name: manifest.database.database.clone(),
            user: None,
            password_secret: None,
            tls_ca_secret: None,
            options: BTreeMap::new(),
        }),
        summary,
    };
    let mut snapshot = DatabaseSnapshot::new(&snapshot_name(&manifest.name, &manifest.backup_id), spec);
    let mut labels = origin.labels.clone();
    labels.insert(LABEL_CONFIGURATION.to_owned(), label_value(&manifest.name));
    labels.insert("app.kubernetes.io/managed-by".to_owned(), "stowage-runner".to_owned());
    snapshot.metadata.labels = Some(labels);
    // Owned, not controlled: garbage collection removes the objects with their owner, and
    // the stored backups stay.
    snapshot.metadata.owner_references = origin.owner.clone().map(|owner| vec![owner]);
    snapshot
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_object_carries_everything_a_restore_needs() {
        use stowage_api::{DatabaseBackup, LABEL_REPO};

        let manifest = crate::manifest::sample("20261204T101500Z-0a1b2c", chrono::Utc::now());
        let repo: Repo =
            serde_json::from_value(json!({"name": "s3", "secretName": "s3", "bucket": "backups"})).expect("repo");
        let database: Database =
            serde_json::from_value(json!({"endpoint": "db:5432", "name": "shop"})).expect("database");
        let origin = Origin {
            labels: [(LABEL_CONFIGURATION.to_owned(), "db".to_owned()), (LABEL_REPO.to_owned(), "s3".to_owned())]
                .into(),
            owner: Origin::owned_by::<DatabaseBackup>("db", Some(&"uid-1".to_owned())),
            repo,
            plugin: Some(PluginSource { builtin: Some("postgres".into()), ..PluginSource::default() }),
            database: Some(database),
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

    #[test]
    fn an_imported_object_restores_with_the_builtin_of_its_plugin_into_its_recorded_database() {
        let manifest = crate::manifest::sample("20261204T101500Z-0a1b2c", chrono::Utc::now());
        let repo: Repo = serde_json::from_value(json!({"name": "dr", "bucket": "backups"})).expect("repo");
        let origin = Origin { labels: BTreeMap::new(), owner: None, repo, plugin: None, database: None };
        let object = object(&origin, &manifest);
        assert_eq!(object.spec.plugin.source.builtin.as_deref(), Some("p"));
        assert_eq!(object.spec.plugin.source.sha256.as_deref(), Some("00"));
        assert_eq!(object.spec.database.name, manifest.database.database);
        assert_eq!(object.metadata.labels.expect("labels")[LABEL_CONFIGURATION], "db");
    }
}
