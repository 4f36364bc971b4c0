//! Further sessions for a backup or restore that works on several connections at once.

use crate::{PluginError, report};

/// Open up to `wanted` sessions besides the one a plugin has, with `open`; fewer when
/// one fails (a server at its `max_connections`, say), which the log says along with
/// `doing` (e.g. `loading tables`): the work still runs, on fewer.
pub fn open_more<S>(wanted: usize, doing: &str, mut open: impl FnMut() -> Result<S, PluginError>) -> Vec<S> {
    let mut sessions = Vec::new();
    while sessions.len() < wanted {
        match open() {
            Ok(session) => sessions.push(session),
            Err(error) => {
                report::warn(&format!(
                    "{doing} on {} sessions instead of {}: another one failed: {}",
                    sessions.len() + 1,
                    wanted + 1,
                    error.message()
                ));
                break;
            }
        }
    }
    sessions
}
