//! The Stowage operator: turns `DatabaseBackup` resources into the runner's identity
//! (ServiceAccount, Role, RoleBinding), Jobs for manual triggers and CronJobs for
//! scheduled ones, and keeps their status true.

pub mod controller;
pub mod leader;
pub mod report;
pub mod status;
pub mod telemetry;
pub mod workloads;
