//! The `DatabaseBackup` custom resource (`stowage.dev/v1alpha1`), shared by the operator,
//! which validates it and turns it into Jobs and CronJobs, and the runner, which runs the
//! spec its Job was created from and reports the attempt in the status. Every field's doc
//! comment becomes its description in the generated CRD schema.

mod conditions;
mod resource;
mod schedule;
mod status;
mod validation;

pub use conditions::{ConditionUpdate, set_condition};
pub use resource::*;
pub use schedule::Schedule;
pub use status::*;
pub use validation::*;
