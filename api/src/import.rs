//! `DatabaseSnapshotImport`: make the backups of a repository visible here as
//! DatabaseSnapshot objects, whoever wrote them (another namespace, another cluster that
//! is gone): the way back from nothing but the bucket. One run of the runner per
//! generation lists the repository and brings the import's objects in line with it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{PluginSource, Repo, ServiceAccountTemplate};
use crate::restore::OneShotRuns;
use crate::validation::{FieldError, InvalidSpec};

/// Label of the snapshot objects an import made: the import's name.
pub const LABEL_IMPORT: &str = "stowage.dev/import";

/// Import the backups of a repository as DatabaseSnapshot objects in this namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "stowage.dev",
    version = "v1alpha1",
    kind = "DatabaseSnapshotImport",
    namespaced,
    status = "DatabaseSnapshotImportStatus",
    shortname = "dbimport",
    category = "stowage",
    category = "all",
    doc = "The backups of a repository (written by any namespace or cluster) as DatabaseSnapshot objects here, imported once per generation; change `refresh` to import again. Deleting it removes the objects, never the backups.",
    printcolumn = r#"{"name": "Repo", "type": "string", "jsonPath": ".spec.repo.name"}"#,
    printcolumn = r#"{"name": "Snapshots", "type": "integer", "jsonPath": ".status.imported.snapshots"}"#,
    printcolumn = r#"{"name": "Succeeded", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.repo.bucket) || !has(self.repo.bucketNamePrefix) || has(self.sourceNamespace)")
        .message("repo.bucketNamePrefix names a bucket per namespace: set sourceNamespace (or bucket)"),
    validation = Rule::new("!has(self.databaseBackup) || has(self.sourceNamespace)")
        .message("databaseBackup needs sourceNamespace: a configuration is named within one")
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSnapshotImportSpec {
    /// The repository, as a DatabaseBackup names one (credentials from `secretName` in this
    /// namespace, or the runner ServiceAccount's cloud identity).
    pub repo: Repo,
    /// Only the backups of configurations that were in this namespace (the first part of
    /// their path). Unset: every namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Only the backups of this configuration (the second part of their path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_backup: Option<String>,
    /// Where restores of the imported backups fetch their plugin, pinned to each backup's
    /// digest. Unset: the runner's builtin plugin of the name each backup records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSource>,
    /// Any value; a new one imports again (so does any other change of the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Metadata for the import runner's ServiceAccount (a cloud identity, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_template: Option<ServiceAccountTemplate>,
}

impl DatabaseSnapshotImportSpec {
    /// Check the rules the schema cannot say.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Vec::new();
        if self.repo.bucket.is_none() && self.repo.bucket_name_prefix.is_none() {
            errors.push(FieldError::new("spec.repo", "sets neither bucket nor bucketNamePrefix"));
        }
        if self.repo.bucket.is_none() && self.repo.bucket_name_prefix.is_some() && self.source_namespace.is_none() {
            errors.push(FieldError::new(
                "spec.repo.bucketNamePrefix",
                "names a bucket per namespace: set sourceNamespace (or bucket)",
            ));
        }
        if self.database_backup.is_some() && self.source_namespace.is_none() {
            errors.push(FieldError::new(
                "spec.databaseBackup",
                "needs sourceNamespace: a configuration is named within one",
            ));
        }
        if let Some(plugin) = &self.plugin
            && let Err(error) = plugin.source()
        {
            errors.push(error);
        }
        if errors.is_empty() { Ok(()) } else { Err(InvalidSpec(errors)) }
    }
}

/// What is known about an import.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSnapshotImportStatus {
    #[serde(flatten)]
    pub runs: OneShotRuns,
    /// What the last run found (the runner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

/// What an import run found and changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// Complete backups in the repository that the import covers: one object each.
    pub snapshots: u32,
    /// Objects created and removed by the run.
    pub created: u32,
    pub removed: u32,
    /// When the repository was listed (RFC 3339).
    pub time: String,
}
