//! Which backup a DatabaseRestore reads, with which plugin, into which database: resolved
//! once from the snapshot object or DatabaseBackup it names, so that the Job runs what
//! the resource said when it was created, whatever changes afterwards.

use kube::ResourceExt;
use stowage_api::{DatabaseBackup, DatabaseRestore, DatabaseSnapshot, Repo, RestorePlan};

use crate::oneshot::Refusal;

/// The object a restore names, as read from the API server.
#[derive(Debug, Clone)]
pub enum Named {
    Snapshot(Box<DatabaseSnapshot>),
    Backup(Box<DatabaseBackup>),
}

/// The plan of `restore` in `namespace`, reading the backup `named` points to.
pub fn plan(restore: &DatabaseRestore, namespace: &str, named: &Named) -> Result<RestorePlan, Refusal> {
    let spec = &restore.spec;
    spec.validate().map_err(|invalid| Refusal::new("InvalidSpec", invalid.to_string()))?;
    let (repo, source_namespace, configuration, backup_id, plugin, base, snapshot) = match named {
        Named::Snapshot(snapshot) => {
            let source = &snapshot.spec;
            // A source named without its own digest, and no other digest allowed: the
            // backup's digest is required of it.
            let plugin = match &spec.plugin {
                Some(plugin) if plugin.sha256.is_none() && !spec.allow_other_plugin_digest => {
                    let mut pinned = plugin.clone();
                    pinned.sha256 = Some(source.plugin.sha256.clone());
                    pinned
                }
                Some(plugin) => plugin.clone(),
                None => source.plugin.source.clone(),
            };
            (
                source.repo.clone(),
                source.source_namespace.clone(),
                source.database_backup.clone(),
                source.backup_id.clone(),
                plugin,
                &source.database,
                Some(snapshot.name_any()),
            )
        }
        Named::Backup(backup) => {
            let selector =
                spec.database_backup.as_ref().ok_or_else(|| Refusal::new("InvalidSpec", "names no backup"))?;
            let mut repo = repo_of(backup, selector.repo.as_deref())?.clone();
            repo.bucket = repo.bucket_for(namespace);
            (
                repo,
                namespace.to_owned(),
                backup.name_any(),
                selector.backup_id.clone(),
                spec.plugin.clone().unwrap_or_else(|| backup.spec.plugin.clone()),
                &backup.spec.database,
                None,
            )
        }
    };
    let database = spec.target.clone().unwrap_or_default().over(base);
    database
        .host_port()
        .map_err(|error| Refusal::new("InvalidSpec", format!("spec.target.endpoint: {}", error.message)))?;
    plugin.source().map_err(|error| Refusal::new("InvalidSpec", error.to_string()))?;
    Ok(RestorePlan {
        snapshot,
        repo,
        source_namespace,
        database_backup: configuration,
        backup_id,
        plugin,
        allow_other_plugin_digest: spec.allow_other_plugin_digest,
        database,
        replace: spec.replace,
        limits: spec.limits.clone(),
    })
}

