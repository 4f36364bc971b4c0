//! Streaming one artifact into object storage while the plugin writes it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::Codec;
use crate::store::{MultipartUpload, ObjectStore, StoreError};

/// Plain chunks queued between the plugin and the encoder (also bounded in bytes).
const CHUNKS_QUEUED: usize = 16;
/// Plain bytes are queued in slices of at most this size, whatever the write size.
const SLICE: usize = 1 << 20;
/// The largest part S3 accepts.
const MAX_PART_BYTES: usize = 5 << 30;
/// How many times the part size doubles over `max_parts`: enough that 10,000 parts
/// starting at 5 MiB hold 5 TiB.
const PART_SIZE_DOUBLINGS: u32 = 11;

/// Memory and size bounds of uploads.
#[derive(Debug, Clone, Copy)]
pub struct TransferLimits {
    /// Size of the first parts (S3 needs at least 5 MiB for all but the last). Parts grow
    /// as an artifact grows, so that `max_parts` hold `max_object_bytes`.
    pub part_size: usize,
    /// Parts uploaded at the same time, in units of the first part size: bigger parts
    /// mean fewer in flight, so upload memory stays at `part_size * parts_in_flight`.
    pub parts_in_flight: usize,
    /// Parts per object the store accepts (S3: 10,000).
    pub max_parts: u32,
    /// The largest object the store accepts (S3: 5 TiB).
    pub max_object_bytes: u64,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits { part_size: 8 << 20, parts_in_flight: 4, max_parts: 10_000, max_object_bytes: 5 << 40 }
    }
}

impl TransferLimits {
    /// The size of part `index` (from 0): the first size, doubled every
    /// `max_parts / 11` parts, at most 5 GiB.
    pub fn part_size_of(&self, index: u32) -> usize {
        let step = (self.max_parts / PART_SIZE_DOUBLINGS).max(1);
        let doublings = (index / step).min(PART_SIZE_DOUBLINGS + 1);
        (self.part_size << doublings).min(MAX_PART_BYTES)
    }

    /// The largest artifact that can be stored: what `max_parts` parts hold, at most
    /// `max_object_bytes`.
    pub fn largest_object(&self) -> u64 {
        let step = (self.max_parts / PART_SIZE_DOUBLINGS).max(1);
        let mut capacity = 0u64;
        let mut index = 0u32;
        while index < self.max_parts && capacity < self.max_object_bytes {
            let parts = step.min(self.max_parts - index);
            capacity = capacity.saturating_add(u64::from(parts) * self.part_size_of(index) as u64);
            index += parts;
        }
        capacity.min(self.max_object_bytes)
    }

    /// Bytes of parts that may be uploading at once, across all artifacts of a backup.
    fn upload_budget(&self) -> usize {
        self.part_size * self.parts_in_flight.max(1)
    }
}

/// Host memory shared by every artifact of one backup: plain bytes queued for encoding
/// and stored bytes being uploaded are bounded in bytes, however many writers are open
/// and however large each write is.
#[derive(Debug, Clone)]
pub struct TransferBudget {
    queued: Arc<Semaphore>,
    uploading: Arc<Semaphore>,
    queued_limit: usize,
    uploading_limit: usize,
}

impl TransferBudget {
    /// Plain bytes queued across all writers of a backup.
    pub const QUEUED_BYTES: usize = 16 << 20;

    pub fn new(limits: &TransferLimits) -> Self {
        let uploading_limit = limits.upload_budget();
        TransferBudget {
            queued: Arc::new(Semaphore::new(Self::QUEUED_BYTES)),
            uploading: Arc::new(Semaphore::new(uploading_limit)),
            queued_limit: Self::QUEUED_BYTES,
            uploading_limit,
        }
    }

    /// Wait until `bytes` more may be held (a request larger than the whole budget waits
    /// for all of it).
    async fn reserve(semaphore: &Arc<Semaphore>, limit: usize, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes.clamp(1, limit)).unwrap_or(u32::MAX);
        Arc::clone(semaphore).acquire_many_owned(permits).await.ok()
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
    chunks: Option<mpsc::Sender<(Bytes, OwnedSemaphorePermit)>>,
    budget: TransferBudget,
    encoder: Option<JoinHandle<io::Result<UploadOutcome>>>,
    commit: Option<oneshot::Sender<()>>,
    stored: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

/// The background half of an [`ArtifactUpload`]; resolves to whether the object was
/// committed. Await it before exiting so that aborted uploads are cleaned up.
pub type UploadTask = JoinHandle<bool>;

impl ArtifactUpload {
    /// Start streaming into `key`. Must be called within a Tokio runtime.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        key: String,
        codec: Codec,
        limits: TransferLimits,
        budget: TransferBudget,
    ) -> (Self, UploadTask) {
        let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_QUEUED);
        // One finished part waits while the others upload; the budget bounds the rest.
        let (part_tx, part_rx) = mpsc::channel(1);
        let (commit_tx, commit_rx) = oneshot::channel();
        let (stored_tx, stored_rx) = oneshot::channel();
        let encoder = tokio::task::spawn_blocking(move || encode(chunk_rx, part_tx, &codec, limits));
        let uploading = budget.clone();
        let task = tokio::spawn(async move {
            let result = upload(store, &key, part_rx, commit_rx, uploading).await;
            let committed = matches!(result, Ok(true));
            if let Err(error) = &result {
                tracing::warn!(%key, %error, "artifact upload failed");
            }
            let _ = stored_tx.send(result.map(|_| ()));
            committed
        });
        let upload = ArtifactUpload {
            chunks: Some(chunk_tx),
            budget,
            encoder: Some(encoder),
            commit: Some(commit_tx),
            stored: Some(stored_rx),
        };
        (upload, task)
    }

    /// Append plain bytes. Waits while the pipeline is full: queued bytes are bounded
    /// across all artifacts of the backup.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), UploadError> {
        let chunks = self.chunks.as_ref().ok_or(UploadError::Finished)?.clone();
        let data = Bytes::from(data);
        let mut offset = 0;
        while offset < data.len() {
            let slice = data.slice(offset..data.len().min(offset + SLICE));
            offset += slice.len();
            let budget = &self.budget;
            let permit = TransferBudget::reserve(&budget.queued, budget.queued_limit, slice.len())
                .await
                .ok_or(UploadError::Stopped)?;
            if chunks.send((slice, permit)).await.is_err() {
                // The encoder stopped early; finishing reports why.
                return Err(self.finish().await.err().unwrap_or(UploadError::Stopped));
            }
        }
        Ok(())
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
    mut chunks: mpsc::Receiver<(Bytes, OwnedSemaphorePermit)>,
    parts: mpsc::Sender<Bytes>,
    codec: &Codec,
    limits: TransferLimits,
) -> io::Result<UploadOutcome> {
    let mut writer = codec.encoder(PartSink::new(parts, limits))?;
    let mut raw_size = 0u64;
    // Each chunk's permit is released once the chunk is encoded.
    while let Some((chunk, _permit)) = chunks.blocking_recv() {
        raw_size += chunk.len() as u64;
        writer.write_all(&chunk)?;
    }
    let (stored_size, sha256) = writer.finish()?.finish()?;
    Ok(UploadOutcome { raw_size, stored_size, sha256 })
}

