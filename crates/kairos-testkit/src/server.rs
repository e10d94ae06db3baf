//! The router, the accept loop and [`MockServer`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::behavior::Behavior;
use crate::state::{BilledCall, MockConfig, MockHandle, ReceivedRequest};
use crate::{anthropic, control, gemini, openai};

/// The mock's routes over this state.
pub fn router(h: MockHandle) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::azure_chat),
        )
        .route("/v1/embeddings", post(openai::embeddings))
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::azure_embeddings),
        )
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/models/{*rest}",
            get(gemini::v1_models_rest).post(gemini::v1_models_rest),
        )
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1beta/models/{*rest}", post(gemini::dispatch))
        .route("/__mock/script", post(control::script))
        .route("/__mock/ledger", get(control::ledger))
        .route("/__mock/requests", get(control::requests))
        .route("/__mock/reset", post(control::reset))
        .route("/__mock/health", get(control::health))
        .route("/__mock/stats", get(control::stats))
        .fallback(control::fallback)
        .with_state(h)
}

/// Serves a fresh mock with this configuration on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    cfg: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, MockHandle::new(cfg), shutdown).await
}

/// Serves the mock whose state is `h` on `listener` until `shutdown` completes. Open
/// connections (stalled streams included) are closed when it returns.
/// Per-connection handle that makes the connection task drop the connection.
#[derive(Clone)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

pub async fn serve_with(
    listener: TcpListener,
    h: MockHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(h);
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and friends: back off instead of spinning.
                tracing::warn!(error = %e, "kairos-mock: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Lets a handler drop its own connection without answering (`Behavior::reset`).
        let kill = ConnKill(Arc::new(Notify::new()));
        let killed = kill.0.clone();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(kill.clone());
                req
            },
        ));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "kairos-mock: connection ended with an error");
                    }
                }
                _ = stop.changed() => {}
                () = killed.notified() => {}
            }
        });
    }
    drop(stop_tx);
    Ok(())
}

/// A running mock on `127.0.0.1:<random port>`. Dropping it stops the server.
pub struct MockServer {
    handle: MockHandle,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("handle", &self.handle)
            .finish()
    }
}

impl MockServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let handle = MockHandle::new(cfg);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, handle.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(MockServer {
            handle,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (scripts, ledger, counters).
    pub fn handle(&self) -> &MockHandle {
        &self.handle
    }

    /// Queue a behaviour for the next inference request on any route.
    pub fn push(&self, b: Behavior) {
        self.handle.push(b);
    }

    /// Queue a behaviour for the next inference request for this model.
    pub fn push_for_model(&self, model: &str, b: Behavior) {
        self.handle.push_for_model(model, b);
    }

    /// A copy of the ledger.
    pub fn ledger(&self) -> Vec<BilledCall> {
        self.handle.ledger()
    }

    /// A copy of the request log.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.handle.requests()
    }

    /// Inference requests received.
    pub fn call_count(&self) -> usize {
        self.handle.call_count()
    }

    /// Responses the client dropped before completion.
    pub fn disconnects(&self) -> usize {
        self.handle.disconnects()
    }

    /// Forget scripts, ledger, request log and counters.
    pub fn reset(&self) {
        self.handle.reset();
    }

    /// Stops the server and waits for the accept loop to end (open connections are closed).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
