//! HTTP and WebSocket endpoints, one file each, and the router that mounts them.

pub mod admitted;
pub mod api;
pub mod broadcast;
pub mod echo;
pub mod health;
pub mod matchbox;
pub mod peerjs;
pub mod signaling;
pub mod sse;
pub mod static_files;
pub mod y_webrtc;

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};

use crate::app::App;
use crate::settings::Dialect;

/// Every route the server answers.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    // The dialects: thin translations of other servers' protocols onto the hub.
    if app.settings.serves(Dialect::YWebrtc) {
        router = router.route("/y-webrtc", get(y_webrtc::upgrade));
    }
    if app.settings.serves(Dialect::Matchbox) {
        let matchbox = Router::new()
            .route("/matchbox", get(matchbox::upgrade))
            .route("/matchbox/{room}", get(matchbox::upgrade))
            .layer(Extension(Arc::new(matchbox::Hints::default())));
        router = router.merge(matchbox);
    }
    if app.settings.serves(Dialect::Peerjs) {
        // Its own registry of ids, and the original's CORS on every answer.
        let peerjs = Router::new()
            .route("/peerjs", get(peerjs::upgrade))
            .route("/{key}/id", get(peerjs::id))
            .route("/{key}/peers", get(peerjs::peers))
            .layer(Extension(Arc::new(peerjs::Registry::default())))
            .layer(axum::middleware::map_response(peerjs::cors));
        router = match app.settings.peerjs_path.trim_end_matches('/') {
            "" => router.merge(peerjs),
            path => router.nest(path, peerjs),
        };
    }
    // The server API and dashboard, unless they have an address of their own.
    if !app.settings.api_keys.is_empty() && app.settings.api_listen.is_none() {
        router = router.merge(api::router(app.clone()));
    }
    router
        .route("/ws", get(signaling::upgrade))
        .route("/ws/echo", get(echo::upgrade))
        .route("/ws/broadcast", get(broadcast::upgrade))
        .route("/sse", get(sse::ticks))
        .route("/sse/rooms/{room}", get(sse::room))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/ice-servers", get(health::ice_servers))
        .route("/sdk/{file}", get(static_files::sdk))
        .fallback(get(static_files::page))
        .with_state(app)
}
