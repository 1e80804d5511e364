//! The [`Admitted`] extractor: every WebSocket and event-stream handler takes
//! one, so no endpoint can forget the checks of [`crate::admission`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use tracing::{debug, info};

use crate::admission::{bearer_token, client_ip, ConnectionSlot, Refusal};
use crate::app::App;
use crate::auth::Identity;

/// A connection that passed admission: who it is, and its place under the caps.
pub struct Admitted {
    /// Who the connection is; `None` when a token is required and must come
    /// in a first `auth` message.
    pub identity: Option<Identity>,
    /// The client's address.
    pub ip: IpAddr,
    slot: ConnectionSlot,
}

impl Admitted {
    /// The identity, or the refusal for an endpoint that cannot ask for an
    /// `auth` message (everything but `/ws`).
    pub fn require_identity(&self) -> Result<&Identity, Refusal> {
        self.identity.as_ref().ok_or(Refusal::Unauthorized)
    }

    /// Just the connection's place under the caps, to hold for its life.
    pub fn into_slot(self) -> ConnectionSlot {
        self.slot
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl FromRequestParts<Arc<App>> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admitted, Response> {
        let unknown_peer = SocketAddr::from(([0, 0, 0, 0], 0));
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(unknown_peer, |info| info.0);
        let ip = client_ip(peer, &parts.headers, &app.settings.trusted_proxies);

        app.origins.check(&parts.headers).map_err(|refusal| {
            debug!(%ip, origin = ?parts.headers.get(header::ORIGIN), "refused origin");
            refuse(app, refusal)
        })?;
        let token = bearer_token(&parts.headers)
            .or_else(|| Query::<TokenQuery>::try_from_uri(&parts.uri).ok().and_then(|query| query.0.token));
        let identity = app.auth.admit(token.as_deref()).map_err(|err| {
            info!(%ip, reason = %err, "refused token");
            refuse(app, Refusal::Unauthorized)
        })?;
        let slot = app.limits.acquire(ip).map_err(|refusal| refuse(app, refusal))?;
        Ok(Admitted { identity, ip, slot })
    }
}

/// Counts and answers a refusal.
pub fn refuse(app: &App, refusal: Refusal) -> Response {
    app.metrics.refused(refusal.label());
    refusal.response()
}
