//! A repository in a local directory (`file:///path`), with the same layout and the
//! same all-or-nothing object semantics as S3: objects appear atomically by rename,
//! multipart uploads are staged under `.uploads/` until completed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::{
    CompletedPart, MultipartUpload, ObjectInfo, ObjectReader, ObjectStore, Precondition, StoreError, Versioned,
};

const UPLOADS: &str = ".uploads";

/// Objects stored as files under a root directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    /// The file of `key`. Keys are relative paths of plain components: nothing a key
    /// says can reach outside the root.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let plain = !key.is_empty()
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'));
        if !plain {
            return Err(StoreError::InvalidKey { key: key.to_owned() });
        }
        Ok(self.root.join(key))
    }

    /// Run `operation` holding an exclusive flock on the root directory, which every
    /// conditional write of every process takes, so that check and write are one step.
    async fn guarded<T: Send + 'static>(
        &self,
        operation: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = self.root.clone();
        let locked = move || -> Result<T, StoreError> {
            std::fs::create_dir_all(&root).map_err(io("create", &root))?;
            let guard = std::fs::File::open(&root).map_err(io("open", &root))?;
            guard.lock().map_err(io("lock", &root))?;
            operation()
        };
        let label = self.root.display().to_string();
        tokio::task::spawn_blocking(locked).await.map_err(|e| StoreError::Io {
            operation: "lock",
            path: label,
            source: std::io::Error::other(e),
        })?
    }

    /// A name no other upload or temporary file of this process or another uses.
    fn unique_name() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// Write `data` to `key` through a temporary file, so readers never see half an object.
    async fn write_atomically(&self, key: &str, parts: &[PathBuf], data: Option<&[u8]>) -> Result<(), StoreError> {
        let target = self.path(key)?;
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).await.map_err(io("create", &parent))?;
        let temp = parent.join(format!(".tmp-{}", Self::unique_name()));
        let mut file = fs::File::create(&temp).await.map_err(io("create", &temp))?;
        if let Some(data) = data {
            file.write_all(data).await.map_err(io("write", &temp))?;
        }
        for part in parts {
            let mut input = fs::File::open(part).await.map_err(io("open", part))?;
            tokio::io::copy(&mut input, &mut file).await.map_err(io("copy", part))?;
        }
        file.sync_all().await.map_err(io("sync", &temp))?;
        fs::rename(&temp, &target).await.map_err(io("rename", &temp))
    }
}

/// The version tag of a file's content.
fn etag(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

impl FsStore {
    /// Directories exist only as key prefixes: remove the ones `removed` left empty.
    fn prune_empty_dirs(&self, removed: &Path) {
        let mut dir = removed.parent();
        while let Some(current) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if std::fs::remove_dir(current).is_err() {
                break;
            }
            dir = current.parent();
        }
    }

    /// [`write_atomically`](Self::write_atomically) for small objects, on a blocking thread.
    fn write_atomically_blocking(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let target = self.path(key)?;
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
        let temp = parent.join(format!(".tmp-{}", Self::unique_name()));
        let mut file = std::fs::File::create(&temp).map_err(io("create", &temp))?;
        file.write_all(data).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("sync", &temp))?;
        std::fs::rename(&temp, &target).map_err(io("rename", &temp))
    }
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io { operation, path, source }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.write_atomically(key, &[], Some(&body)).await
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let dir = self.root.join(UPLOADS).join(Self::unique_name());
        fs::create_dir_all(&dir).await.map_err(io("create", &dir))?;
        fs::write(dir.join("key"), key).await.map_err(io("write", &dir))?;
        Ok(Box::new(FsUpload { store: self.clone(), key: key.to_owned(), dir }))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        match fs::read(&path).await {
            Ok(data) => Ok(data.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { key: key.to_owned() }),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path(key)?;
        match fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { key: key.to_owned() }),
            Err(e) => Err(io("open", &path)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut objects = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &dir)(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io("list", &dir))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == UPLOADS || name.starts_with(".tmp-") {
                    continue;
                }
                let path = entry.path();
                let metadata = entry.metadata().await.map_err(io("stat", &path))?;
                if metadata.is_dir() {
                    pending.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = relative.to_string_lossy().into_owned();
                if key.starts_with(prefix) {
                    objects.push(ObjectInfo {
                        key,
                        size: metadata.len(),
                        last_modified: metadata.modified().ok().map(DateTime::<Utc>::from),
                    });
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("delete", &path)(e));
            }
            _ => {}
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.prune_empty_dirs(&path)).await.ok();
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        match fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: metadata.len(),
                last_modified: metadata.modified().ok().map(DateTime::<Utc>::from),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", &path)(e)),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match self.get(key).await {
            Ok(body) => Ok(Some(Versioned { etag: etag(&body), body })),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn put_if(&self, key: &str, body: Bytes, precondition: Precondition) -> Result<Option<String>, StoreError> {
        let path = self.path(key)?;
        let store = self.clone();
        let key = key.to_owned();
        self.guarded(move || {
            let current = match std::fs::read(&path) {
                Ok(data) => Some(etag(&data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io("read", &path)(e)),
            };
            let holds = match &precondition {
                Precondition::Absent => current.is_none(),
                Precondition::Matches(expected) => current.as_ref() == Some(expected),
            };
            if !holds {
                return Ok(None);
            }
            store.write_atomically_blocking(&key, &body)?;
            Ok(Some(etag(&body)))
        })
        .await
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        let expected = expected.to_owned();
        let store = self.clone();
        self.guarded(move || match std::fs::read(&path) {
            Ok(data) if etag(&data) == expected => {
                std::fs::remove_file(&path).map_err(io("delete", &path))?;
                store.prune_empty_dirs(&path);
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("read", &path)(e)),
        })
        .await
    }

    async fn abort_stale_uploads(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize, StoreError> {
        let uploads = self.root.join(UPLOADS);
        let mut entries = match fs::read_dir(&uploads).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("list", &uploads)(e)),
        };
        let mut aborted = 0;
        while let Some(entry) = entries.next_entry().await.map_err(io("list", &uploads))? {
            let dir = entry.path();
            let Ok(key) = fs::read_to_string(dir.join("key")).await else {
                continue;
            };
            let started = entry.metadata().await.ok().and_then(|m| m.modified().ok()).map(DateTime::<Utc>::from);
            if key.starts_with(prefix) && started.is_some_and(|started| started < older_than) {
                fs::remove_dir_all(&dir).await.map_err(io("delete", &dir))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

#[derive(Debug)]
struct FsUpload {
    store: FsStore,
    key: String,
    dir: PathBuf,
}

#[async_trait]
impl MultipartUpload for FsUpload {
    async fn put_part(&self, number: u32, body: Bytes) -> Result<CompletedPart, StoreError> {
        let path = self.dir.join(format!("{number:06}"));
        fs::write(&path, &body).await.map_err(io("write", &path))?;
        Ok(CompletedPart { number, etag: None })
    }

    async fn complete(&self, parts: Vec<CompletedPart>) -> Result<(), StoreError> {
        let files: Vec<PathBuf> = parts.iter().map(|part| self.dir.join(format!("{:06}", part.number))).collect();
        self.store.write_atomically(&self.key, &files, None).await?;
        self.abort().await
    }

    async fn abort(&self) -> Result<(), StoreError> {
        match fs::remove_dir_all(&self.dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("delete", &self.dir)(e)),
            _ => Ok(()),
        }
    }
}
