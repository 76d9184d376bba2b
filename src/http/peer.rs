//! Noticing that a streaming client went away.
//!
//! A statistics stream reads nothing from its connection once its request is in (hyper is
//! told to allow half-closed connections, `http::serve`, so that an idle stream holds no
//! read buffer). So hyper learns that the client left only when a write fails: the second
//! message or keep-alive comment after the client's close, up to 30 s later on a quiet
//! event. Meanwhile the connection held its descriptor and its place under
//! `--max-connections-per-address`: a client that closed its streams and opened new ones was
//! refused for up to 30 s (found by a helper probing the connection limit, 2 December 2026).
//! [`PeerWatch`] waits on a duplicate of the connection's socket for the client's FIN. A
//! FIN alone does not say the client has gone: one that only shut its sending side still
//! reads its stream (and is served: `stream::a_client_that_half_closes_still_gets_its_stream_and_its_updates`).
//! So the stream then writes a keep-alive comment at once: a client that closed its socket
//! answers it with a reset, which the watch sees, and the stream ends; one that still reads
//! gets a comment it ignores.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The socket of the connection a request arrived on, as the accept loop puts it in the
/// request's extensions. Valid while the request is being served (its connection is open
/// until then).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(pub RawFd);

/// What the client's side of a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// It sent its FIN: it sends nothing more. It may have closed the socket, or only its
    /// sending side (`shutdown(SHUT_WR)`, after which it still reads); the next bytes written
    /// tell the two apart, since a closed socket answers them with a reset.
    Closed,
    /// The connection was reset (or failed): nobody reads it any more.
    Gone,
}

/// Watches the client's side of one connection.
#[derive(Debug)]
pub struct PeerWatch {
    socket: AsyncFd<OwnedFd>,
    /// Its FIN was already told ([`PeerEvent::Closed`] comes once).
    closed: bool,
}

impl PeerWatch {
    /// Watches `socket`'s connection through a duplicate of its descriptor (its own
    /// registration with the runtime; hyper keeps reading and writing its own). Errors: the
    /// descriptor cannot be duplicated (out of descriptors) or registered.
    ///
    /// `socket` must be the descriptor of a connection still open: a request's
    /// [`ConnectionSocket`] while that request is being served.
    pub fn new(socket: ConnectionSocket) -> io::Result<Self> {
        // SAFETY: the caller passes the descriptor of the connection its request is being
        // served on, open for as long as that request is; it is only borrowed to duplicate.
        let borrowed = unsafe { BorrowedFd::borrow_raw(socket.0) };
        let duplicate = borrowed.try_clone_to_owned()?;
        // SAFETY: an `OwnedFd` is a valid open descriptor, owned by the `AsyncFd` from here
        // until it is dropped, and always answers the same `as_raw_fd`.
        let socket = unsafe { AsyncFd::register_with_interest(duplicate, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            socket,
            closed: false,
        })
    }

    /// Waits for the client's next sign: its FIN ([`PeerEvent::Closed`], once), then a reset
    /// ([`PeerEvent::Gone`]). Bytes the client sends meanwhile are left for hyper; they are no
    /// sign of leaving.
    pub async fn next(&mut self) -> PeerEvent {
        if self.closed {
            // After its FIN the socket stays readable (its end) for good, and the runtime
            // keeps that readiness: wait for an error (a reset) only.
            let _ = self.socket.ready(Interest::ERROR).await;
            return PeerEvent::Gone;
        }
        loop {
            let Ok(mut ready) = self.socket.readable().await else {
                return PeerEvent::Gone;
            };
            let state = ready.ready();
            if state.is_error() {
                return PeerEvent::Gone;
            }
            match peek(self.socket.as_raw_fd()) {
                Peek::Failed => return PeerEvent::Gone,
                Peek::End => {
                    self.closed = true;
                    return PeerEvent::Closed;
                }
                // Bytes sent after the request (never read by a stream): wait for the next
                // change rather than spin on them.
                Peek::Bytes | Peek::Nothing => ready.clear_ready(),
            }
        }
    }
}

/// What the socket's next read would find.
enum Peek {
    /// The end of the client's stream: its FIN.
    End,
    /// Bytes.
    Bytes,
    /// Nothing yet.
    Nothing,
    /// An error, such as a reset.
    Failed,
}

/// What the socket's next read would find, looked at without taking anything from it.
fn peek(socket: RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in the socket, and
    // MSG_DONTWAIT never blocks.
    let read = unsafe {
        libc::recv(
            socket,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match read {
        0 => Peek::End,
        n if n > 0 => Peek::Bytes,
        _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Peek::Nothing,
        _ => Peek::Failed,
    }
}
