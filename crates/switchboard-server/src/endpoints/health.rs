//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::app::App;
use crate::telemetry::metrics::Metrics;

/// Alive: the process answers HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready for new connections; 503 once shutdown has begun.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.lifecycle.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting-down"})))
    }
}

/// Prometheus text exposition.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Metrics::render())
}
