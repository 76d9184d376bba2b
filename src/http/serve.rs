//! The accept loop: each TCP connection is served by hyper's HTTP/1 connection, with the
//! router as its service and the peer's address as the request's [`ConnectInfo`].
//!
//! It is `axum::serve` with one setting changed, which axum does not expose: half-closed
//! connections are allowed ([`http1::Builder::half_close`]). Without it, hyper keeps reading
//! a connection while its response is still being written, to notice a peer that went away;
//! for a statistics stream that read reserves a second 8 KiB read buffer for the life of the
//! stream, while the request's head still holds the first. With thousands of idle streams
//! that buffer was a third of each one's memory. A peer that leaves is still noticed: its
//! stream's next write fails (a message, or the keep-alive comment every 15 s), and any
//! other response ends by itself. The one other difference: a request whose client goes
//! away before its answer now runs to its end, where hyper dropped it at the next read.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long the loop waits after an accept error that is not one connection's (say, the
/// process's open-file limit reached) before it accepts again, as `axum::serve` does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks every
/// open connection to finish its response in flight and close, and returns once all have.
/// Whatever ends a response that never ends by itself (a stream) belongs in `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let mut connection = http1::Builder::new();
    connection.half_close(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let served = graceful.watch(
            connection.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        tokio::spawn(async move {
            // A connection's own failure (a reset, a malformed request hyper answered) ends
            // that connection only.
            if let Err(error) = served.await {
                tracing::trace!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits out an accept error unless it was only the one connection's.
async fn pause_after(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; pausing before the next accept");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
