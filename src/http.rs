//! The HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process is alive),
//! `/readyz` (the pipeline is consuming), and the status page (`/`, `/customers/{id}`,
//! `/status.json`; see [`crate::status`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::status::{
    render_customer, render_not_found, render_status, urlencode, AtRisk, CustomerSource,
    CustomerView, PipelineHealth, StatusPage, AT_RISK_LIMIT,
};

/// What the pipeline shares with the HTTP server: its readiness, and a view of its customers
/// while it runs.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    customers: RwLock<Option<Arc<dyn CustomerSource>>>,
}

impl Health {
    /// Let the status page see the pipeline's customers (`None`: no longer).
    pub fn set_customers(&self, source: Option<Arc<dyn CustomerSource>>) {
        *self.customers.write().unwrap_or_else(|e| e.into_inner()) = source;
    }

    fn customers(&self) -> Option<Arc<dyn CustomerSource>> {
        self.customers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

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
        .route("/", get(status_handler))
        .route("/status.json", get(status_json_handler))
        .route("/customers", get(lookup_handler))
        .route("/customers/{id}", get(customer_handler))
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

/// The status page's data. The pipeline's state is read on a blocking thread (it locks the
/// processor between two chunks).
async fn status_page(s: &AppState) -> StatusPage {
    let health = PipelineHealth::read(&s.metrics, s.health.is_ready());
    let at_risk = match s.health.customers() {
        Some(src) => tokio::task::spawn_blocking(move || src.at_risk(AT_RISK_LIMIT))
            .await
            .unwrap_or_default(),
        None => AtRisk::default(),
    };
    StatusPage { health, at_risk }
}

async fn status_handler(State(s): State<AppState>) -> Html<String> {
    Html(render_status(&status_page(&s).await))
}

async fn status_json_handler(State(s): State<AppState>) -> Json<StatusPage> {
    Json(status_page(&s).await)
}

#[derive(serde::Deserialize)]
struct LookupQuery {
    id: Option<String>,
    format: Option<String>,
}

/// The lookup form's target: on to `/customers/{id}`.
async fn lookup_handler(Query(q): Query<LookupQuery>) -> Response {
    match q.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => Redirect::to(&format!("/customers/{}", urlencode(id))).into_response(),
        None => Redirect::to("/").into_response(),
    }
}

async fn customer_handler(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LookupQuery>,
    headers: HeaderMap,
) -> Response {
    let json = q.format.as_deref() == Some("json")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    let view: Option<CustomerView> = match s.health.customers() {
        Some(src) => {
            let id = id.clone();
            tokio::task::spawn_blocking(move || src.customer(&id))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    match (view, json) {
        (Some(v), true) => Json(v).into_response(),
        (Some(v), false) => Html(render_customer(&v)).into_response(),
        (None, true) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "customer not held by this instance", "customer_id": id })),
        )
            .into_response(),
        (None, false) => (StatusCode::NOT_FOUND, Html(render_not_found(&id))).into_response(),
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
        tracing::info!(listen = %local, "serving the status page /, /metrics, /healthz, /readyz");
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
