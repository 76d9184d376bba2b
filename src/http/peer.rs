//! Noticing that a streaming client went away, on its connection's own socket.
//!
//! A statistics stream reads nothing from its connection once its request is in: hyper is
//! told to allow half-closed connections (`http::serve`), and then it does not poll the
//! socket for reading at all while a response body is being written (hyper's
//! `Conn::mid_message_detect_eof` returns at once; checked by counting this wrapper's reads,
//! December 2026). So on its own hyper learns that the client left only when a write
//! fails: the second message or keep-alive comment after the client's close, up to 30 s on
//! a quiet event. Meanwhile the connection held its descriptor and its place under
//! `--max-connections-per-address`, and a page reloaded often was refused 429 by its own
//! departed streams.
//!
//! (An earlier watch, `a43f298`, waited on a duplicate of the socket's descriptor: two
//! descriptors per stream, and 10,000 streams no longer fitted a limit of 20,000.)
//!
//! So the accept loop shares each connection's socket between hyper ([`ConnectionIo`]) and
//! the requests ([`PeerWatch`], in their extensions): one descriptor and one registration
//! with the runtime, no task and no timer. A stream's body waits, as one more waiter on that
//! registration, for the socket's readiness to say the client's side is closed (its FIN)
//! or failed (a reset), taking nothing from the socket. A FIN alone does not say the client
//! has gone: one that only shut its sending side still reads its stream (and is served). So
//! the stream then writes a keep-alive comment at once: a client that closed its socket
//! answers it with a reset, which the watch sees, and the stream ends; one that still reads
//! gets a comment it ignores.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket as hyper reads and writes it, shared with [`PeerWatch`]es of its
/// requests. Dropping it (with the connection, and the body in it) closes the socket.
#[derive(Debug)]
pub struct ConnectionIo {
    socket: Arc<TcpStream>,
}

impl ConnectionIo {
    /// The connection's IO, and the watch its requests are handed.
    pub fn new(socket: TcpStream) -> (Self, PeerWatch) {
        let socket = Arc::new(socket);
        let watch = PeerWatch {
            socket: Arc::downgrade(&socket),
            fin_told: false,
        };
        (Self { socket }, watch)
    }
}

// The reads and writes are `TcpStream`'s own, through its `&self` methods (its `AsyncRead`
// and `AsyncWrite` need it exclusively, and the watches share it): wait for readiness, try,
// and on `WouldBlock` (which clears the readiness) wait again.
impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            match self.socket.try_read_buf(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read.map(drop)),
            }
        }
    }
}

impl ConnectionIo {
    /// `write` once the socket is writable, waiting again on `WouldBlock`.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match write(&self.socket) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A socket buffers nothing of its own to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As `TcpStream`'s own: the FIN, without waiting.
        Poll::Ready(SockRef::from(&*self.socket).shutdown(Shutdown::Write))
    }
}

/// What the client's side of a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// It sent its FIN: it sends nothing more. It may have closed the socket, or only its
    /// sending side (`shutdown(SHUT_WR)`, after which it still reads); the next bytes written
    /// tell the two apart, since a closed socket answers them with a reset.
    Closed,
    /// The connection was reset (or failed, or is closed): nobody reads it any more.
    Gone,
}

/// Watches the client's side of the connection a request arrived on; the accept loop puts
/// one in every request's extensions, and a stream's body watches with it. Meant for a
/// response that is its connection's last (a stream ends only when its client leaves or
/// the server shuts down): bytes the client sends meanwhile are left unread, and their
/// readiness is forgotten (see [`PeerWatch::next`]).
#[derive(Debug, Clone)]
pub struct PeerWatch {
    /// Weak: a request (or a body not yet waiting) never keeps the socket open.
    socket: Weak<TcpStream>,
    /// Its FIN was already told ([`PeerEvent::Closed`] comes once).
    fin_told: bool,
}

impl PeerWatch {
    /// Waits for the client's next sign: its FIN ([`PeerEvent::Closed`], once), then a reset
    /// ([`PeerEvent::Gone`]). Bytes the client sends meanwhile are left for hyper; they are no
    /// sign of leaving.
    pub async fn next(&mut self) -> PeerEvent {
        // Held while waiting, by a body that hyper owns and drops with the connection: it
        // never keeps the socket open past the connection.
        let Some(socket) = self.socket.upgrade() else {
            return PeerEvent::Gone;
        };
        if self.fin_told {
            // The runtime never clears a read-closed readiness: after the FIN the socket is
            // ready to read for good. So wait for an error (the reset) only.
            let _ = socket.ready(Interest::ERROR).await;
            return PeerEvent::Gone;
        }
        loop {
            let Ok(ready) = socket.ready(Interest::READABLE | Interest::ERROR).await else {
                return PeerEvent::Gone;
            };
            if ready.is_error() {
                return PeerEvent::Gone;
            }
            if ready.is_read_closed() {
                self.fin_told = true;
                return PeerEvent::Closed;
            }
            // Bytes sent after the request (a stream never reads them, and hyper reads nothing
            // while the stream runs): forget this readiness (`try_io` clears it on
            // `WouldBlock`; a closed side's is never cleared, so it is told above) and wait
            // for the socket's next change rather than spin on them.
            let _ = socket.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }
}
