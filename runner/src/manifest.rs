//! `manifest.json`: the description of one backup, written after every artifact is
//! stored. Its presence is what makes a backup exist.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, Encryption};

/// The manifest format written by this version of Stowage.
pub const FORMAT_VERSION: u32 = 1;

/// One backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    pub backup_id: String,
    /// The namespace and name of the backup configuration this backup belongs to.
    pub namespace: String,
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub plugin: PluginEntry,
    pub database: DatabaseEntry,
    /// In the order the plugin created them.
    pub artifacts: Vec<ArtifactEntry>,
    pub summary: SummaryEntry,
}

impl Manifest {
    /// Bytes stored for all artifacts.
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_size).sum()
    }

    /// Plain bytes of all artifacts.
    pub fn raw_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.raw_size).sum()
    }
}

/// The plugin that wrote the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginEntry {
    /// Where the component came from (a path, `builtin:NAME`, `configMap:NAME/KEY`).
    pub source: String,
    pub name: String,
    pub version: String,
    /// sha256 of the plugin component, lowercase hex.
    pub sha256: String,
    /// Version of the `stowage:plugin` WIT package the plugin was built for.
    pub wit_version: String,
}

/// Where the data came from; never credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEntry {
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// One stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactEntry {
    /// The name the plugin gave it.
    pub name: String,
    pub media_type: String,
    /// The object's key relative to the backup's directory.
    pub object: String,
    /// Plain bytes, as the plugin wrote them.
    pub raw_size: u64,
    /// Bytes stored, after compression and encryption.
    pub stored_size: u64,
    /// sha256 of the stored bytes, lowercase hex.
    pub sha256: String,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// What the plugin reported about the backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub description: String,
    pub attributes: BTreeMap<String, String>,
}
