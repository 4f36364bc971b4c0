//! Object storage: the few operations a backup repository needs, implemented for
//! S3-compatible services and for a local directory.

mod fs;
mod s3;

use std::fmt::Debug;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

pub use fs::FsStore;
pub use s3::{S3Options, S3Store, StaticCredentials};

/// A readable stream of one object's bytes.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// An object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// A part accepted by [`MultipartUpload::put_part`], needed to complete the upload.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: Option<String>,
}

/// An object's bytes and the version tag (ETag) that conditional writes compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub body: Bytes,
    pub etag: String,
}

/// When a conditional write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if no object has the key (S3 `If-None-Match: *`).
    Absent,
    /// Only if the object is still this version (S3 `If-Match`).
    Matches(String),
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    #[error("{operation} {key}: {message}")]
    Request { operation: &'static str, key: String, message: String },
    #[error("{key:?} is not a valid object key")]
    InvalidKey { key: String },
    #[error("{operation} {path}: {source}")]
    Io { operation: &'static str, path: String, source: std::io::Error },
}

impl StoreError {
    pub(crate) fn request(operation: &'static str, key: &str, error: impl std::fmt::Display) -> Self {
        StoreError::Request { operation, key: key.to_owned(), message: error.to_string() }
    }
}

/// The storage operations Stowage uses. Keys are `/`-separated paths.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Store a small object in one request.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// Start an upload of a large object in parts; the object appears only on `complete`.
    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError>;
    /// Read a whole small object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Stream an object.
    async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Delete an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Size and time of one object, `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// A small object with its version tag, `None` if it does not exist.
    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Store a small object if `precondition` holds, atomically; returns the new version
    /// tag, or `None` when the precondition failed.
    async fn put_if(&self, key: &str, body: Bytes, precondition: Precondition) -> Result<Option<String>, StoreError>;
    /// Delete an object if it is still version `etag`; returns whether it was deleted.
    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool, StoreError>;
    /// Abort unfinished multipart uploads under `prefix` started before `older_than`,
    /// returning how many were aborted.
    async fn abort_stale_uploads(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize, StoreError>;
}

/// An object being uploaded in parts. Parts may be uploaded concurrently.
#[async_trait]
pub trait MultipartUpload: Send + Sync + Debug {
    /// Upload part `number` (from 1; every part but the last at least 5 MiB for S3).
    async fn put_part(&self, number: u32, body: Bytes) -> Result<CompletedPart, StoreError>;
    /// Make the object visible from the given parts, in part-number order.
    async fn complete(&self, parts: Vec<CompletedPart>) -> Result<(), StoreError>;
    /// Discard the parts uploaded so far.
    async fn abort(&self) -> Result<(), StoreError>;
}
