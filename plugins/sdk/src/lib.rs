//! The kit for writing Stowage database plugins in Rust.
//!
//! A plugin implements [`Plugin`] (the exported `stowage:plugin/plugin` interface) and
//! registers it with [`export!`]:
//!
//! ```ignore
//! use stowage_plugin_sdk::{export, Plugin, DatabaseSettings, PluginMetadata, PluginError, RestoreOptions, Summary};
//!
//! struct MyDatabase;
//! impl Plugin for MyDatabase {
//!     fn metadata() -> PluginMetadata { /* ... */ }
//!     fn backup(settings: DatabaseSettings) -> Result<Summary, PluginError> { /* ... */ }
//!     fn restore(settings: DatabaseSettings, options: RestoreOptions) -> Result<Summary, PluginError> { /* ... */ }
//! }
//! export!(MyDatabase);
//! ```
//!
//! Artifacts are written with [`artifacts::create`] (an [`std::io::Write`]) and read back
//! with [`artifacts::open`] (an [`std::io::Read`]); [`Options`] parses plugin options;
//! [`report`] logs and reports progress; [`sessions`] opens further connections for
//! parallel work; [`target_not_empty`] is the error of a restore that refuses a target
//! holding data.

pub mod artifacts;
mod options;
pub mod report;
pub mod sessions;

#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "database-plugin",
        pub_export_macro: true,
        default_bindings_module: "stowage_plugin_sdk::bindings",
    });
}

pub use bindings::exports::stowage::plugin::plugin::Guest as Plugin;
pub use bindings::stowage::plugin::types::{
    ArtifactError, DatabaseSettings, Operation, PluginError, PluginMetadata, RestoreOptions, SettingSpec, Summary,
};
pub use options::{Options, optional};

/// How an `unsupported` error starts when a restore refuses a target that holds data
/// (the convention `plugin-error` documents); hosts report it as `TargetNotEmpty`.
pub const TARGET_NOT_EMPTY: &str = "target not empty:";

/// The error of a restore that refuses a non-empty target because replace was not asked
/// for; `what` says what the target holds, e.g. `database "shop" has 12 tables`.
pub fn target_not_empty(what: &str) -> PluginError {
    PluginError::Unsupported(format!(
        "{TARGET_NOT_EMPTY} {what}; restore into an empty one, or ask to replace its contents \
         (DatabaseRestore replace: true, stowage restore --replace)"
    ))
}

impl PluginError {
    /// The error's message, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            PluginError::Connection(m)
            | PluginError::Database(m)
            | PluginError::Artifact(m)
            | PluginError::Unsupported(m)
            | PluginError::Authentication(m)
            | PluginError::InvalidSettings(m)
            | PluginError::Other(m) => m,
        }
    }

    /// The same error with `note` (what was done about it) after its message.
    pub fn noting(self, note: &str) -> Self {
        let noted = |message: String| format!("{message}; {note}");
        match self {
            PluginError::Connection(m) => PluginError::Connection(noted(m)),
            PluginError::Database(m) => PluginError::Database(noted(m)),
            PluginError::Artifact(m) => PluginError::Artifact(noted(m)),
            PluginError::Unsupported(m) => PluginError::Unsupported(noted(m)),
            PluginError::Authentication(m) => PluginError::Authentication(noted(m)),
            PluginError::InvalidSettings(m) => PluginError::InvalidSettings(noted(m)),
            PluginError::Other(m) => PluginError::Other(noted(m)),
        }
    }
}

impl From<ArtifactError> for PluginError {
    fn from(error: ArtifactError) -> Self {
        PluginError::Artifact(match error {
            ArtifactError::InvalidName(name) => format!("invalid artifact name {name:?}"),
            ArtifactError::AlreadyExists(name) => format!("artifact {name} already exists"),
            ArtifactError::NotFound(name) => format!("no artifact {name}"),
            ArtifactError::NotAllowed(message) | ArtifactError::Io(message) => message,
        })
    }
}

/// Register the type implementing [`Plugin`] as the component's export.
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        $crate::bindings::export!($plugin with_types_in $crate::bindings);
    };
}
