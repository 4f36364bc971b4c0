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

use super::{CompletedPart, MultipartUpload, ObjectInfo, ObjectReader, ObjectStore, StoreError};

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

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// A name no other upload or temporary file of this process or another uses.
    fn unique_name() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    /// Write `data` to `key` through a temporary file, so readers never see half an object.
    async fn write_atomically(&self, key: &str, parts: &[PathBuf], data: Option<&[u8]>) -> Result<(), StoreError> {
        let target = self.path(key);
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
        let path = self.path(key);
        match fs::read(&path).await {
            Ok(data) => Ok(data.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { key: key.to_owned() }),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path(key);
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
        let path = self.path(key);
        match fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("delete", &path)(e));
            }
            _ => {}
        }
        // Directories exist only as key prefixes: remove the ones left empty.
        let mut dir = path.parent();
        while let Some(current) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if fs::remove_dir(current).await.is_err() {
                break;
            }
            dir = current.parent();
        }
        Ok(())
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
