//! Restore drills: restore a backup into a scratch database and compare what the plugin
//! reports of the restore with what it reported of the backup. The counts and digests a
//! plugin reports under the same name in both summaries (`tables`, `rows`, `keys`,
//! `keys_db0`, ...: attributes whose values are whole numbers in both; and digests named
//! `*_sha256`, such as PostgreSQL's rows per table) must be equal; a drill with nothing to
//! compare does not pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use stowage_api::drill_conflict;

use crate::manifest::Manifest;
use crate::plugin::Plugin;
use crate::repository::Repository;
use crate::restore::{RestoreError, RestoreRequest, run_restore};
use crate::settings::DatabaseTarget;

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillReport {
    /// The backup drilled, when one was found.
    pub backup_id: Option<String>,
    pub verdict: Verdict,
    /// The counts compared, `name: backup/restore`, in name order.
    pub compared: Vec<String>,
    pub duration_seconds: u64,
}

/// How a drill ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Restored, and every count equal.
    Passed,
    /// Restored, but these counts differ.
    CountsDiffer(Vec<String>),
    /// Restored, but the plugin reports no count under the same name for both.
    NothingToCompare,
    /// The restore failed: its reason and message.
    RestoreFailed { reason: &'static str, message: String },
}

impl Verdict {
    /// The CamelCase reason of the `Verified` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Passed => "DrillPassed",
            Verdict::CountsDiffer(_) => "CountsDiffer",
            Verdict::NothingToCompare => "NothingToCompare",
            Verdict::RestoreFailed { reason, .. } => reason,
        }
    }

    pub fn passed(&self) -> bool {
        *self == Verdict::Passed
    }
}

impl DrillReport {
    /// One line for people.
    pub fn message(&self, target: &str) -> String {
        let backup = self.backup_id.as_deref().unwrap_or("no backup");
        match &self.verdict {
            Verdict::Passed => format!(
                "backup {backup} restored into {target} in {} s with the counts of the backup: {}",
                self.duration_seconds,
                self.compared.join(", ")
            ),
            Verdict::CountsDiffer(differing) => format!(
                "backup {backup} restored into {target}, but the counts differ from the backup's: {}",
                differing.join(", ")
            ),
            Verdict::NothingToCompare => format!(
                "backup {backup} restored into {target}, but the plugin reports no count for both the backup and \
                 the restore, so nothing was verified"
            ),
            Verdict::RestoreFailed { message, .. } => {
                format!("restoring backup {backup} into {target} failed: {message}")
            }
        }
    }
}

/// Restore `request` (its target a scratch database, replaced) and compare the counts.
/// The backup is looked up first, so that a restore that fails is the drill of that backup.
pub async fn run_drill(plugin: &Plugin, repository: &Repository, request: &RestoreRequest) -> DrillReport {
    let started = Instant::now();
    let (backup_id, verdict, compared) = drill(plugin, repository, request).await;
    DrillReport { backup_id, verdict, compared, duration_seconds: started.elapsed().as_secs() }
}

async fn drill(
    plugin: &Plugin,
    repository: &Repository,
    request: &RestoreRequest,
) -> (Option<String>, Verdict, Vec<String>) {
    let failed = |error: RestoreError| Verdict::RestoreFailed { reason: error.reason(), message: error.to_string() };
    let manifest = match repository.find(&request.namespace, &request.name, &request.backup).await {
        Ok(manifest) => manifest,
        Err(error) => return (None, failed(error.into()), Vec::new()),
    };
    let target = &request.database;
    if let Some(conflict) = conflict(&manifest, target).await {
        let message = format!("the drill target {}:{}/{} {conflict}", target.host, target.port, target.database);
        return (
            Some(manifest.backup_id),
            Verdict::RestoreFailed { reason: "DrillTargetIsSource", message },
            Vec::new(),
        );
    }
    let request = RestoreRequest { backup: manifest.backup_id.clone(), ..request.clone() };
    match run_restore(plugin, repository, &request).await {
        Ok((manifest, summary)) => {
            let (verdict, compared) = compare(&manifest, &summary.attributes);
            (Some(manifest.backup_id), verdict, compared)
        }
        Err(error) => (Some(manifest.backup_id), failed(error), Vec::new()),
    }
}

