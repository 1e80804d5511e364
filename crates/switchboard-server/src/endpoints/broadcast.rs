//! `/ws/broadcast[?channel=NAME]`: the seeds' broadcast server. Every frame goes
//! to every other client on the same channel, never back to its sender.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::admitted::{refuse, Admitted};
use crate::app::App;
use crate::channels::ConnectionId;
use crate::connection::{Connection, Departure, Handler, Pending};
use crate::hub::room::validate_name;
use crate::telemetry::metrics::Endpoint;
use crate::websocket::WebSocketUpgrade;

/// The query string.
#[derive(Deserialize)]
pub struct Params {
    /// The channel; absent means the default channel.
    channel: Option<String>,
}

/// The channel everyone without `?channel=` shares.
const DEFAULT_CHANNEL: &str = "";

/// Accepts the upgrade once admission has passed, or refuses a bad channel name with 400.
pub async fn upgrade(
    upgrade: WebSocketUpgrade,
    admitted: Admitted,
    Query(params): Query<Params>,
    State(app): State<Arc<App>>,
) -> Response {
    if let Err(refusal) = admitted.require_identity() {
        return refuse(&app, refusal);
    }
    let channel = params.channel.unwrap_or_else(|| DEFAULT_CHANNEL.into());
    if channel != DEFAULT_CHANNEL {
        if let Err(reason) = validate_name(&channel, app.settings.max_room_name_len) {
            return (StatusCode::BAD_REQUEST, format!("invalid channel: {reason}")).into_response();
        }
    }
    let limit = app.settings.max_message_size;
    upgrade.on_upgrade(limit, move |socket| {
        let channel: Arc<str> = channel.into();
        let outbox = app.outbox();
        let id = app.channels.subscribe(&channel, outbox.clone());
        let handler = Broadcaster { app: app.clone(), channel, id };
        let slot = admitted.into_slot();
        Connection::plain(Endpoint::Broadcast, socket, outbox, handler, limit, slot).serve_now(app.connections.clone())
    })
}

struct Broadcaster {
    app: Arc<App>,
    channel: Arc<str>,
    id: ConnectionId,
}

impl Handler for Broadcaster {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        self.app.channels.publish(&self.channel, self.id, Message::Text(text));
        None
    }

    fn on_binary(&mut self, data: Bytes) {
        self.app.channels.publish(&self.channel, self.id, Message::Binary(data));
    }

    fn on_close(&mut self, _departure: Departure) {
        self.app.channels.unsubscribe(&self.channel, self.id);
    }
}
