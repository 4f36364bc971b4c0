//! `manifest.json`: the description of one backup, written after every artifact is
//! stored. Its presence is what makes a backup exist.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, Encryption};

/// The manifest format written by this version of Stowage.
pub const FORMAT_VERSION: u32 = 1;
/// The directory of a backup that holds its artifact objects.
pub const DATA_DIR: &str = "data/";
/// Names the host uses itself; no artifact may take them.
pub const RESERVED_NAMES: [&str; 2] = ["manifest.json", "lock.json"];
/// Clock skew tolerated for a backup's start time.
const MAX_CLOCK_SKEW: chrono::Duration = chrono::Duration::hours(1);

/// Artifact names are plain file names: no paths, no hidden files, nothing to escape,
/// and none of the host's own names.
pub fn valid_artifact_name(name: &str) -> bool {
    plain_file_name(name) && !RESERVED_NAMES.contains(&name)
}

fn plain_file_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Why a manifest cannot be trusted as a backup of its directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestProblem {
    #[error("it has format version {found}; this runner reads up to {FORMAT_VERSION} (upgrade Stowage to read it)")]
    NewerFormat { found: u32 },
    #[error("it describes backup {claimed}, not the backup {actual} of its directory")]
    ForeignDirectory { claimed: String, actual: String },
    #[error("artifact {name:?} has an invalid name or object {object:?}")]
    InvalidArtifact { name: String, object: String },
    #[error("it starts in the future ({started_at})")]
    FutureStart { started_at: DateTime<Utc> },
}

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

    /// Check that this manifest can describe backup `id` of `namespace/name`, the
    /// directory it was read from: a known format, the same identity, and every artifact
    /// object a plain file inside the backup's `data/` directory.
    pub fn check_belongs_to(&self, namespace: &str, name: &str, id: &str) -> Result<(), ManifestProblem> {
        if self.format_version > FORMAT_VERSION {
            return Err(ManifestProblem::NewerFormat { found: self.format_version });
        }
        if (self.namespace.as_str(), self.name.as_str(), self.backup_id.as_str()) != (namespace, name, id) {
            return Err(ManifestProblem::ForeignDirectory {
                claimed: format!("{}/{}/{}", self.namespace, self.name, self.backup_id),
                actual: format!("{namespace}/{name}/{id}"),
            });
        }
        for artifact in &self.artifacts {
            let file = artifact.object.strip_prefix(DATA_DIR).unwrap_or_default();
            if !valid_artifact_name(&artifact.name) || !plain_file_name(file) || !file.starts_with(&artifact.name) {
                return Err(ManifestProblem::InvalidArtifact {
                    name: artifact.name.clone(),
                    object: artifact.object.clone(),
                });
            }
        }
        if self.started_at > Utc::now() + MAX_CLOCK_SKEW {
            return Err(ManifestProblem::FutureStart { started_at: self.started_at });
        }
        Ok(())
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

/// A manifest of backup `id` of `ns/db` with one artifact, for tests.
#[cfg(test)]
pub(crate) fn sample(id: &str, started_at: DateTime<Utc>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        backup_id: id.into(),
        namespace: "ns".into(),
        name: "db".into(),
        started_at,
        finished_at: started_at,
        plugin: PluginEntry {
            source: "builtin:p".into(),
            name: "p".into(),
            version: "1".into(),
            sha256: "00".into(),
            wit_version: "0.1.0".into(),
        },
        database: DatabaseEntry { host: "h".into(), port: 1, database: "d".into() },
        artifacts: vec![ArtifactEntry {
            name: "data.sql".into(),
            media_type: "application/sql".into(),
            object: "data/data.sql.zst".into(),
            raw_size: 1,
            stored_size: 1,
            sha256: "00".into(),
            compression: crate::archive::Compression::Zstd { level: 3 },
            encryption: None,
        }],
        summary: SummaryEntry::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        sample("20260101T000000Z-abcdef", Utc::now())
    }

    #[test]
    fn a_manifest_belongs_only_to_its_own_directory() {
        let good = manifest();
        assert_eq!(good.check_belongs_to("ns", "db", &good.backup_id), Ok(()));
        assert!(matches!(
            good.check_belongs_to("ns", "other", &good.backup_id),
            Err(ManifestProblem::ForeignDirectory { .. })
        ));
        assert!(matches!(
            good.check_belongs_to("ns", "db", "another-id"),
            Err(ManifestProblem::ForeignDirectory { .. })
        ));
        let newer = Manifest { format_version: FORMAT_VERSION + 1, ..manifest() };
        assert_eq!(
            newer.check_belongs_to("ns", "db", &newer.backup_id),
            Err(ManifestProblem::NewerFormat { found: FORMAT_VERSION + 1 })
        );
        let future = Manifest { started_at: Utc::now() + chrono::Duration::days(3), ..manifest() };
        assert!(matches!(
            future.check_belongs_to("ns", "db", &future.backup_id),
            Err(ManifestProblem::FutureStart { .. })
        ));
    }

    #[test]
    fn artifact_objects_stay_inside_the_backup() {
        for (name, object) in [
            ("data.sql", "../../other/x/data/data.sql"),
            ("data.sql", "data/../../../etc/passwd"),
            ("data.sql", "data/sub/data.sql"),
            ("data.sql", "/etc/passwd"),
            ("data.sql", "manifest.json"),
            ("data.sql", "data/other.sql"),
            ("manifest.json", "data/manifest.json"),
            ("../x", "data/../x"),
        ] {
            let mut bad = manifest();
            bad.artifacts[0].name = name.into();
            bad.artifacts[0].object = object.into();
            assert!(
                matches!(
                    bad.check_belongs_to("ns", "db", &bad.backup_id),
                    Err(ManifestProblem::InvalidArtifact { .. })
                ),
                "{name} -> {object}"
            );
        }
    }

    #[test]
    fn artifact_names_are_plain_file_names() {
        for good in ["schema.sql", "table-0001.copy", "a", "public.users_2024"] {
            assert!(valid_artifact_name(good), "{good}");
        }
        for bad in ["", ".hidden", "../escape", "dir/file", "space name", "ü", &"x".repeat(201), "manifest.json"] {
            assert!(!valid_artifact_name(bad), "{bad}");
        }
    }
}