/// Cuts the stored byte stream into parts (growing as the artifact grows) while hashing
/// and counting it.
struct PartSink {
    parts: mpsc::Sender<Bytes>,
    limits: TransferLimits,
    largest: u64,
    buffer: Vec<u8>,
    hasher: Sha256,
    size: u64,
    sent: u32,
}

impl PartSink {
    fn new(parts: mpsc::Sender<Bytes>, limits: TransferLimits) -> Self {
        PartSink {
            parts,
            limits,
            largest: limits.largest_object(),
            buffer: Vec::new(),
            hasher: Sha256::new(),
            size: 0,
            sent: 0,
        }
    }

    fn part_size(&self) -> usize {
        self.limits.part_size_of(self.sent)
    }

    fn send(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.buffer);
        self.sent += 1;
        self.parts.blocking_send(Bytes::from(part)).map_err(|_| io::Error::other("the upload stopped"))
    }

    /// Send the last part (possibly empty, so that empty objects exist too).
    fn finish(mut self) -> io::Result<(u64, String)> {
        if !self.buffer.is_empty() || self.sent == 0 {
            self.send()?;
        }
        Ok((self.size, hex::encode(self.hasher.finalize())))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let part_size = self.part_size();
        if self.buffer.capacity() == 0 {
            // Allocated when bytes arrive, at the part's size: no doubling past it.
            self.buffer.reserve_exact(part_size);
        }
        let n = data.len().min(part_size - self.buffer.len());
        if self.size + n as u64 > self.largest {
            return Err(io::Error::other(format!(
                "the artifact is larger than {} bytes, the largest object the store accepts in {} parts",
                self.largest, self.limits.max_parts
            )));
        }
        self.buffer.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        if self.buffer.len() == part_size {
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
    budget: TransferBudget,
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
    let result = upload_parts(&upload, [first, second], &mut parts, commit, &budget).await;
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
    budget: &TransferBudget,
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
        // Wait for upload memory, finishing this artifact's own parts meanwhile.
        let permit = loop {
            let reserve = TransferBudget::reserve(&budget.uploading, budget.uploading_limit, part.len());
            tokio::select! {
                permit = reserve => break permit,
                Some(done) = running.join_next(), if !running.is_empty() => completed.push(joined(Some(done))?),
            }
        };
        number += 1;
        let upload = Arc::clone(upload);
        running.spawn(async move {
            let _permit = permit;
            upload.put_part(number, part).await
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_the_part_limit_holds_five_tebibytes() {
        let limits = TransferLimits { part_size: 5 << 20, ..TransferLimits::default() };
        assert_eq!(limits.part_size_of(0), 5 << 20);
        assert_eq!(limits.part_size_of(908), 5 << 20);
        assert_eq!(limits.part_size_of(909), 10 << 20);
        assert_eq!(limits.part_size_of(9_999), MAX_PART_BYTES.min((5 << 20) << 11));
        assert_eq!(limits.largest_object(), 5 << 40);
        let default = TransferLimits::default();
        assert_eq!(default.largest_object(), 5 << 40);
        // Most artifacts never leave the first size: 8 MiB parts up to 7 GiB.
        assert_eq!(default.part_size_of(908), 8 << 20);
    }

    #[test]
    fn a_lowered_part_limit_grows_parts_sooner_and_caps_the_object() {
        let limits = TransferLimits { part_size: 5 << 20, max_parts: 22, ..TransferLimits::default() };
        let sizes: Vec<usize> = (0..6).map(|index| limits.part_size_of(index) >> 20).collect();
        assert_eq!(sizes, [5, 5, 10, 10, 20, 20]);
        // 2 parts of each of 5, 10, ..., 5 << 10 MiB.
        assert_eq!(limits.largest_object(), (2 * 5 * ((1 << 11) - 1)) << 20);
    }
}
