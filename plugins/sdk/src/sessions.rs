//! Further sessions for a backup or restore that works on several connections at once.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

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

/// Wait until one of `sockets` has something to read; its index. A plugin that runs
/// statements on several sessions from its one thread waits here for whichever finishes
/// first, rather than on one while the others sit idle. Bytes a session has buffered
/// already (a TLS layer's plaintext, say) are not seen: call it only on sessions whose
/// answer has not been read from yet.
pub fn first_readable(sockets: &[&TcpStream]) -> io::Result<usize> {
    if sockets.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no session to wait for"));
    }
    let mut polled: Vec<libc::pollfd> = sockets
        .iter()
        .map(|socket| libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    loop {
        // SAFETY: `polled` is a valid array of `polled.len()` pollfd records for the call.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        // A closed or failed socket counts as readable: the read says what happened.
        if let Some(index) = polled.iter().position(|p| p.revents != 0) {
            return Ok(index);
        }
    }
}
