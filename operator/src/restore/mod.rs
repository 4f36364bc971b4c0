//! DatabaseRestore: each generation is resolved into a [`RestorePlan`](stowage_api::RestorePlan)
//! once ([`plan`]) from the snapshot object or DatabaseBackup it names, and run as one Job
//! (see [`crate::oneshot`]). A generation whose backup cannot be found or whose spec is
//! invalid runs nothing and says why.

pub mod plan;

use kube::Api;
use stowage_api::{DatabaseBackup, DatabaseRestore, DatabaseSnapshot, OneShotRuns};

use crate::controller::{Context, Error};
use crate::oneshot::{OneShot, Prepared, Refusal};
use crate::workloads::restore::{LABEL_RESTORE, restore_job, role_binding, service_account};
use plan::Named;

impl OneShot for DatabaseRestore {
    const WORK: &'static str = "Restore";
    const LABEL: &'static str = LABEL_RESTORE;

    fn runs(&self) -> Option<&OneShotRuns> {
        self.status.as_ref().map(|status| &status.runs)
    }

    async fn prepare(
        context: &Context,
        restore: &Self,
        namespace: &str,
        generation: i64,
    ) -> Result<Result<Prepared, Refusal>, Error> {
        let named = match named(context, restore, namespace).await? {
            Ok(named) => named,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let plan = match plan::plan(restore, namespace, &named) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let note = format!(
            "restoring backup {} of {}/{} into {}/{}",
            plan.backup_id, plan.source_namespace, plan.database_backup, plan.database.endpoint, plan.database.name
        );
        Ok(Ok(Prepared {
            service_account: service_account(restore),
            role_binding: role_binding(restore),
            job: restore_job(restore, generation, &plan, &context.settings).map_err(Error::Workload)?,
            note,
        }))
    }
}

/// The snapshot object or DatabaseBackup the restore names.
async fn named(context: &Context, restore: &DatabaseRestore, namespace: &str) -> Result<Result<Named, Refusal>, Error> {
    let client = &context.client;
    let read = |kind: &'static str, source: kube::Error| Error::Read { kind, source };
    if let Some(name) = &restore.spec.snapshot {
        let snapshots: Api<DatabaseSnapshot> = Api::namespaced(client.clone(), namespace);
        return Ok(match snapshots.get_opt(name).await.map_err(|e| read("DatabaseSnapshot", e))? {
            Some(snapshot) => Ok(Named::Snapshot(Box::new(snapshot))),
            None => Err(Refusal::new(
                "BackupNotFound",
                format!("DatabaseSnapshot {name} does not exist in namespace {namespace}"),
            )),
        });
    }
    if let Some(selector) = &restore.spec.database_backup {
        let backups: Api<DatabaseBackup> = Api::namespaced(client.clone(), namespace);
        return Ok(match backups.get_opt(&selector.name).await.map_err(|e| read("DatabaseBackup", e))? {
            Some(backup) => Ok(Named::Backup(Box::new(backup))),
            None => Err(Refusal::new(
                "BackupNotFound",
                format!(
                    "DatabaseBackup {} does not exist in namespace {namespace}; its backups stay restorable \
                     through their DatabaseSnapshot objects",
                    selector.name
                ),
            )),
        });
    }
    Ok(Err(Refusal::new("InvalidSpec", "names no backup: set snapshot or databaseBackup")))
}
