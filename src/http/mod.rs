//! The HTTP listener: health, metrics, status, and the Upstash Workflow DLQ dialect
//! (docs/design.md §5). Every route but `/healthz`, `/readyz` and `/metrics` needs
//! `Authorization: Bearer <token>`.

pub mod auth;
pub mod dedup;
pub mod dlq;
pub mod error;
pub mod jobs;
pub mod json;
pub mod limit;
pub mod messages;
pub mod openapi;
pub mod overrides;
pub mod query;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};
use tracing::Instrument;

use crate::{
    commands::{ledger::Ledger, submit::CommandSubmitter},
    config::Config,
    health::Health,
    metrics,
    store::StoreView,
};

pub use error::ApiError;

/// What the handlers share.
pub struct AppState {
    pub cfg: Arc<Config>,
    pub view: Arc<StoreView>,
    pub health: Arc<Health>,
    /// Who may call: the named tokens, and the `default` admin token if there is one.
    pub tokens: Vec<crate::tokens::ApiToken>,
    pub kafka_bootstrap: String,
    pub prometheus: PrometheusHandle,
    /// Where actions go, and where their answers come back from.
    pub commands: CommandSubmitter,
    pub ledger: Arc<Ledger>,
    /// How to reach Kafka: the console reads the rejected topic's tail and the consumer lag
    /// on demand.
    pub kafka: crate::kafka::KafkaConn,
    /// The bound on API requests in flight ([`limit`]).
    pub in_flight: limit::InFlight,
}

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Bound on any one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: Arc<AppState>) -> Router {
    let authed = Router::new()
        .route("/v1/status", get(status))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(dlq::routes())
        .merge(jobs::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ))
        // Outside auth: shedding is the cheapest answer, so it comes first. Inside
        // `count_requests`, so shed requests are counted (503) under their route.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit::bound_in_flight,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(authed)
        .merge(crate::console::routes(state.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn(count_requests))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "Alive", content_type = "application/json")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: Kafka reachable and the store view caught up.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "Ready", content_type = "application/json"),
              (status = 503, description = "Not ready, with the reasons", content_type = "application/json")))]
pub async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.health.readiness() {
        Ok(()) => Json(json!({"ready": true})).into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "error": reasons.join("; "), "reasons": reasons})),
        )
            .into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "service", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    crate::store::reader::publish_gauges(&s.view);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&s.prometheus),
    )
        .into_response()
}

/// The service's status: version, Kafka, topics, entry count, readiness.
#[utoipa::path(get, path = "/v1/status", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "Status", content_type = "application/json"),
              (status = 401, body = messages::ErrorBody)))]
pub async fn status(State(s): State<Arc<AppState>>) -> Response {
    let ready = s.health.readiness();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "kafka": {
            "bootstrap": s.kafka_bootstrap,
            "embedded": s.cfg.is_embedded(),
            "reachable": s.health.kafka_reachable(),
        },
        "topics": s.cfg.topics,
        "entries": s.view.len(),
        "payloadBytes": s.view.payload_bytes(),
        "ready": ready.is_ok(),
        "notReadyReasons": ready.err().unwrap_or_default(),
        "groupId": s.cfg.group_id,
        "instanceId": s.cfg.instance_id,
    }))
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Counts every request by matched route (never the raw path: ids would explode the labels).
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        route = %route,
        status = tracing::field::Empty
    );
    let response = next.run(req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    metrics::http_request(route, response.status().as_u16());
    response
}

/// Every error is `{"error": "<message>"}`: errors made outside our handlers (a body over the
/// limit, a method not allowed, a malformed path, a timeout) are rewritten into that shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The console answers its errors as HTML pages (with its own security headers).
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_html {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = match (status, text) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            format!("the request body is larger than {MAX_BODY_BYTES} bytes")
        }
        (StatusCode::METHOD_NOT_ALLOWED, _) => "method not allowed on this route".to_string(),
        (_, Some(t)) => t,
        (s, None) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = (status, Json(json!({ "error": message }))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
