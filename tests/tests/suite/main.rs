//! The integration tests, one binary: each module a subject, every test against real
//! servers started by the harness (see `stowage_tests`).

mod backup_restore;
mod data_safety;
mod deploy;
mod images;
mod job;
mod large_streams;
mod mysql;
mod operator;
mod plugin_authoring;
mod plugin_contract;
mod postgres;
mod redis;
mod restores;
mod sandbox;
