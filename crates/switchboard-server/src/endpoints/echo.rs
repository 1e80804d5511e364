//! `/ws/echo`: the seeds' echo server. Text comes back as
//! `Server received: <text>`; binary comes back unchanged.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;

use crate::app::App;
use crate::connection::{self, Handler};
use crate::outbox::Outbox;
use crate::telemetry::metrics::Endpoint;

/// Accepts the upgrade.
pub async fn upgrade(upgrade: WebSocketUpgrade, State(app): State<Arc<App>>) -> Response {
    let limit = app.settings.max_message_size;
    app.configure(upgrade, limit)
        .on_upgrade(move |socket| run(socket, app))
}

async fn run(socket: WebSocket, app: Arc<App>) {
    let _tracked = app.lifecycle.connections.token();
    let gauge = app.metrics.connections(Endpoint::Echo);
    gauge.increment(1.0);
    let outbox = app.outbox();
    let handler = Echo {
        outbox: outbox.clone(),
    };
    let shutdown = app.lifecycle.close_connections.clone();
    connection::drive(
        socket,
        outbox,
        handler,
        app.timings(),
        shutdown,
        &app.metrics,
    )
    .await;
    gauge.decrement(1.0);
}

struct Echo {
    outbox: Arc<Outbox>,
}

impl Handler for Echo {
    fn on_text(&mut self, text: Utf8Bytes) {
        let reply = format!("Server received: {}", text.as_str());
        let _ = self.outbox.push(Message::Text(reply.into()));
    }

    fn on_binary(&mut self, data: Bytes) {
        let _ = self.outbox.push(Message::Binary(data));
    }

    fn on_close(&mut self) {}
}
