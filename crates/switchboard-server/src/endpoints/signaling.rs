//! `/ws`: WebRTC signaling. One [`Session`] per connection turns decoded client
//! messages into hub operations and replies.
//!
//! A frame's path: `connection::drive` reads it → [`Session::on_text`] checks its
//! size and decodes it (one validating pass, borrowing) → `dispatch` acts on it:
//! a relay is stamped with `from` by splicing the original bytes and pushed into
//! the target's outbox by the hub → the target's own `drive` loop writes it.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_protocol::client::{clip, decode, ClientMessage, Relay, Request};
use switchboard_protocol::relay::{replace_from, stamp_from};
use switchboard_protocol::server::encode;
use switchboard_protocol::{ErrorCode, DEFAULT_ROOM};
use tracing::debug;

use crate::app::App;
use crate::connection::{self, Handler};
use crate::hub::room::validate_name;
use crate::hub::{JoinError, RelayError};
use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::telemetry::metrics::Endpoint;

/// Frames up to this many times `max-message-size` are read and answered with
/// `message-too-large`; larger ones close the connection (1009) unread.
pub const HARD_LIMIT_FACTOR: usize = 4;

/// Accepts the upgrade.
pub async fn upgrade(upgrade: WebSocketUpgrade, State(app): State<Arc<App>>) -> Response {
    let limit = app
        .settings
        .max_message_size
        .saturating_mul(HARD_LIMIT_FACTOR);
    app.configure(upgrade, limit)
        .on_upgrade(move |socket| run(socket, app))
}

async fn run(socket: WebSocket, app: Arc<App>) {
    let id = PeerId::random();
    let outbox = app.outbox();
    app.hub.connect(id);
    let session = Session {
        app: app.clone(),
        id,
        outbox: outbox.clone(),
        rooms: Vec::new(),
    };
    session.send(
        encode::welcome(id.as_str(), app.ice_servers.as_deref()),
        "welcome",
    );
    debug!(peer = %id, "signaling peer connected");
    connection::run(&app, Endpoint::Signaling, socket, outbox, session).await;
}

/// One signaling peer.
struct Session {
    app: Arc<App>,
    id: PeerId,
    outbox: Arc<Outbox>,
    /// The rooms this peer is in, in join order. The hub holds the same
    /// membership; keeping it here too makes "am I in room X" and disconnect
    /// cleanup lock-free.
    rooms: Vec<Arc<str>>,
}

/// A refusal on its way to the client.
struct Refusal {
    code: ErrorCode,
    message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl Handler for Session {
    fn on_text(&mut self, text: Utf8Bytes) {
        let max = self.app.settings.max_message_size;
        if text.len() > max {
            self.app.metrics.message_in(None);
            let message = format!("message is {} bytes; the limit is {max}", text.len());
            self.send_error(ErrorCode::MessageTooLarge, &message, None);
            return;
        }
        match decode(text.as_str()) {
            Ok(request) => {
                self.app
                    .metrics
                    .message_in(Some(request.message.type_name()));
                let rid = request.rid;
                if let Err(refusal) = self.dispatch(request, text.as_str()) {
                    self.send_error(refusal.code, &refusal.message, rid);
                }
            }
            Err(err) => {
                self.app.metrics.message_in(None);
                self.send_error(err.code, &err.message, err.rid);
            }
        }
    }

    fn on_binary(&mut self, _data: Bytes) {
        self.app.metrics.message_in(None);
        self.send_error(
            ErrorCode::BinaryNotSupported,
            "/ws speaks JSON text frames; binary frames are not accepted",
            None,
        );
    }

    fn on_close(&mut self) {
        self.app.hub.disconnect(self.id, &self.rooms);
        self.rooms.clear();
        debug!(peer = %self.id, "signaling peer disconnected");
    }
}

impl Session {
    fn dispatch(&mut self, request: Request<'_>, frame: &str) -> Result<(), Refusal> {
        let rid = request.rid;
        match request.message {
            ClientMessage::Join {
                room,
                meta,
                capacity,
            } => self.join(room.as_deref().unwrap_or(DEFAULT_ROOM), meta, capacity, rid),
            ClientMessage::Leave { room } => self.leave(room.as_deref(), rid),
            ClientMessage::Relay(relay) => self.relay(relay, frame, rid),
            ClientMessage::Broadcast { room, data } => self.broadcast(room.as_deref(), data, rid),
            ClientMessage::Ping => {
                self.send(encode::pong(rid), "pong");
                Ok(())
            }
        }
    }

