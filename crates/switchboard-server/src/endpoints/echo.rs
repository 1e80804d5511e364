//! `/ws/echo`: the seeds' echo server. Text comes back as
//! `Server received: <text>`; binary comes back unchanged.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;

use super::admitted::{refuse, Admitted};
use crate::app::App;
use crate::connection::{Connection, Departure, Handler, Pending};
use crate::outbox::Outbox;
use crate::telemetry::metrics::Endpoint;
use crate::websocket::WebSocketUpgrade;

/// Accepts the upgrade once admission has passed.
pub async fn upgrade(upgrade: WebSocketUpgrade, admitted: Admitted, State(app): State<Arc<App>>) -> Response {
    if let Err(refusal) = admitted.require_identity() {
        return refuse(&app, refusal);
    }
    let limit = app.settings.max_message_size;
    upgrade.on_upgrade(limit, move |socket| {
        let outbox = app.outbox();
        let handler = Echo { outbox: outbox.clone() };
        let slot = admitted.into_slot();
        Connection::plain(Endpoint::Echo, socket, outbox, handler, limit, slot).serve_now(app.connections.clone())
    })
}

struct Echo {
    outbox: Arc<Outbox>,
}

impl Handler for Echo {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        let reply = format!("Server received: {}", text.as_str());
        let _ = self.outbox.push(Message::Text(reply.into()));
        None
    }

    fn on_binary(&mut self, data: Bytes) {
        let _ = self.outbox.push(Message::Binary(data));
    }

    fn on_close(&mut self, _departure: Departure) {}
}
