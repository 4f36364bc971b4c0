//! The Stowage operator: turns `DatabaseBackup` resources into the runner's identity
//! (ServiceAccount, RoleBinding), Jobs for manual triggers and CronJobs for
//! scheduled ones, and `DatabaseRestore` resources into one restore Job per generation,
//! and keeps their status true. `DatabaseSnapshot` objects are written by the runs.

pub mod applied;
pub mod controller;
pub mod identity;
pub mod import;
pub mod leader;
pub mod oneshot;
pub mod report;
pub mod restore;
pub mod status;
pub mod telemetry;
pub mod workloads;
