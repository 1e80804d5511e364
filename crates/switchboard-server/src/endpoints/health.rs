//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admitted::{refuse, Admitted};
use crate::app::App;
use crate::telemetry::metrics::Metrics;

/// Alive: the process answers HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready for new connections; 503 once shutdown has begun. With a broker that
/// has a backing service (Redis),
/// its state is reported too, but does not fail readiness: while Redis is down a
/// node still serves its own peers, and every node shares the same Redis, so
/// taking them all out of the load balancer would only make things worse.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (status, mut body) = if app.lifecycle().is_ready() {
        (StatusCode::OK, json!({"status": "ready"}))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "shutting-down"}))
    };
    if let Some(state) = app.hub.broker().state() {
        body["broker"] = json!(state);
        body["node"] = json!(app.hub.node().as_str());
    }
    (status, Json(body))
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
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    // Read at scrape time: tokio counts its live tasks itself.
    let runtime = tokio::runtime::Handle::current().metrics();
    app.metrics.tasks_alive.set(runtime.num_alive_tasks() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Metrics::render())
}
