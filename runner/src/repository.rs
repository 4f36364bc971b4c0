//! A backup repository: the layout of backups in an object store.
//!
//! ```text
//! <prefix>/<namespace>/<name>/<backup-id>/<artifact objects...>
//! <prefix>/<namespace>/<name>/<backup-id>/manifest.json   (written last)
//! <prefix>/<namespace>/<name>/lock.json                   (while a run is active)
//! ```
//! A backup exists only once its manifest does, and only if that manifest describes its
//! own directory and every artifact it lists is there; directories without one are
//! leftovers of failed or killed runs and are removed by later runs of the same
//! configuration. A manifest that does not check out is skipped with a warning and never
//! deleted: it may be a newer format, or evidence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::lock::LOCK_OBJECT;
use crate::manifest::Manifest;
use crate::store::{FsStore, ObjectInfo, ObjectStore, S3Options, S3Store, StoreError};

const MANIFEST: &str = "manifest.json";

/// Where a repository lives: `s3://bucket[/prefix]` or `file:///directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    S3 { bucket: String, prefix: String },
    File { root: PathBuf },
}

impl FromStr for RepoLocation {
    type Err = RepositoryError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| RepositoryError::InvalidLocation { location: value.to_owned(), why: why.to_owned() };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("the bucket name is missing"));
            }
            let prefix = prefix.trim_matches('/');
            let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
            Ok(RepoLocation::S3 { bucket: bucket.to_owned(), prefix })
        } else if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file repository needs an absolute path (file:///path)"));
            }
            Ok(RepoLocation::File { root: PathBuf::from(path) })
        } else {
            Err(invalid("use s3://bucket/prefix or file:///directory"))
        }
    }
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("repository {location:?}: {why}")]
    InvalidLocation { location: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key} cannot be written: {source}")]
    CorruptManifest { key: String, source: serde_json::Error },
    #[error("manifest {key} is not a valid backup: {why}")]
    InvalidManifest { key: String, why: String },
    #[error("no backup {id} of {namespace}/{name}")]
    BackupNotFound { namespace: String, name: String, id: String },
    #[error("{namespace}/{name} has no backups yet")]
    NoBackups { namespace: String, name: String },
}

/// The objects of one backup directory.
#[derive(Debug, Clone)]
pub struct BackupDir {
    pub namespace: String,
    pub name: String,
    pub id: String,
    pub objects: Vec<ObjectInfo>,
}

/// What a backup directory holds.
#[derive(Debug, Clone)]
pub enum DirState {
    /// A committed backup whose manifest checks out.
    Complete(Box<Manifest>),
    /// No manifest: a run in progress, or the leftovers of a failed one.
    Incomplete,
    /// A manifest that cannot be trusted (unreadable, foreign, newer, or pointing at
    /// missing objects); never used and never deleted.
    Invalid { key: String, why: String },
}

impl BackupDir {
    /// The object that commits this backup: exactly `<dir>/manifest.json`.
    fn manifest_object(&self, repository: &Repository) -> Option<&ObjectInfo> {
        let key = format!("{}{MANIFEST}", repository.backup_prefix(&self.namespace, &self.name, &self.id));
        self.objects.iter().find(|object| object.key == key)
    }

    /// Bytes stored in the directory.
    pub fn stored_size(&self) -> u64 {
        self.objects.iter().map(|object| object.size).sum()
    }
}

