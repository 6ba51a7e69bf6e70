//! The HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (the pipeline is consuming).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness shared between the pipeline and the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[error("could not listen on {addr}: {source}")]
pub struct HttpError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Bind `addr` (errors surface here) and serve until [`Server::stop`]. The server has its own
    /// lifetime, so it can outlive a pipeline's drain and answer `/readyz` with 503 meanwhile.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Server, HttpError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| HttpError { addr, source })?;
        let app = router(metrics, health);
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancelled.cancelled().await })
                .await;
        });
        tracing::info!(listen = %local, "serving /metrics, /healthz, /readyz");
        Ok(Server {
            addr: local,
            stop,
            task,
        })
    }

    /// Start the server the config asks for, if any.
    pub async fn start_configured(
        cfg: &crate::config::HttpConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Option<Server>, HttpError> {
        if !cfg.enabled {
            return Ok(None);
        }
        Self::start(cfg.listen, metrics, health).await.map(Some)
    }

    /// Finish the requests in flight and stop.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
