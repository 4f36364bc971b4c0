//! Streaming one stored artifact back as plain bytes, verified against its manifest entry.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::Identities;
use super::codec::decoder;
use crate::manifest::ArtifactEntry;
use crate::store::{ObjectStore, StoreError};

/// Plain bytes decoded per chunk, and chunks queued for the reader.
const CHUNK: usize = 256 * 1024;
const CHUNKS_QUEUED: usize = 4;

/// Why an artifact could not be read back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("artifact {name} is corrupt: its sha256 is {actual}, the manifest says {expected}")]
    ChecksumMismatch { name: String, expected: String, actual: String },
    #[error("artifact {name} is corrupt: {actual} bytes stored, the manifest says {expected}")]
    SizeMismatch { name: String, expected: u64, actual: u64 },
    #[error("artifact {name} cannot be decoded: {message}")]
    Decode { name: String, message: String },
    #[error("reading artifact {name} stopped unexpectedly")]
    Stopped { name: String },
}

impl From<StoreError> for DownloadError {
    fn from(error: StoreError) -> Self {
        DownloadError::Store(Arc::new(error))
    }
}

/// The plain bytes of a stored artifact. The last chunk is handed out only after the
/// whole stored object matched the manifest's size and sha256, so a reader that sees the
/// end of the stream has seen verified data.
#[derive(Debug)]
pub struct ArtifactDownload {
    chunks: mpsc::Receiver<Result<Bytes, DownloadError>>,
    current: Bytes,
    ended: bool,
}

impl ArtifactDownload {
    /// Start downloading `entry` from the backup stored under `backup_prefix`.
    pub async fn open(
        store: &Arc<dyn ObjectStore>,
        backup_prefix: &str,
        entry: &ArtifactEntry,
        identities: Arc<Identities>,
    ) -> Result<Self, DownloadError> {
        let reader = store.reader(&format!("{backup_prefix}{}", entry.object)).await?;
        let source = SyncIoBridge::new(reader);
        let (tx, rx) = mpsc::channel(CHUNKS_QUEUED);
        let entry = entry.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = decode(source, &entry, &identities, &tx) {
                let _ = tx.blocking_send(Err(error));
            }
        });
        Ok(ArtifactDownload { chunks: rx, current: Bytes::new(), ended: false })
    }

    /// Up to `max` plain bytes; empty at the verified end of the artifact.
    pub async fn read(&mut self, max: usize) -> Result<Bytes, DownloadError> {
        while self.current.is_empty() && !self.ended {
            match self.chunks.recv().await {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => self.ended = true,
            }
        }
        let n = max.min(self.current.len());
        Ok(self.current.split_to(n))
    }

    /// Read to the end, discarding the bytes; returns the plain size.
    pub async fn read_to_end(&mut self) -> Result<u64, DownloadError> {
        let mut total = 0u64;
        loop {
            let chunk = self.read(CHUNK).await?;
            if chunk.is_empty() {
                return Ok(total);
            }
            total += chunk.len() as u64;
        }
    }
}

/// Check the stored bytes of an artifact against its manifest entry (size and sha256)
/// without decoding them: cheap, because stored bytes are compressed.
pub async fn check_stored(
    store: &Arc<dyn ObjectStore>,
    backup_prefix: &str,
    entry: &ArtifactEntry,
) -> Result<(), DownloadError> {
    let mut reader = store.reader(&format!("{backup_prefix}{}", entry.object)).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buffer).await.map_err(|e| DownloadError::Decode {
            name: entry.name.clone(),
            message: format!("reading the stored object: {e}"),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    check_digest(entry, size, hex::encode(hasher.finalize()))
}

fn check_digest(entry: &ArtifactEntry, size: u64, sha256: String) -> Result<(), DownloadError> {
    if size != entry.stored_size {
        return Err(DownloadError::SizeMismatch {
            name: entry.name.clone(),
            expected: entry.stored_size,
            actual: size,
        });
    }
    if sha256 != entry.sha256 {
        return Err(DownloadError::ChecksumMismatch {
            name: entry.name.clone(),
            expected: entry.sha256.clone(),
            actual: sha256,
        });
    }
    Ok(())
}

/// Check that a stored artifact matches its manifest entry and decodes completely;
/// returns its plain size.
pub async fn verify_object(
    store: &Arc<dyn ObjectStore>,
    backup_prefix: &str,
    entry: &ArtifactEntry,
    identities: Arc<Identities>,
) -> Result<u64, DownloadError> {
    let size = ArtifactDownload::open(store, backup_prefix, entry, identities).await?.read_to_end().await?;
    if size != entry.raw_size {
        return Err(DownloadError::Decode {
            name: entry.name.clone(),
            message: format!("{size} plain bytes, the manifest says {}", entry.raw_size),
        });
    }
    Ok(size)
}

/// The blocking stage: stored bytes -> hash check -> decryption -> decompression -> chunks.
fn decode(
    source: impl Read,
    entry: &ArtifactEntry,
    identities: &Identities,
    tx: &mpsc::Sender<Result<Bytes, DownloadError>>,
) -> Result<(), DownloadError> {
    let name = || entry.name.clone();
    let mut stored = HashingReader { inner: source, hasher: Sha256::new(), size: 0 };
    let mut held: Option<Bytes> = None;
    let decoded =
        decoder(&mut stored, entry.compression, entry.encryption.as_ref(), identities).and_then(|mut plain| {
            loop {
                let mut buffer = vec![0u8; CHUNK];
                let n = read_full(&mut plain, &mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                buffer.truncate(n);
                if let Some(previous) = held.replace(Bytes::from(buffer)) {
                    tx.blocking_send(Ok(previous)).map_err(|_| io::Error::other("the reader went away"))?;
                }
            }
        });
    // Hash whatever the decoder did not consume: a corrupt object is reported as such,
    // not as the decoding error it caused.
    let drained = io::copy(&mut stored, &mut io::sink());
    let actual = hex::encode(stored.hasher.finalize());
    if let Err(error) = drained {
        return Err(DownloadError::Decode { name: name(), message: error.to_string() });
    }
    check_digest(entry, stored.size, actual)?;
    decoded.map_err(|error| DownloadError::Decode { name: name(), message: error.to_string() })?;
    if let Some(last) = held {
        tx.blocking_send(Ok(last)).map_err(|_| DownloadError::Stopped { name: name() })?;
    }
    Ok(())
}

/// Fill `buffer` as far as the stream allows; 0 only at its end.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..n]);
        self.size += n as u64;
        Ok(n)
    }
}
