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

/// A session a plugin runs statements on while others run theirs.
pub trait Session {
    /// The socket its answers arrive on.
    fn socket(&self) -> &TcpStream;
    /// Whether bytes of an answer have been read from the socket and not yet taken.
    fn has_buffered(&self) -> bool;
    /// One read from the socket into the session's buffer; `Ok(0)` at its end. Waits
    /// for bytes unless the socket is non-blocking.
    fn read_more(&mut self) -> io::Result<usize>;
}

/// Which of `sessions` answers first, of those whose slot in `running` is taken (each
/// running a statement it sent): its index; `None` when none runs.
///
/// A poll of the sockets alone is not enough: the host's sockets (wasmtime's, over
/// tokio) stay readable after a read that took every byte that had come, until a read
/// finds none. Waiting on a session the poll named falsely would leave the others idle
/// until its statement ended, so each one the poll names is read without waiting
/// first: nothing there, and that read clears the false readiness for the next poll.
pub fn first_answering<S: Session + ?Sized, T>(
    sessions: &mut [&mut S],
    running: &[Option<T>],
) -> io::Result<Option<usize>> {
    let busy: Vec<usize> = (0..running.len()).filter(|&index| running[index].is_some()).collect();
    if busy.is_empty() {
        return Ok(None);
    }
    loop {
        // An answer read into a session's buffer already shows on no socket.
        if let Some(&index) = busy.iter().find(|&&index| sessions[index].has_buffered()) {
            return Ok(Some(index));
        }
        let sockets: Vec<&TcpStream> = busy.iter().map(|&index| sessions[index].socket()).collect();
        for named in readable(&sockets)? {
            if answer_arrived(&mut *sessions[busy[named]])? {
                return Ok(Some(busy[named]));
            }
        }
    }
}

/// Read what `session`'s server has sent, without waiting: whether anything had come
/// (bytes, or the end of the connection, which the next read reports).
fn answer_arrived<S: Session + ?Sized>(session: &mut S) -> io::Result<bool> {
    session.socket().set_nonblocking(true)?;
    let read = session.read_more();
    session.socket().set_nonblocking(false)?;
    match read {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(error) => Err(error),
    }
}

/// Wait until some of `sockets` are readable (or failed); their indexes.
fn readable(sockets: &[&TcpStream]) -> io::Result<Vec<usize>> {
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
        let ready: Vec<usize> = (0..polled.len()).filter(|&index| polled[index].revents != 0).collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A session over a loopback socket whose peer plays the server.
    struct Loopback {
        socket: TcpStream,
        buffer: Vec<u8>,
    }

    impl Session for Loopback {
        fn socket(&self) -> &TcpStream {
            &self.socket
        }

        fn has_buffered(&self) -> bool {
            !self.buffer.is_empty()
        }

        fn read_more(&mut self) -> io::Result<usize> {
            let mut chunk = [0; 64];
            let read = self.socket.read(&mut chunk)?;
            self.buffer.extend_from_slice(&chunk[..read]);
            Ok(read)
        }
    }

    /// A session and the server's end of it.
    fn pair(listener: &TcpListener) -> (Loopback, TcpStream) {
        let socket = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (Loopback { socket, buffer: Vec::new() }, server)
    }

    #[test]
    fn the_session_whose_answer_came_is_named_and_its_bytes_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut first, _first_server) = pair(&listener);
        let (mut second, mut second_server) = pair(&listener);
        second_server.write_all(b"done").expect("answer");
        let running = [Some(()), Some(())];
        let named = first_answering(&mut [&mut first, &mut second], &running).expect("wait");
        assert_eq!(named, Some(1));
        assert_eq!(second.buffer, b"done");
        // Buffered, it is named again without a read, and the other still has nothing.
        let named = first_answering(&mut [&mut first, &mut second], &running).expect("wait");
        assert_eq!(named, Some(1));
        assert!(first.buffer.is_empty());
    }

    /// A session whose socket polls readable with no answer behind it, as the host's
    /// sockets do after a read that took every byte: its reads find nothing.
    struct FalselyReadable {
        polled: TcpStream,
    }

    impl Session for FalselyReadable {
        fn socket(&self) -> &TcpStream {
            &self.polled
        }

        fn has_buffered(&self) -> bool {
            false
        }

        fn read_more(&mut self) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    #[test]
    fn a_session_that_polls_readable_without_an_answer_is_not_waited_on() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (Loopback { socket: polled, .. }, mut unread) = pair(&listener);
        unread.write_all(b"x").expect("write");
        let mut falsely = FalselyReadable { polled };
        let (mut answering, mut server) = pair(&listener);
        let answer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            server.write_all(b"done").expect("answer");
            server
        });
        let mut sessions: [&mut dyn Session; 2] = [&mut falsely, &mut answering];
        let named = first_answering(&mut sessions, &[Some(()), Some(())]).expect("wait");
        assert_eq!(named, Some(1));
        drop(answer.join());
    }

    #[test]
    fn idle_sessions_are_not_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut first, mut first_server) = pair(&listener);
        let (mut second, _second_server) = pair(&listener);
        first_server.write_all(b"late").expect("answer");
        // The first has an answer but runs nothing the caller waits for.
        let none: [Option<()>; 2] = [None, None];
        assert_eq!(first_answering(&mut [&mut first, &mut second], &none).expect("wait"), None);
        let named = first_answering(&mut [&mut first, &mut second], &[Some(()), None]).expect("wait");
        assert_eq!(named, Some(0));
    }
}