/// The backups of one repository.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Repository {
    pub async fn open(location: &RepoLocation, s3: &S3Options) -> Self {
        match location {
            RepoLocation::S3 { bucket, prefix } => {
                Repository { store: Arc::new(S3Store::connect(bucket, s3).await), prefix: prefix.clone() }
            }
            RepoLocation::File { root } => Repository { store: Arc::new(FsStore::new(root)), prefix: String::new() },
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The directory holding every backup of one configuration.
    pub fn config_prefix(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}/", self.prefix)
    }

    /// The directory of one backup.
    pub fn backup_prefix(&self, namespace: &str, name: &str, id: &str) -> String {
        format!("{}{id}/", self.config_prefix(namespace, name))
    }

    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<(), RepositoryError> {
        let key = format!("{}{MANIFEST}", self.backup_prefix(&manifest.namespace, &manifest.name, &manifest.backup_id));
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|source| RepositoryError::CorruptManifest { key: key.clone(), source })?;
        Ok(self.store.put(&key, Bytes::from(json)).await?)
    }

    /// Every backup directory, committed or not, optionally of one configuration only,
    /// in key order.
    pub async fn scan(&self, config: Option<(&str, &str)>) -> Result<Vec<BackupDir>, RepositoryError> {
        let prefix = match config {
            Some((namespace, name)) => self.config_prefix(namespace, name),
            None => self.prefix.clone(),
        };
        let mut directories: BTreeMap<(String, String, String), Vec<ObjectInfo>> = BTreeMap::new();
        for object in self.store.list(&prefix).await? {
            let Some(rest) = object.key.strip_prefix(&self.prefix) else { continue };
            let mut parts = rest.splitn(4, '/');
            let (Some(namespace), Some(name), Some(id), Some(_)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            directories.entry((namespace.to_owned(), name.to_owned(), id.to_owned())).or_default().push(object);
        }
        Ok(directories
            .into_iter()
            .map(|((namespace, name, id), objects)| BackupDir { namespace, name, id, objects })
            .collect())
    }

    /// The key of the lock that allows one run at a time per configuration.
    pub fn lock_key(&self, namespace: &str, name: &str) -> String {
        format!("{}{LOCK_OBJECT}", self.config_prefix(namespace, name))
    }

    /// Whether a directory holds a backup, and which. Only a storage failure is an error;
    /// a manifest that does not check out is [`DirState::Invalid`].
    pub async fn inspect(&self, directory: &BackupDir) -> Result<DirState, RepositoryError> {
        let Some(object) = directory.manifest_object(self) else {
            return Ok(DirState::Incomplete);
        };
        let key = object.key.clone();
        let invalid = |why: String| Ok(DirState::Invalid { key: key.clone(), why });
        let data = match self.store.get(&key).await {
            Ok(data) => data,
            // Removed since the listing (retention of another run): nothing there now.
            Err(StoreError::NotFound { .. }) => return Ok(DirState::Incomplete),
            Err(error) => return Err(error.into()),
        };
        let manifest: Manifest = match serde_json::from_slice(&data) {
            Ok(manifest) => manifest,
            Err(error) => return invalid(format!("not a manifest: {error}")),
        };
        if let Err(problem) = manifest.check_belongs_to(&directory.namespace, &directory.name, &directory.id) {
            return invalid(problem.to_string());
        }
        let prefix = self.backup_prefix(&directory.namespace, &directory.name, &directory.id);
        for artifact in &manifest.artifacts {
            let object_key = format!("{prefix}{}", artifact.object);
            match directory.objects.iter().find(|object| object.key == object_key) {
                None => return invalid(format!("artifact object {object_key} does not exist")),
                Some(object) if object.size != artifact.stored_size => {
                    return invalid(format!(
                        "artifact object {object_key} has {} bytes, the manifest says {}",
                        object.size, artifact.stored_size
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(DirState::Complete(Box::new(manifest)))
    }

    /// Every committed backup, optionally only those of one configuration, oldest first.
    /// Manifests that do not check out are skipped with a warning naming them.
    pub async fn list(&self, config: Option<(&str, &str)>) -> Result<Vec<Manifest>, RepositoryError> {
        let mut manifests = Vec::new();
        for directory in self.scan(config).await? {
            match self.inspect(&directory).await? {
                DirState::Complete(manifest) => manifests.push(*manifest),
                DirState::Incomplete => {}
                DirState::Invalid { key, why } => tracing::warn!(%key, %why, "skipping a manifest that is not valid"),
            }
        }
        manifests.sort_by(|a, b| (a.started_at, &a.backup_id).cmp(&(b.started_at, &b.backup_id)));
        Ok(manifests)
    }

    /// The manifest of backup `id` (or the newest, for `latest`) of one configuration.
    pub async fn find(&self, namespace: &str, name: &str, id: &str) -> Result<Manifest, RepositoryError> {
        if id == "latest" {
            return self
                .list(Some((namespace, name)))
                .await?
                .pop()
                .ok_or_else(|| RepositoryError::NoBackups { namespace: namespace.to_owned(), name: name.to_owned() });
        }
        let not_found = || RepositoryError::BackupNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            id: id.to_owned(),
        };
        if !crate::manifest::valid_artifact_name(id) {
            return Err(not_found());
        }
        let objects = self.store.list(&self.backup_prefix(namespace, name, id)).await?;
        let directory =
            BackupDir { namespace: namespace.to_owned(), name: name.to_owned(), id: id.to_owned(), objects };
        match self.inspect(&directory).await? {
            DirState::Complete(manifest) => Ok(*manifest),
            DirState::Incomplete => Err(not_found()),
            DirState::Invalid { key, why } => Err(RepositoryError::InvalidManifest { key, why }),
        }
    }

    /// Delete a backup: the manifest first, so that it stops existing at once.
    pub async fn delete(&self, manifest: &Manifest) -> Result<(), RepositoryError> {
        let prefix = self.backup_prefix(&manifest.namespace, &manifest.name, &manifest.backup_id);
        self.store.delete(&format!("{prefix}{MANIFEST}")).await?;
        for object in self.store.list(&prefix).await? {
            self.store.delete(&object.key).await?;
        }
        Ok(())
    }

    /// Remove what failed or killed runs of one configuration left behind: directories
    /// without a manifest whose newest object is older than `older_than`, and unfinished
    /// uploads started before it; and at any age those of `dead_run`, a run known to be
    /// gone. Returns how many objects and uploads were removed.
    pub async fn remove_leftovers(
        &self,
        namespace: &str,
        name: &str,
        older_than: DateTime<Utc>,
        dead_run: Option<&str>,
    ) -> Result<usize, RepositoryError> {
        let mut removed = 0;
        for directory in self.scan(Some((namespace, name))).await? {
            let newest = directory.objects.iter().filter_map(|object| object.last_modified).max();
            let dead = dead_run == Some(directory.id.as_str());
            if directory.manifest_object(self).is_some() || (!dead && newest.is_none_or(|newest| newest >= older_than))
            {
                continue;
            }
            for object in &directory.objects {
                self.store.delete(&object.key).await?;
                removed += 1;
            }
        }
        let prefix = self.config_prefix(namespace, name);
        removed += self.store.abort_stale_uploads(&prefix, older_than).await?;
        if let Some(dead_run) = dead_run.filter(|id| crate::manifest::valid_artifact_name(id)) {
            let prefix = self.backup_prefix(namespace, name, dead_run);
            removed += self.store.abort_stale_uploads(&prefix, Utc::now()).await?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            "s3://bucket/some/prefix/".parse::<RepoLocation>().expect("valid"),
            RepoLocation::S3 { bucket: "bucket".into(), prefix: "some/prefix/".into() }
        );
        assert_eq!(
            "s3://bucket".parse::<RepoLocation>().expect("valid"),
            RepoLocation::S3 { bucket: "bucket".into(), prefix: String::new() }
        );
        assert_eq!(
            "file:///var/backups".parse::<RepoLocation>().expect("valid"),
            RepoLocation::File { root: "/var/backups".into() }
        );
        assert!("file://relative".parse::<RepoLocation>().is_err());
        assert!("s3:///prefix".parse::<RepoLocation>().is_err());
        assert!("/plain/path".parse::<RepoLocation>().is_err());
    }
}
