//! SIGTERM and SIGINT: what Kubernetes sends on Pod deletion, eviction and deadlines. The
//! first signal cancels the run's token, so the plugin is stopped, uploads are aborted and
//! what the run stored is removed; the process must then exit within the grace period, so
//! a second signal, or [`EXIT_AFTER`] without an exit, ends it at once.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Longest time between the first signal and the exit; Kubernetes' default grace period
/// is 30 s.
const EXIT_AFTER: Duration = Duration::from_secs(25);
/// The exit status of a process ended by SIGTERM.
const EXIT_TERMINATED: i32 = 143;

/// A token cancelled by the first SIGTERM or SIGINT. Must be called within a Tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot watch for SIGTERM; a terminated run leaves its leftovers to the next one");
        return token;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("interrupted: stopping the plugin and removing what this run stored");
        cancel.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
            () = tokio::time::sleep(EXIT_AFTER) => {}
        }
        tracing::error!("exiting before the cleanup finished; the next run removes the rest");
        std::process::exit(EXIT_TERMINATED);
    });
    token
}