/// The repository `wanted` of `backup`, or, unnamed, its only one or its manual
/// trigger's.
fn repo_of<'a>(backup: &'a DatabaseBackup, wanted: Option<&str>) -> Result<&'a Repo, Refusal> {
    let spec = &backup.spec;
    let name = match wanted {
        Some(name) => name,
        None if spec.repos.len() == 1 => &spec.repos[0].name,
        None => match &spec.manual_trigger {
            Some(trigger) => &trigger.repo,
            None => {
                let names: Vec<&str> = spec.repos.iter().map(|r| r.name.as_str()).collect();
                return Err(Refusal::new(
                    "InvalidSpec",
                    format!(
                        "spec.databaseBackup.repo: DatabaseBackup {} has repositories {}: name one",
                        backup.name_any(),
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    spec.repo("spec.databaseBackup.repo", name).map_err(|error| Refusal::new("BackupNotFound", error.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn restore(spec: serde_json::Value) -> DatabaseRestore {
        serde_json::from_value(json!({
            "apiVersion": "stowage.dev/v1alpha1",
            "kind": "DatabaseRestore",
            "metadata": {"name": "copy", "namespace": "prod"},
            "spec": spec
        }))
        .expect("restore")
    }

    fn snapshot() -> Named {
        Named::Snapshot(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "stowage.dev/v1alpha1",
                "kind": "DatabaseSnapshot",
                "metadata": {"name": "shop-20261204t101500z-0a1b2c", "namespace": "prod"},
                "spec": {
                    "databaseBackup": "shop", "sourceNamespace": "prod", "backupId": "20261204T101500Z-0a1b2c",
                    "repo": {"name": "s3", "secretName": "s3", "bucket": "backups"},
                    "startedAt": "2026-12-04T10:15:00Z", "finishedAt": "2026-12-04T10:15:09Z",
                    "bytes": 10, "storedBytes": 5, "artifacts": 1,
                    "plugin": {"name": "postgres", "version": "0.1.0", "sha256": "ab".repeat(32),
                               "source": {"builtin": "postgres", "sha256": "ab".repeat(32)}},
                    "database": {"endpoint": "db:5432", "name": "shop", "user": "app",
                                 "passwordSecret": {"name": "db", "key": "password"}}
                }
            }))
            .expect("snapshot"),
        ))
    }

    fn backup() -> Named {
        Named::Backup(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "stowage.dev/v1alpha1",
                "kind": "DatabaseBackup",
                "metadata": {"name": "shop", "namespace": "prod"},
                "spec": {
                    "repos": [{"name": "a", "bucketNamePrefix": "backup-"}, {"name": "b", "bucket": "other"}],
                    "plugin": {"builtin": "postgres"},
                    "database": {"endpoint": "db:5432", "name": "shop"},
                    "manualTrigger": {"time": "t1", "repo": "b"}
                }
            }))
            .expect("backup"),
        ))
    }

    #[test]
    fn a_snapshot_restores_with_its_plugin_digest_into_its_database_unless_told() {
        let plain =
            plan(&restore(json!({"snapshot": "shop-20261204t101500z-0a1b2c"})), "prod", &snapshot()).expect("plan");
        assert_eq!(plain.plugin.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!((plain.database.endpoint.as_str(), plain.database.name.as_str()), ("db:5432", "shop"));
        assert_eq!(plain.snapshot.as_deref(), Some("shop-20261204t101500z-0a1b2c"));
        assert_eq!(plain.backup_id, "20261204T101500Z-0a1b2c");

        let elsewhere = restore(json!({
            "snapshot": "s", "target": {"name": "shop_copy", "options": {"jobs": "4"}},
            "plugin": {"builtin": "postgres-next"}, "replace": true
        }));
        let moved = plan(&elsewhere, "prod", &snapshot()).expect("plan");
        assert_eq!((moved.database.name.as_str(), moved.database.user.as_deref()), ("shop_copy", Some("app")));
        assert_eq!(moved.database.options["jobs"], "4");
        // Another source must still have the backup's digest unless another one is allowed.
        assert_eq!(moved.plugin.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert!(moved.replace);
        let allowed =
            restore(json!({"snapshot": "s", "plugin": {"builtin": "postgres-next"}, "allowOtherPluginDigest": true}));
        assert_eq!(plan(&allowed, "prod", &snapshot()).expect("plan").plugin.sha256, None);
    }

    #[test]
    fn a_configuration_restores_from_its_named_or_default_repository() {
        let named = restore(json!({"databaseBackup": {"name": "shop", "repo": "a"}}));
        let from_a = plan(&named, "prod", &backup()).expect("plan");
        assert_eq!((from_a.repo.bucket.as_deref(), from_a.backup_id.as_str()), (Some("backup-prod"), "latest"));
        assert_eq!((from_a.source_namespace.as_str(), from_a.database_backup.as_str()), ("prod", "shop"));
        let default = plan(&restore(json!({"databaseBackup": {"name": "shop"}})), "prod", &backup()).expect("plan");
        assert_eq!(default.repo.name, "b");
        let missing = plan(&restore(json!({"databaseBackup": {"name": "shop", "repo": "c"}})), "prod", &backup());
        assert_eq!(missing.map_err(|r| r.reason), Err("BackupNotFound"));
    }

    #[test]
    fn a_restore_names_one_backup_and_a_valid_target() {
        let both = plan(&restore(json!({"snapshot": "s", "databaseBackup": {"name": "shop"}})), "prod", &snapshot());
        assert!(both.is_err_and(|r| r.reason == "InvalidSpec" && r.message.contains("both")));
        let bad_target = restore(json!({"snapshot": "s", "target": {"endpoint": "no-port"}}));
        let refused = plan(&bad_target, "prod", &snapshot()).expect_err("refused");
        assert!(refused.message.starts_with("spec.target.endpoint"), "{}", refused.message);
    }
}
