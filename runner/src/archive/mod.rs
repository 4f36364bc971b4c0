//! The archive pipeline: how artifact bytes become stored objects and back.
//!
//! Backup: plugin bytes -> zstd -> age encryption -> sha256 + size -> parts -> upload.
//! Restore: download -> sha256 check -> age decryption -> zstd -> plugin.
//! Compression and encryption run on blocking threads, uploads on the async runtime;
//! bounded channels between the stages keep memory flat whatever the artifact size.

mod codec;
mod download;
mod upload;

pub use codec::{Codec, Compression, Encryption, Identities, Recipients};
pub use download::{ArtifactDownload, DownloadError, check_stored, verify_object};
pub use upload::{ArtifactUpload, TransferBudget, TransferLimits, UploadError, UploadOutcome, UploadTask};
