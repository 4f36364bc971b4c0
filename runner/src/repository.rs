//! A backup repository: the layout of backups in an object store.
//!
//! ```text
//! <prefix>/<namespace>/<name>/<backup-id>/<artifact objects...>
//! <prefix>/<namespace>/<name>/<backup-id>/manifest.json   (written last)
//! ```
//! A backup exists only once its manifest does; directories without one are leftovers
//! of failed or killed runs and are removed by later runs of the same configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

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
    #[error("manifest {key} is not valid: {source}")]
    CorruptManifest { key: String, source: serde_json::Error },
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

impl BackupDir {
    /// The manifest's key, if the backup was committed.
    pub fn manifest_key(&self) -> Option<&str> {
        self.objects.iter().map(|object| object.key.as_str()).find(|key| key.ends_with(&format!("/{MANIFEST}")))
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

    async fn read_manifest(&self, key: &str) -> Result<Manifest, RepositoryError> {
        let data = self.store.get(key).await?;
        serde_json::from_slice(&data).map_err(|source| RepositoryError::CorruptManifest { key: key.to_owned(), source })
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

    /// The manifest of a backup directory; `None` if it was never committed.
    pub async fn manifest(&self, directory: &BackupDir) -> Result<Option<Manifest>, RepositoryError> {
        match directory.manifest_key() {
            Some(key) => Ok(Some(self.read_manifest(key).await?)),
            None => Ok(None),
        }
    }

    /// Every committed backup, optionally only those of one configuration, oldest first.
    pub async fn list(&self, config: Option<(&str, &str)>) -> Result<Vec<Manifest>, RepositoryError> {
        let mut manifests = Vec::new();
        for directory in self.scan(config).await? {
            manifests.extend(self.manifest(&directory).await?);
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
        let key = format!("{}{MANIFEST}", self.backup_prefix(namespace, name, id));
        self.read_manifest(&key).await.map_err(|error| match error {
            RepositoryError::Store(StoreError::NotFound { .. }) => RepositoryError::BackupNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                id: id.to_owned(),
            },
            other => other,
        })
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
    /// uploads started before it. Returns how many objects and uploads were removed.
    pub async fn remove_leftovers(
        &self,
        namespace: &str,
        name: &str,
        older_than: DateTime<Utc>,
    ) -> Result<usize, RepositoryError> {
        let mut removed = 0;
        for directory in self.scan(Some((namespace, name))).await? {
            let newest = directory.objects.iter().filter_map(|object| object.last_modified).max();
            if directory.manifest_key().is_some() || newest.is_none_or(|newest| newest >= older_than) {
                continue;
            }
            for object in &directory.objects {
                self.store.delete(&object.key).await?;
                removed += 1;
            }
        }
        let prefix = self.config_prefix(namespace, name);
        removed += self.store.abort_stale_uploads(&prefix, older_than).await?;
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
