//! The HTTP/1.1 upgrade that turns a request into a [`WebSocket`].
//!
//! An axum extractor checks the handshake headers (refusing the way axum's own
//! `WebSocketUpgrade` does: 405, 400, or 426 when the connection cannot be
//! upgraded); [`WebSocketUpgrade::on_upgrade`] answers 101 and runs the
//! connection in a task of its own once hyper hands the stream over.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

use super::WebSocket;

/// The stream an upgraded connection runs over (plain TCP or TLS, behind
/// hyper's type-erased wrapper).
///
/// Boxed: the connection's future then holds one pointer, not the wrapper. The
/// TCP stream cannot be taken back out of the wrapper (`Upgraded::downcast`):
/// hyper-util's HTTP/1-or-2 connection wraps it in a private type first.
pub type UpgradedStream = Box<TokioIo<Upgraded>>;

/// RFC 6455's fixed GUID, hashed with the client's key to prove the upgrade.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A checked request to upgrade to a WebSocket.
pub struct WebSocketUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRejection {
    /// Only GET upgrades.
    #[error("a WebSocket upgrade must be a GET request")]
    MethodNotGet,
    /// A header is missing or wrong.
    #[error("not a WebSocket handshake: {0}")]
    BadHandshake(&'static str),
    /// The connection itself cannot be taken over (HTTP/1.0, or HTTP/2).
    #[error("this connection cannot be upgraded: use HTTP/1.1")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRejection::BadHandshake(_) => StatusCode::BAD_REQUEST,
            UpgradeRejection::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
        };
        (status, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::BadHandshake("`Connection` must include `upgrade`"));
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::BadHandshake("`Upgrade` must be `websocket`"));
        }
        if !header_has_token(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::BadHandshake("`Sec-WebSocket-Version` must be 13"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(UpgradeRejection::BadHandshake("`Sec-WebSocket-Key` is missing"))?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(WebSocketUpgrade { key, on_upgrade })
    }
}

impl WebSocketUpgrade {
    /// Answers 101 Switching Protocols and, once the client has the answer,
    /// runs `callback` with the connection in a task of its own. Messages or
    /// frames over `max_message` bytes end the connection with 1009.
    pub fn on_upgrade<C, F>(self, max_message: usize, callback: C) -> Response
    where
        C: FnOnce(WebSocket<UpgradedStream>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        // Boxed so that the task holds a pointer, not the closure's captures,
        // for the rest of the connection's life: calling it frees the box.
        let callback = Box::new(callback);
        let task = async move {
            // A failed upgrade is a client that left mid-handshake: nothing to do.
            if let Ok(upgraded) = on_upgrade.await {
                callback(WebSocket::new(Box::new(TokioIo::new(upgraded)), max_message)).await;
            }
        };
        tokio::spawn(task);
        let accept = accept_key(self.key.as_bytes());
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
            [(header::SEC_WEBSOCKET_ACCEPT, accept)],
        )
            .into_response()
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> HeaderValue {
    let digest = Sha1::new().chain_update(key).chain_update(ACCEPT_GUID).finalize();
    let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""))
}

/// Whether a comma-separated header holds `token`, ignoring case.
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn header_tokens_match_in_lists_and_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(header_has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&headers, header::CONNECTION, "close"));
        assert!(!header_has_token(&headers, header::UPGRADE, "websocket"));
    }
}
