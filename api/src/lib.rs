//! The custom resources of `stowage.dev/v1alpha1`, shared by the operator, which validates
//! them and turns them into Jobs and CronJobs, and the runner, which runs the spec its Job
//! was created from and reports the attempt in the status: `DatabaseBackup` (what to back
//! up, where, when), `DatabaseSnapshot` (one stored backup), `DatabaseRestore` and
//! `DatabaseSnapshotImport` (a repository's backups made visible). Every
//! field's doc comment becomes its description in the generated CRD schema.

mod conditions;
mod drill;
mod import;
mod resource;
mod restore;
mod schedule;
mod snapshot;
mod status;
mod validation;

pub use conditions::{ConditionUpdate, Conditions, bounded_message, cut_text, set_condition};
pub use drill::{drill_conflict, drills_may_share_the_server, scratch_name};
pub use import::*;
pub use resource::*;
pub use restore::*;
pub use schedule::Schedule;
pub use snapshot::*;
pub use status::*;
pub use validation::*;

/// Ten hex digits of the SHA-256 of `parts`: the suffix that keeps generated names unique
/// when a name is cut to fit.
pub fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..5])
}
