//! Log lines and progress for the people watching a backup or restore.

use crate::bindings::stowage::plugin::report::{self, Level, Progress};

/// Log at info level.
pub fn info(message: &str) {
    report::log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    report::log(Level::Warn, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    report::log(Level::Debug, message);
}

/// Report cumulative progress; the host decides how often people see it.
pub fn progress(current: &str, items_done: u64, items_total: Option<u64>, records_done: u64) {
    report::set_progress(&Progress { current: current.to_owned(), items_done, items_total, records_done });
}
