//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::admission::{refuse, Admitted};
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

/// `GET /ice-servers`: `{"iceServers":[...]}` for this caller, with fresh TURN
/// credentials; for apps that set up `RTCPeerConnection`s without the signaling socket.
pub async fn ice_servers(State(app): State<Arc<App>>, admitted: Admitted) -> Response {
    let identity = match admitted.require_identity() {
        Ok(identity) => identity,
        Err(refusal) => return refuse(&app, refusal),
    };
    let user = identity.user.as_deref().map_or_else(|| format!("anonymous-{}", admitted.ip), str::to_owned);
    let servers = app.ice.for_user(&user);
    let body = format!("{{\"iceServers\":{}}}", servers.as_deref().map_or("[]", |raw| raw.get()));
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// Prometheus text exposition.
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Metrics::render())
}
