//! The accept loop: each TCP connection is served by hyper's HTTP/1 connection, with the
//! router as its service and the peer's address as the request's [`ConnectInfo`].
//!
//! It is `axum::serve` with one setting changed, which axum does not expose: half-closed
//! connections are allowed ([`http1::Builder::half_close`]). Without it, hyper keeps reading
//! a connection while its response is still being written, to notice a peer that went away;
//! for a statistics stream that read reserves a second 8 KiB read buffer for the life of the
//! stream, while the request's head still holds the first. With thousands of idle streams
//! that buffer was a third of each one's memory. So hyper does not notice a peer that leaves
//! mid-response; a stream watches its connection's socket for that itself (`http::peer`:
//! the connection's IO is [`ConnectionIo`], which shares its socket with the requests), and
//! any other response ends by itself.
//! hyper itself is the patched copy in `vendor/hyper` (its `BOXOFFICE.md`): it lets go of a
//! connection's read buffer once a request's head is parsed and grows the response-head
//! buffer only as a head needs, so a stream, which reads nothing more, holds no 8 KiB buffer
//! at all (4.6 KiB per idle stream in all, docs/performance.md).
//!
//! The other differences: a request whose client goes away before its answer now runs to its
//! end (or its request timeout), where hyper dropped it at the next read; and a client that
//! half-closes after its request (`shutdown(SHUT_WR)`) now gets its answer.
//!
//! Two bounds on connections that `axum::serve` lacks: each client address holds at most
//! `--max-connections-per-address` connections (`http::connections`; one past it is
//! answered 429 and closed), and a connection must send each request's head within
//! `--request-head-timeout-ms` of the server starting to wait for it (hyper's
//! `header_read_timeout`), or it is closed. hyper starts that wait on an idle keep-alive
//! connection too, so the same timeout closes a keep-alive connection left idle as long, as
//! nginx's `keepalive_timeout` does; a client that reuses one just then sees it closed, and
//! HTTP clients retry such a request on a new connection.
//!
//! Shutdown drains for at most the request timeout plus [`DRAIN_MARGIN`]: a connection
//! whose client does not read its answer would hold the drain otherwise.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::connections::{ConnectionLimit, Refusals};
use super::peer::ConnectionIo;

/// How long the loop waits after an accept error that is not one connection's (say, the
/// process's open-file limit reached) before it accepts again, as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How long past the request timeout shutdown waits for open connections: room to write
/// the last answers to slow readers.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers, through the blank line) served, in
/// bytes: 64 KiB, eight times nginx's default for one header line, so any real client fits.
/// A longer head is answered 431 by hyper, without a body, and its connection closed
/// (docs/errors.md). Without it hyper's bound is its read buffer's upper bound, about 408
/// KiB, and in practice whatever its last read brought in past it.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// How the accept loop bounds its connections.
#[derive(Debug, Clone)]
pub struct ConnectionRules {
    /// Open connections per client address (`--max-connections-per-address`).
    pub limit: ConnectionLimit,
    /// How long a connection may take to send a request's head, counted from when the server
    /// starts waiting for it (`--request-head-timeout-ms`).
    pub head_timeout: Duration,
    /// Longest a request may take to produce its response (`--request-timeout-ms`).
    pub request_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// open connection to finish its response in flight and close, and returns once all have,
/// or after the request timeout (after which every request has its answer) plus
/// [`DRAIN_MARGIN`]. Whatever ends a response that never ends by itself (a stream) belongs
/// in `shutdown`. A connection still sending a request's head is waited for like any other
/// (hyper's graceful close waits for a message it has begun to read), so it holds the
/// shutdown up to the head timeout or the drain, whichever ends first. A connection still
/// open after the drain is one whose client does not read its answer (or sends its head
/// slower than the drain): it is left to end with the process, and holds the shutdown up
/// no longer.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    rules: ConnectionRules,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let refusals = Refusals::new().await;
    let mut connection = http1::Builder::new();
    connection
        .half_close(true)
        .max_header_size(MAX_REQUEST_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(rules.head_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_one_connections(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "accept failed; pausing before the next accept");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let slot = match rules.limit.take(peer.ip()) {
            Ok(slot) => slot,
            Err(_) => {
                crate::metrics::connection_refused();
                refusals.refuse(stream);
                continue;
            }
        };
        // The socket is shared with the connection's requests, so that a stream notices its
        // client leaving (`http::peer`).
        let (io, watch) = ConnectionIo::new(stream);
        let service = router
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(watch.clone());
                request
            });
        let served = graceful.watch(
            connection.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)),
        );
        tokio::spawn(async move {
            // A connection's own failure (a reset, a malformed request hyper answered) ends
            // that connection only.
            if let Err(error) = served.await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
            // The address's place is given back only once the connection is closed.
            drop(slot);
        });
    }
    drop(listener);
    let drain = rules.request_timeout + DRAIN_MARGIN;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "connections still open after the drain (a request never finished, or a response its client does not read); shutting down without them"
        );
    }
}

/// Whether an accept error was only the one connection's (it went away before it was
/// accepted), so the next accept may follow at once.
fn is_one_connections(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
