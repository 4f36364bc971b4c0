//! The `DatabaseBackup` custom resource (`stowage.dev/v1alpha1`), shared by the operator,
//! which turns it into Jobs and CronJobs, and the runner, which reads it in a Job and
//! reports the outcome in its status. Every field's doc comment becomes its description
//! in the generated CRD schema.

mod conditions;
mod resource;

pub use conditions::{ConditionUpdate, set_condition};
pub use resource::*;
