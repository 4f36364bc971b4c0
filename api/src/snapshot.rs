//! `DatabaseSnapshot`: one complete backup in a repository, visible with kubectl. The
//! run that commits a backup creates its object, and the run whose retention removes the
//! backup removes it; every field needed to restore it is in the object, so a restore
//! needs nothing else (not even the DatabaseBackup that wrote it, which may be gone or in
//! another cluster). The object is a view: deleting it, or its DatabaseBackup, never
//! deletes the stored backup.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{Database, PluginSource, Repo};
use crate::status::DrillOutcome;

/// Label of a snapshot object: the DatabaseBackup configuration it belongs to.
pub const LABEL_CONFIGURATION: &str = "stowage.dev/backup";
/// Label of a snapshot object: the name of its repository in that configuration.
pub const LABEL_REPO: &str = "stowage.dev/repo";

/// A complete backup stored in a repository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stowage.dev",
    version = "v1alpha1",
    kind = "DatabaseSnapshot",
    namespaced,
    status = "DatabaseSnapshotStatus",
    shortname = "dbsnap",
    category = "stowage",
    category = "all",
    doc = "A complete backup in a repository, created by the run that committed it and removed with it by retention. Deleting this object, or its DatabaseBackup, does not delete the stored backup.",
    printcolumn = r#"{"name": "Configuration", "type": "string", "jsonPath": ".spec.databaseBackup"}"#,
    printcolumn = r#"{"name": "Repo", "type": "string", "jsonPath": ".spec.repo.name"}"#,
    printcolumn = r#"{"name": "Time", "type": "date", "jsonPath": ".spec.finishedAt"}"#,
    printcolumn = r#"{"name": "Size", "type": "integer", "jsonPath": ".spec.bytes"}"#,
    printcolumn = r#"{"name": "Stored", "type": "integer", "jsonPath": ".spec.storedBytes"}"#,
    printcolumn = r#"{"name": "Plugin", "type": "string", "jsonPath": ".spec.plugin.name"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".spec.plugin.version"}"#,
    printcolumn = r#"{"name": "Verified", "type": "string", "jsonPath": ".status.verification.reason"}"#,
    printcolumn = r#"{"name": "Digest", "type": "string", "jsonPath": ".spec.plugin.sha256", "priority": 1}"#,
    printcolumn = r#"{"name": "Backup", "type": "string", "jsonPath": ".spec.backupId", "priority": 1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSnapshotSpec {
    /// The DatabaseBackup configuration the backup belongs to: the second part of its path
    /// in the repository.
    pub database_backup: String,
    /// The namespace that configuration was in when the backup was taken: the first part of
    /// its path (another namespace, or another cluster's, for imported backups).
    pub source_namespace: String,
    /// The backup's id in the repository.
    pub backup_id: String,
    /// The repository it is stored in, as the configuration named it (credentials by Secret
    /// name, never the keys themselves).
    pub repo: Repo,
    /// When the backup started and was committed (RFC 3339).
    pub started_at: String,
    pub finished_at: String,
    /// Plain bytes the plugin produced.
    pub bytes: u64,
    /// Bytes stored after compression and encryption.
    pub stored_bytes: u64,
    /// The number of artifacts.
    pub artifacts: u32,
    /// Whether the artifacts are encrypted (a restore needs an age identity).
    #[serde(default)]
    pub encrypted: bool,
    /// The plugin that wrote the backup; a restore uses the same digest.
    pub plugin: SnapshotPlugin,
    /// The database that was backed up: the default target of a restore.
    pub database: Database,
    /// What the plugin reported about the backup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// What is known about a stored backup besides its record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSnapshotStatus {
    /// The newest restore drill of this backup (the drill runner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<DrillOutcome>,
}

/// The plugin that wrote a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPlugin {
    /// The plugin's name and version, as its metadata says.
    pub name: String,
    pub version: String,
    /// The sha256 of the component, lowercase hex.
    pub sha256: String,
    /// Where to fetch it for a restore: the configuration's source, pinned to `sha256`.
    pub source: PluginSource,
}

/// The name of the snapshot object of backup `backup_id` of configuration `configuration`:
/// both, lowercased (backup ids are `YYYYMMDDTHHMMSSZ-hex`). Names that are not plain
/// (characters a name cannot hold, or too long: a foreign bucket may hold anything) are
/// made plain and carry a hash of the whole, so that two backups never share a name.
pub fn snapshot_name(configuration: &str, backup_id: &str) -> String {
    const MAX: usize = 253;
    let wanted = format!("{configuration}-{backup_id}").to_ascii_lowercase();
    plain(&wanted, MAX, &[configuration, backup_id])
}

/// A label value for `value` (at most 63 characters of letters, digits, `-`, `_`, `.`):
/// the value itself when it is one, else a plain form with a hash of it.
pub fn label_value(value: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends_plain =
        value.starts_with(|c: char| c.is_ascii_alphanumeric()) && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if value.is_empty() || (value.len() <= 63 && value.chars().all(allowed) && ends_plain) {
        return value.to_owned();
    }
    plain(&value.to_ascii_lowercase(), 63, &[value])
}

/// `wanted` as a DNS name of at most `max` characters; when it is not one already, the
/// characters it cannot hold become `-` and a hash of `parts` ends it.
fn plain(wanted: &str, max: usize, parts: &[&str]) -> String {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
    let ends_plain = wanted.starts_with(|c: char| c.is_ascii_alphanumeric())
        && wanted.ends_with(|c: char| c.is_ascii_alphanumeric());
    if wanted.len() <= max && wanted.chars().all(allowed) && ends_plain {
        return wanted.to_owned();
    }
    let digest = crate::short_hash(parts);
    let mapped: String = wanted.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    let keep = max.saturating_sub(digest.len() + 1).min(mapped.len());
    let head = mapped[..keep].trim_matches(['-', '.']);
    if head.is_empty() { digest } else { format!("{head}-{digest}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_lowercase_unique_and_fit() {
        assert_eq!(snapshot_name("orders", "20261204T101500Z-0a1b2c"), "orders-20261204t101500z-0a1b2c");
        let long_a = format!("{}a", "x".repeat(240));
        let long_b = format!("{}b", "x".repeat(240));
        let (a, b) =
            (snapshot_name(&long_a, "20261204T101500Z-0a1b2c"), snapshot_name(&long_b, "20261204T101500Z-0a1b2c"));
        assert_ne!(a, b);
        assert!(a.len() <= 253 && b.len() <= 253, "{} {}", a.len(), b.len());
        // A foreign bucket's odd names (a CLI configuration with `_`, an id of 300 characters).
        let odd = snapshot_name("My_DB", &"9".repeat(300));
        assert!(odd.len() <= 253 && odd.starts_with("my-db-"), "{odd}");
        assert!(odd.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{odd}");
    }

    #[test]
    fn label_values_are_the_name_when_they_can_be() {
        assert_eq!(label_value("orders"), "orders");
        let long = label_value(&"x".repeat(100));
        assert!(long.len() <= 63 && long != label_value(&"x".repeat(101)), "{long}");
        assert!(!label_value("-odd_").starts_with('-'));
    }
}
