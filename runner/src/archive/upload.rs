//! Streaming one artifact into object storage while the plugin writes it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::Codec;
use crate::store::{MultipartUpload, ObjectStore, StoreError};

/// Plain chunks queued between the plugin and the encoder.
const CHUNKS_QUEUED: usize = 4;

/// Memory and concurrency bounds of an upload.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// Size of each uploaded part (S3 needs at least 5 MiB for all but the last).
    pub part_size: usize,
    /// Parts uploaded at the same time. Peak memory per artifact is about
    /// `part_size * (parts_in_flight + 2)`.
    pub parts_in_flight: usize,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits { part_size: 8 << 20, parts_in_flight: 4 }
    }
}

/// What a finished artifact looks like in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    /// Plain bytes the plugin wrote.
    pub raw_size: u64,
    /// Bytes stored after compression and encryption.
    pub stored_size: u64,
    /// sha256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// Why an artifact could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the artifact was already finished")]
    Finished,
    #[error("compressing or encrypting: {0}")]
    Encode(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the upload stopped unexpectedly")]
    Stopped,
}

/// An artifact being written: plain bytes go in with [`write`](Self::write), and
/// [`finish`](Self::finish) makes the stored object appear. Dropping it unfinished
/// aborts the upload, so no partial object is ever visible.
#[derive(Debug)]
pub struct ArtifactUpload {
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    encoder: Option<JoinHandle<io::Result<UploadOutcome>>>,
    commit: Option<oneshot::Sender<()>>,
    stored: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

/// The background half of an [`ArtifactUpload`]; resolves to whether the object was
/// committed. Await it before exiting so that aborted uploads are cleaned up.
pub type UploadTask = JoinHandle<bool>;

impl ArtifactUpload {
    /// Start streaming into `key`. Must be called within a Tokio runtime.
    pub fn start(store: Arc<dyn ObjectStore>, key: String, codec: Codec, limits: TransferLimits) -> (Self, UploadTask) {
        let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_QUEUED);
        let (part_tx, part_rx) = mpsc::channel(limits.parts_in_flight.max(1));
        let (commit_tx, commit_rx) = oneshot::channel();
        let (stored_tx, stored_rx) = oneshot::channel();
        let encoder = tokio::task::spawn_blocking(move || encode(chunk_rx, part_tx, &codec, limits.part_size));
        let task = tokio::spawn(async move {
            let result = upload(store, &key, part_rx, commit_rx, limits.parts_in_flight).await;
            let committed = matches!(result, Ok(true));
            if let Err(error) = &result {
                tracing::warn!(%key, %error, "artifact upload failed");
            }
            let _ = stored_tx.send(result.map(|_| ()));
            committed
        });
        let upload = ArtifactUpload {
            chunks: Some(chunk_tx),
            encoder: Some(encoder),
            commit: Some(commit_tx),
            stored: Some(stored_rx),
        };
        (upload, task)
    }

    /// Append plain bytes. Waits while the pipeline is full.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), UploadError> {
        let chunks = self.chunks.as_ref().ok_or(UploadError::Finished)?;
        if chunks.send(data).await.is_ok() {
            return Ok(());
        }
        // The encoder stopped early; finishing reports why.
        Err(self.finish().await.err().unwrap_or(UploadError::Stopped))
    }

    /// Flush, upload the rest, and make the object visible.
    pub async fn finish(&mut self) -> Result<UploadOutcome, UploadError> {
        self.chunks.take();
        let encoder = self.encoder.take().ok_or(UploadError::Finished)?;
        let encoded = encoder.await.map_err(|_| UploadError::Stopped)?;
        let stored = self.stored.take().ok_or(UploadError::Finished)?;
        match encoded {
            Ok(outcome) => {
                if let Some(commit) = self.commit.take() {
                    let _ = commit.send(());
                }
                stored.await.map_err(|_| UploadError::Stopped)??;
                Ok(outcome)
            }
            Err(error) => {
                // A failed upload makes the encoder fail too; the store's error is the cause.
                self.commit.take();
                match stored.await {
                    Ok(Err(store_error)) => Err(store_error.into()),
                    _ => Err(UploadError::Encode(error)),
                }
            }
        }
    }
}

