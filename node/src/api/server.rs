//! The HTTP server under the API: HTTP/1.1 on hyper, one task per
//! connection, with a header-read timeout. axum's `serve` sets no timer, so
//! a client sending its request line a byte at a time (slowloris) could hold
//! a connection and a task open forever.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Pause after a failed `accept` (out of file descriptors, usually) so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` fires (or its sender is
/// dropped). Then it stops accepting and asks every open connection to
/// close once its in-flight response is done.
///
/// A client must send a request's headers within `header_read_timeout` of
/// the server starting to wait for them (on a new connection, and between
/// requests on a kept-alive one), or the connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: oneshot::Receiver<()>,
) {
    let (closing_tx, closing) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "the API could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let connection =
            serve_connection(stream, router.clone(), header_read_timeout, closing.clone());
        tokio::spawn(connection);
    }
    // Wakes every connection task; they finish their responses and close.
    let _ = closing_tx.send(());
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let service = TowerToHyperService::new(router);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        // Timeouts and clients that hang up: routine, not a server fault.
        tracing::debug!(%err, "API connection closed");
    }
}
