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
use crate::auth::{AuthMode, Identity};

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
        admit(parts, app, false)
    }
}

/// Admission for a client whose `?token=` may be something other than a JWT
/// (PeerJS sends a random reconnect secret there): with `--auth optional`, a
/// token that does not verify counts as none. With `--auth required` it must
/// verify, as everywhere else.
pub struct LenientAdmitted(pub Admitted);

impl FromRequestParts<Arc<App>> for LenientAdmitted {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<LenientAdmitted, Response> {
        admit(parts, app, true).map(LenientAdmitted)
    }
}

// The refusal is the extractor's own rejection type, answered at once: not worth a box.
#[allow(clippy::result_large_err)]
fn admit(parts: &Parts, app: &App, lenient: bool) -> Result<Admitted, Response> {
    let unknown_peer = SocketAddr::from(([0, 0, 0, 0], 0));
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(unknown_peer, |info| info.0);
    let ip = client_ip(peer, &parts.headers, &app.settings.trusted_proxies);

    app.origins.check(&parts.headers).map_err(|refusal| {
        debug!(%ip, origin = ?parts.headers.get(header::ORIGIN), "refused origin");
        refuse(app, refusal)
    })?;
    let token = bearer_token(&parts.headers)
        .or_else(|| Query::<TokenQuery>::try_from_uri(&parts.uri).ok().and_then(|query| query.0.token));
    let identity = match app.auth.admit(token.as_deref()) {
        Ok(identity) => identity,
        Err(_) if lenient && app.auth.mode() == AuthMode::Optional => Some(Identity::anonymous()),
        Err(err) => {
            info!(%ip, reason = %err, "refused token");
            return Err(refuse(app, Refusal::Unauthorized));
        }
    };
    let slot = app.limits.acquire(ip).map_err(|refusal| refuse(app, refusal))?;
    Ok(Admitted { identity, ip, slot })
}

/// Counts and answers a refusal.
pub fn refuse(app: &App, refusal: Refusal) -> Response {
    app.metrics.refused(refusal.label());
    refusal.response()
}