/// The blocking stage: plain chunks -> codec -> hashed parts.
fn encode(
    mut chunks: mpsc::Receiver<Vec<u8>>,
    parts: mpsc::Sender<Bytes>,
    codec: &Codec,
    part_size: usize,
) -> io::Result<UploadOutcome> {
    let mut writer = codec.encoder(PartSink::new(parts, part_size))?;
    let mut raw_size = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        raw_size += chunk.len() as u64;
        writer.write_all(&chunk)?;
    }
    let (stored_size, sha256) = writer.finish()?.finish()?;
    Ok(UploadOutcome { raw_size, stored_size, sha256 })
}

/// Cuts the stored byte stream into parts while hashing and counting it.
struct PartSink {
    parts: mpsc::Sender<Bytes>,
    part_size: usize,
    buffer: Vec<u8>,
    hasher: Sha256,
    size: u64,
    sent_any: bool,
}

impl PartSink {
    fn new(parts: mpsc::Sender<Bytes>, part_size: usize) -> Self {
        PartSink {
            parts,
            part_size,
            buffer: Vec::with_capacity(part_size),
            hasher: Sha256::new(),
            size: 0,
            sent_any: false,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
        self.sent_any = true;
        self.parts.blocking_send(Bytes::from(part)).map_err(|_| io::Error::other("the upload stopped"))
    }

    /// Send the last part (possibly empty, so that empty objects exist too).
    fn finish(mut self) -> io::Result<(u64, String)> {
        if !self.buffer.is_empty() || !self.sent_any {
            self.send()?;
        }
        Ok((self.size, hex::encode(self.hasher.finalize())))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.part_size - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        if self.buffer.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The async stage: parts -> one PUT for a small object, a multipart upload otherwise.
/// Returns whether the object was committed (false: abandoned and cleaned up).
async fn upload(
    store: Arc<dyn ObjectStore>,
    key: &str,
    mut parts: mpsc::Receiver<Bytes>,
    commit: oneshot::Receiver<()>,
    in_flight: usize,
) -> Result<bool, StoreError> {
    let Some(first) = parts.recv().await else {
        return Ok(false);
    };
    let Some(second) = parts.recv().await else {
        if commit.await.is_err() {
            return Ok(false);
        }
        store.put(key, first).await?;
        return Ok(true);
    };
    let upload: Arc<dyn MultipartUpload> = Arc::from(store.start_multipart(key).await?);
    let result = upload_parts(&upload, [first, second], &mut parts, commit, in_flight).await;
    if !matches!(result, Ok(true)) {
        // Stop the encoder before cleaning up, then remove the uploaded parts.
        drop(parts);
        if let Err(error) = upload.abort().await {
            tracing::warn!(%key, %error, "could not abort the multipart upload; the next backup retries");
        }
    }
    result
}

async fn upload_parts(
    upload: &Arc<dyn MultipartUpload>,
    first: [Bytes; 2],
    parts: &mut mpsc::Receiver<Bytes>,
    commit: oneshot::Receiver<()>,
    in_flight: usize,
) -> Result<bool, StoreError> {
    let mut running = JoinSet::new();
    let mut completed = Vec::new();
    let mut number = 0u32;
    let mut received = VecDeque::from(first);
    loop {
        let part = match received.pop_front() {
            Some(part) => part,
            None => match parts.recv().await {
                Some(part) => part,
                None => break,
            },
        };
        while running.len() >= in_flight.max(1) {
            completed.push(joined(running.join_next().await)?);
        }
        number += 1;
        let upload = Arc::clone(upload);
        running.spawn(async move { upload.put_part(number, part).await });
    }
    while let Some(result) = running.join_next().await {
        completed.push(joined(Some(result))?);
    }
    if commit.await.is_err() {
        return Ok(false);
    }
    completed.sort_by_key(|part| part.number);
    upload.complete(completed).await?;
    Ok(true)
}

fn joined<T>(result: Option<Result<Result<T, StoreError>, tokio::task::JoinError>>) -> Result<T, StoreError> {
    match result {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(StoreError::request("upload part of", "artifact", error)),
        None => Err(StoreError::request("upload part of", "artifact", "no upload was running")),
    }
}
