//! DatabaseSnapshotImport: each generation runs one Job (see [`crate::oneshot`]) that lists
//! the repository and brings the import's snapshot objects in line with it.

use stowage_api::{DatabaseSnapshotImport, LABEL_IMPORT, OneShotRuns};

use crate::controller::{Context, Error};
use crate::oneshot::{OneShot, Prepared, Refusal};
use crate::workloads::import::{import_job, role_binding, service_account};

impl OneShot for DatabaseSnapshotImport {
    const WORK: &'static str = "Import";
    const LABEL: &'static str = LABEL_IMPORT;

    fn runs(&self) -> Option<&OneShotRuns> {
        self.status.as_ref().map(|status| &status.runs)
    }

    async fn prepare(
        context: &Context,
        import: &Self,
        _namespace: &str,
        generation: i64,
    ) -> Result<Result<Prepared, Refusal>, Error> {
        if let Err(invalid) = import.spec.validate() {
            return Ok(Err(Refusal::new("InvalidSpec", invalid.to_string())));
        }
        let repo = &import.spec.repo;
        let note = format!(
            "importing the backups of repository {} (bucket {})",
            repo.name,
            repo.bucket.as_deref().or(repo.bucket_name_prefix.as_deref()).unwrap_or_default()
        );
        Ok(Ok(Prepared {
            service_account: service_account(import),
            role_binding: role_binding(import),
            job: import_job(import, generation, &context.settings).map_err(Error::Workload)?,
            note,
        }))
    }
}