    fn join(
        &mut self,
        room: &str,
        meta: Option<&RawValue>,
        capacity: Option<u32>,
        rid: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        let settings = &self.app.settings;
        validate_name(room, settings.max_room_name_len)
            .map_err(|reason| refuse(ErrorCode::InvalidField, reason))?;
        if let Some(meta) = meta {
            if meta.get().len() > settings.max_meta_size {
                return Err(refuse(
                    ErrorCode::InvalidField,
                    format!(
                        "field `meta` must be at most {} bytes",
                        settings.max_meta_size
                    ),
                ));
            }
        }
        if self.rooms.iter().any(|r| **r == *room) {
            return Err(refuse(
                ErrorCode::AlreadyJoined,
                format!("already in room `{}`", clip(room, 64)),
            ));
        }
        if self.rooms.len() >= settings.max_rooms_per_peer {
            return Err(refuse(
                ErrorCode::TooManyRooms,
                format!(
                    "a peer may be in at most {} rooms",
                    settings.max_rooms_per_peer
                ),
            ));
        }
        let room: Arc<str> = room.into();
        let meta = meta.map(RawValue::to_owned);
        match self
            .app
            .hub
            .join(self.id, &self.outbox, &room, meta, capacity, rid)
        {
            Ok(()) => {
                self.rooms.push(room);
                Ok(())
            }
            Err(JoinError::AlreadyJoined) => {
                Err(refuse(ErrorCode::AlreadyJoined, "already in this room"))
            }
            Err(JoinError::RoomFull { capacity }) => Err(refuse(
                ErrorCode::RoomFull,
                format!("room `{}` is full (capacity {capacity})", clip(&room, 64)),
            )),
        }
    }

    fn leave(&mut self, room: Option<&str>, rid: Option<&RawValue>) -> Result<(), Refusal> {
        let leaving: Vec<Arc<str>> = match room {
            Some(name) => {
                let index = self
                    .rooms
                    .iter()
                    .position(|r| **r == *name)
                    .ok_or_else(|| {
                        refuse(
                            ErrorCode::NotInRoom,
                            format!("not in room `{}`", clip(name, 64)),
                        )
                    })?;
                vec![self.rooms.remove(index)]
            }
            None if self.rooms.is_empty() => {
                return Err(refuse(ErrorCode::NotInRoom, "not in any room"))
            }
            None => std::mem::take(&mut self.rooms),
        };
        for room in &leaving {
            self.app.hub.leave(self.id, room);
        }
        let names: Vec<&str> = leaving.iter().map(|r| &**r).collect();
        self.send(encode::left(&names, rid), "left");
        Ok(())
    }

    fn relay(
        &mut self,
        relay: Relay<'_>,
        frame: &str,
        rid: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        if self.rooms.is_empty() {
            return Err(refuse(
                ErrorCode::NotInRoom,
                "join a room before signaling other peers",
            ));
        }
        let unknown = || {
            refuse(
                ErrorCode::UnknownTarget,
                format!("no peer `{}` is connected", clip(&relay.target, 64)),
            )
        };
        let target = PeerId::parse(&relay.target).ok_or_else(unknown)?;
        let stamped = if relay.has_from {
            replace_from(frame, self.id.as_str())
                .map_err(|err| refuse(ErrorCode::MalformedJson, err.to_string()))?
        } else {
            stamp_from(frame, self.id.as_str())
        };
        match self.app.hub.relay(&self.rooms, target, stamped.into()) {
            Ok(()) => {
                self.app.metrics.messages_out(relay.kind.as_str(), 1);
                if let Some(rid) = rid {
                    self.send(encode::ack(rid), "ack");
                }
                Ok(())
            }
            Err(RelayError::UnknownTarget) => Err(unknown()),
            Err(RelayError::NoSharedRoom) => Err(refuse(
                ErrorCode::NoSharedRoom,
                format!("peer `{target}` is in none of your rooms"),
            )),
            Err(RelayError::DeliveryFailed) => Err(refuse(
                ErrorCode::DeliveryFailed,
                format!("peer `{target}` is not reading its messages and is being disconnected"),
            )),
        }
    }

    fn broadcast(
        &mut self,
        room: Option<&str>,
        data: &RawValue,
        rid: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        let room = match (room, self.rooms.as_slice()) {
            (Some(name), rooms) => rooms.iter().find(|r| ***r == *name).ok_or_else(|| {
                refuse(
                    ErrorCode::NotInRoom,
                    format!("not in room `{}`", clip(name, 64)),
                )
            })?,
            (None, [only]) => only,
            (None, []) => {
                return Err(refuse(
                    ErrorCode::NotInRoom,
                    "join a room before broadcasting",
                ))
            }
            (None, _) => {
                return Err(refuse(
                    ErrorCode::MissingField,
                    "field `room` is required when in several rooms",
                ))
            }
        };
        let frame = encode::broadcast(self.id.as_str(), room, data);
        self.app.hub.broadcast(self.id, room, frame.into());
        if let Some(rid) = rid {
            self.send(encode::ack(rid), "ack");
        }
        Ok(())
    }

    /// Queues a frame for this peer itself.
    fn send(&self, frame: String, type_name: &str) {
        // An overflow closes this connection; the frame is moot then.
        let _ = self.outbox.push(Message::Text(frame.into()));
        self.app.metrics.messages_out(type_name, 1);
    }

    fn send_error(&self, code: ErrorCode, message: &str, rid: Option<&RawValue>) {
        self.app.metrics.error(code);
        self.send(encode::error(code, message, rid), "error");
    }
}
