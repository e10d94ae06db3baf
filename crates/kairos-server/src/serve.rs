//! The accept loop: hyper-util's auto (HTTP/1.1 + h2c) connection builder with the edge limits
//! from the test matrix, and graceful shutdown.
//!
//! `axum::serve` is not used because it exposes none of these limits: the header read timeout
//! (slow loris, I11), the header size cap (431, I10), HTTP/2 stream and window limits (I12).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What shutdown found.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainReport {
    /// Connections still open when the grace period ran out (their requests were cancelled and
    /// recorded as disconnected).
    pub aborted: usize,
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting, let in-flight
/// connections finish for up to `shutdown_grace`, and cancel the rest. Connection tasks have all
/// ended (and dropped their request state, so every ledger row has been handed to the writer)
/// when this returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let fut = graceful.watch(conn);
                conns.spawn(async move {
                    let _ = fut.await;
                });
                while conns.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let mut report = DrainReport::default();
    let drained = tokio::time::timeout(opts.shutdown_grace, async {
        graceful.shutdown().await;
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        report.aborted = conns.len();
        tracing::warn!(
            open = conns.len(),
            "shutdown grace period over; cancelling the remaining requests"
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    report
}
