//! The Stowage runner: hosts a database plugin (a WebAssembly component) in a sandbox
//! and does everything else a backup needs, the same way for every database:
//! compression, encryption, checksums, upload, the manifest, retention, restore,
//! verification and restore drills.

pub mod archive;
pub mod backup;
pub mod cli;
pub mod drill;
pub mod interrupt;
pub mod job;
pub mod lock;
pub mod manifest;
pub mod plugin;
pub mod process;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod settings;
pub mod store;