/// Why `target` may be the database `manifest` was taken from (see
/// [`stowage_api::drill_conflict`]): checked before anything is restored, with both
/// endpoints resolved, so that two names of one server are one server.
async fn conflict(manifest: &Manifest, target: &DatabaseTarget) -> Option<String> {
    let source = &manifest.database;
    let same_name = source.host.eq_ignore_ascii_case(&target.host) && source.port == target.port;
    let same_server = same_name || {
        let resolved = tokio::net::lookup_host((source.host.as_str(), source.port)).await;
        let source_addresses: BTreeSet<SocketAddr> = resolved.map(Iterator::collect).unwrap_or_default();
        let target_addresses = target.resolve().await.unwrap_or_default();
        target_addresses.iter().any(|address| source_addresses.contains(address))
    };
    drill_conflict(Some(&manifest.plugin.name), &source.database, &target.database, same_server)
}

/// Compare the counts and digests the backup's and the restore's summaries share.
fn compare(manifest: &Manifest, restored: &[(String, String)]) -> (Verdict, Vec<String>) {
    let comparable = |attributes: &mut dyn Iterator<Item = (&String, &String)>| -> BTreeMap<String, String> {
        attributes
            .filter(|(name, value)| name.ends_with("_sha256") || value.parse::<u64>().is_ok())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    let backed_up = comparable(&mut manifest.summary.attributes.iter());
    let restored = comparable(&mut restored.iter().map(|(name, value)| (name, value)));
    let mut compared = Vec::new();
    let mut differing = Vec::new();
    for (name, backup) in &backed_up {
        if let Some(restore) = restored.get(name) {
            // Digests are shown by their first 12 digits.
            let short = |value: &str| {
                if name.ends_with("_sha256") { value.chars().take(12).collect() } else { value.to_owned() }
            };
            let line = format!("{name}: {}/{}", short(backup), short(restore));
            if backup != restore {
                differing.push(line.clone());
            }
            compared.push(line);
        }
    }
    let verdict = match (compared.is_empty(), differing.is_empty()) {
        (true, _) => Verdict::NothingToCompare,
        (false, true) => Verdict::Passed,
        (false, false) => Verdict::CountsDiffer(differing),
    };
    (verdict, compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(attributes: &[(&str, &str)]) -> Manifest {
        let mut manifest = crate::manifest::sample("20261204T101500Z-0a1b2c", chrono::Utc::now());
        manifest.summary.attributes = attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        manifest
    }

    fn attributes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_counts_both_summaries_report_must_be_equal() {
        let backup = manifest(&[("server_version", "15.4"), ("tables", "12"), ("rows", "5000"), ("data_bytes", "9")]);
        let same = attributes(&[("tables", "12"), ("rows", "5000"), ("jobs", "2")]);
        assert_eq!(compare(&backup, &same), (Verdict::Passed, vec!["rows: 5000/5000".into(), "tables: 12/12".into()]));
        let lost = attributes(&[("tables", "12"), ("rows", "4999")]);
        assert_eq!(compare(&backup, &lost).0, Verdict::CountsDiffer(vec!["rows: 5000/4999".into()]));
        // A version (not a whole number) is never compared; with nothing shared, nothing passes.
        let unrelated = attributes(&[("server_version", "16.1"), ("keys", "3")]);
        assert_eq!(compare(&backup, &unrelated).0, Verdict::NothingToCompare);
        // Digests are compared as they are: rows moved between tables keep the totals.
        let (before, after) = ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb");
        let backup = manifest(&[("rows", "5000"), ("table_rows_sha256", before)]);
        let moved = compare(&backup, &attributes(&[("rows", "5000"), ("table_rows_sha256", after)]));
        assert_eq!(moved.0, Verdict::CountsDiffer(vec!["table_rows_sha256: aaaaaaaaaaaa/bbbbbbbbbbbb".into()]));
    }
}
