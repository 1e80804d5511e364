//! `/y-webrtc`: the signaling protocol of y-webrtc 10.x (its `bin/server.js`),
//! so that an unmodified `WebrtcProvider` works against Switchboard by
//! changing only its `signaling` URL. `docs/compat.md` has what differs.
//!
//! A topic is a room of [`Flavor::Quiet`] (nobody is told of joins or leaves) in
//! a namespace of its own ([`room_name`]): a subscribe joins rooms, an
//! unsubscribe leaves them, a publish is a broadcast that reaches the sender
//! too (when subscribed), stamped with the topic's member count as `clients`.
//! So topics are cluster-wide over Redis like any room, counted in the rooms
//! gauge, and capped by `--max-peers-per-room`.
//!
//! The protocol has no error message: what the server refuses (an over-long
//! topic, one the token does not allow, a full topic, a frame that is not a
//! y-webrtc message) is dropped, logged and counted in
//! `switchboard_dialect_dropped_total{dialect="y-webrtc"}`; a connection that
//! asks for more than `--y-webrtc-max-topics` topics is closed (1008).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use switchboard_protocol::client::clip;
use switchboard_protocol::compat::y_webrtc::{decode, topic_names, with_clients, Request, PONG};
use tracing::{debug, info, warn};

use super::admitted::{refuse, Admitted};
use crate::app::App;
use crate::auth::{Identity, ANONYMOUS};
use crate::connection::{Connection, Departure, Handler, Pending};
use crate::hub::activity::LeftReason;
use crate::hub::room::Flavor;
use crate::hub::{JoinError, Joiner};
use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::telemetry::metrics::{Dropped, Endpoint};
use crate::websocket::WebSocketUpgrade;

/// What every y-webrtc room name starts with. Native room names may not
/// contain control characters, so no `/ws` room can ever be a topic.
pub const TOPIC_PREFIX: &str = "\u{1}y-webrtc\u{1}";

/// The hub room of a topic.
pub fn room_name(topic: &str) -> Arc<str> {
    let mut name = String::with_capacity(TOPIC_PREFIX.len() + topic.len());
    name.push_str(TOPIC_PREFIX);
    name.push_str(topic);
    name.into()
}

/// The topic of a hub room (for logs).
fn topic_of(room: &str) -> &str {
    room.strip_prefix(TOPIC_PREFIX).unwrap_or(room)
}

/// Accepts the upgrade once admission has passed. y-webrtc cannot send an
/// `auth` message, so with `--auth required` the token must come with the
/// upgrade (`?token=` on the signaling URL, or `Authorization`).
pub async fn upgrade(upgrade: WebSocketUpgrade, admitted: Admitted, State(app): State<Arc<App>>) -> Response {
    let identity = match admitted.require_identity() {
        Ok(identity) => (!identity.is_anonymous()).then(|| Box::new(identity.clone())),
        Err(refusal) => return refuse(&app, refusal),
    };
    let limit = app.settings.max_message_size;
    upgrade.on_upgrade(limit, move |socket| {
        let outbox = app.outbox();
        let id = PeerId::random();
        debug!(peer = %id, ip = %admitted.ip, "y-webrtc client connected");
        let handler = Subscriber {
            app: app.clone(),
            id,
            identity,
            outbox: outbox.clone(),
            topics: HashSet::new(),
            expelled: false,
        };
        let slot = admitted.into_slot();
        Connection::plain(Endpoint::YWebrtc, socket, outbox, handler, limit, slot).serve_now(app.connections.clone())
    })
}

/// One y-webrtc client: a peer of the hub with no id of its own on the wire.
struct Subscriber {
    app: Arc<App>,
    id: PeerId,
    /// Its token's identity; `None` when anonymous (most connections).
    identity: Option<Box<Identity>>,
    outbox: Arc<Outbox>,
    /// The hub rooms ([`room_name`]s) of the topics it is subscribed to.
    topics: HashSet<Arc<str>>,
    /// Closed for asking too much: what it still sends is ignored.
    expelled: bool,
}

/// Why a topic of a subscribe was turned down, for the one log line per frame.
#[derive(Default)]
struct Refused<'a> {
    too_long: usize,
    forbidden: usize,
    first: Option<&'a str>,
}

impl Handler for Subscriber {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        if self.expelled {
            // It was sent a close frame and talks on instead of answering: a
            // second close is refused by the socket at the next write, which
            // ends the connection.
            let _ = self.outbox.push(Message::Close(None));
            return None;
        }
        let Some(request) = decode(text.as_str()) else {
            self.app.metrics.message_in(None);
            self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Malformed);
            debug!(peer = %self.id, frame = clip(text.as_str(), 64), "y-webrtc: dropped a frame that is not a y-webrtc message");
            return None;
        };
        match request {
            Request::Subscribe { topics } => {
                self.app.metrics.message_in(Some("join"));
                let rooms = self.check_subscribe(&topic_names(&topics))?;
                Some(Box::pin(self.subscribe(rooms)))
            }
            Request::Unsubscribe { topics } => {
                self.app.metrics.message_in(Some("leave"));
                let rooms: Vec<Arc<str>> =
                    topic_names(&topics).iter().filter_map(|topic| self.topics.take(&*room_name(topic))).collect();
                (!rooms.is_empty()).then(|| Box::pin(self.unsubscribe(rooms)) as Pending<'_>)
            }
            Request::Publish { topic } => {
                self.app.metrics.message_in(Some("broadcast"));
                let room = self.publish_room(topic.as_deref())?;
                self.publish(room, text)
            }
            Request::Ping => {
                self.app.metrics.message_in(Some("ping"));
                let _ = self.outbox.push(Message::Text(Utf8Bytes::from_static(PONG)));
                self.app.metrics.messages_out("pong", 1);
                None
            }
        }
    }

    fn on_binary(&mut self, data: Bytes) {
        self.app.metrics.message_in(None);
        self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Binary);
        debug!(peer = %self.id, size = data.len(), "y-webrtc: dropped a binary frame");
    }

    fn on_close(&mut self, _departure: Departure) {
        let rooms: Vec<Arc<str>> = self.topics.drain().collect();
        self.app.hub.disconnect(self.id, rooms, LeftReason::Disconnected);
        debug!(peer = %self.id, "y-webrtc client disconnected");
    }
}

impl Subscriber {
    fn identity(&self) -> &Identity {
        self.identity.as_deref().unwrap_or(&ANONYMOUS)
    }

    /// Whether this client may use `topic` at all: its length, its token's room
    /// patterns (which apply to the topic name). Counts and says why not.
    fn allowed<'t>(&self, topic: &'t str, refused: &mut Refused<'t>) -> bool {
        let reason = if topic.len() > self.app.settings.y_webrtc_max_topic_len {
            &mut refused.too_long
        } else if !self.identity().may_join(topic) {
            &mut refused.forbidden
        } else {
            return true;
        };
        *reason += 1;
        refused.first.get_or_insert(topic);
        self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Limit);
        false
    }

    /// The rooms a subscribe adds, or `None` when there are none, or when they
    /// would take the connection past `--y-webrtc-max-topics` (it is then closed).
    fn check_subscribe(&mut self, topics: &[std::borrow::Cow<'_, str>]) -> Option<Vec<Arc<str>>> {
        let max_topics = self.app.settings.y_webrtc_max_topics;
        let mut refused = Refused::default();
        let mut fresh: HashSet<Arc<str>> = HashSet::new();
        for topic in topics {
            if !self.allowed(topic, &mut refused) {
                continue;
            }
            let room = room_name(topic);
            if self.topics.contains(&room) {
                continue;
            }
            fresh.insert(room);
            if self.topics.len() + fresh.len() > max_topics {
                self.expel(max_topics);
                return None;
            }
        }
        if let Some(first) = refused.first {
            info!(
                peer = %self.id,
                too_long = refused.too_long,
                forbidden = refused.forbidden,
                first = clip(first, 64),
                max_topic_len = self.app.settings.y_webrtc_max_topic_len,
                "y-webrtc: refused topics of a subscribe (over the length limit, or not allowed by the token)"
            );
        }
        (!fresh.is_empty()).then(|| fresh.into_iter().collect())
    }

    /// Closes a connection that asked for more topics than it may have: 1008,
    /// after leaving every topic (nothing more is sent to it).
    fn expel(&mut self, max_topics: usize) {
        self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Limit);
        info!(peer = %self.id, max_topics, "y-webrtc: closing a connection that subscribed to too many topics");
        let rooms: Vec<Arc<str>> = self.topics.drain().collect();
        self.app.hub.disconnect(self.id, rooms, LeftReason::Disconnected);
        self.expelled = true;
        let close = CloseFrame { code: close_code::POLICY, reason: Utf8Bytes::from_static("too many topics") };
        // The socket sends nothing after a close frame; the client's answer ends the connection.
        let _ = self.outbox.push(Message::Close(Some(close)));
    }

    async fn subscribe(&mut self, rooms: Vec<Arc<str>>) {
        // The token's capacity, if it has one; otherwise `--max-peers-per-room`.
        let capacity = self.identity().room_capacity(None);
        for room in rooms {
            let joiner =
                Joiner { id: self.id, outbox: &self.outbox, shown: None, capacity, seal: false, flavor: Flavor::Quiet };
            match self.app.hub.join(joiner, &room, None).await {
                Ok(()) | Err(JoinError::AlreadyJoined) => {
                    self.topics.insert(room);
                }
                Err(JoinError::RoomFull { capacity }) => {
                    self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Limit);
                    info!(peer = %self.id, topic = clip(topic_of(&room), 64), capacity, "y-webrtc: topic is full, not subscribed");
                }
                Err(JoinError::Unavailable(error)) => {
                    warn!(peer = %self.id, topic = clip(topic_of(&room), 64), %error, "y-webrtc: could not subscribe");
                }
            }
        }
    }

    async fn unsubscribe(&mut self, rooms: Vec<Arc<str>>) {
        for room in &rooms {
            self.app.hub.leave(self.id, room).await;
        }
    }

    /// The room a publish goes to, if it may go anywhere.
    fn publish_room(&self, topic: Option<&str>) -> Option<Arc<str>> {
        // The original ignores a publish whose topic is not a non-empty string.
        let Some(topic) = topic.filter(|topic| !topic.is_empty()) else {
            self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Malformed);
            debug!(peer = %self.id, "y-webrtc: dropped a publish without a topic");
            return None;
        };
        let mut refused = Refused::default();
        if !self.allowed(topic, &mut refused) {
            info!(
                peer = %self.id,
                topic = clip(topic, 64),
                "y-webrtc: refused a publish (topic over the length limit, or not allowed by the token)"
            );
            return None;
        }
        Some(room_name(topic))
    }

    /// Forwards a publish to the topic's subscribers. The count is the hub's
    /// (its own members and its mirror of other nodes') when anyone here is
    /// subscribed; otherwise only the broker knows who is, so it is asked.
    fn publish(&mut self, room: Arc<str>, frame: Utf8Bytes) -> Option<Pending<'_>> {
        match self.app.hub.member_count(&room) {
            0 => Some(Box::pin(self.publish_elsewhere(room, frame))),
            clients => {
                self.forward(&room, &frame, clients);
                None
            }
        }
    }

    /// A publish to a topic nobody on this node is subscribed to: subscribers
    /// on other nodes (over Redis) may be; the broker lists them.
    async fn publish_elsewhere(&mut self, room: Arc<str>, frame: Utf8Bytes) {
        match self.app.hub.broker().members(&room).await {
            Ok(members) if members.is_empty() => {}
            Ok(members) => self.forward(&room, &frame, members.len()),
            Err(error) => {
                warn!(peer = %self.id, topic = clip(topic_of(&room), 64), %error, "y-webrtc: publish not delivered")
            }
        }
    }

    fn forward(&self, room: &str, frame: &str, clients: usize) {
        let Some(stamped) = with_clients(frame, clients) else {
            self.app.metrics.dropped(Endpoint::YWebrtc, Dropped::Malformed);
            return;
        };
        if let Err(error) = self.app.hub.broadcast(self.id, room, stamped.into(), true) {
            warn!(peer = %self.id, topic = clip(topic_of(room), 64), %error, "y-webrtc: publish reached this node's subscribers only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_live_in_a_namespace_no_native_room_name_can_enter() {
        let room = room_name("lobby");
        assert_eq!(topic_of(&room), "lobby");
        assert!(crate::hub::room::validate_name(&room, usize::MAX).is_err(), "native names refuse the prefix");
        assert_ne!(&*room_name(""), "");
    }

    /// A y-webrtc client idles like a signaling peer: keep its connection's
    /// future within the same 1 KiB.
    #[test]
    fn an_idle_y_webrtc_connection_s_future_fits_in_1_kib() {
        let size = crate::connection::idle_future_size::<Subscriber>();
        assert!(size <= 1024, "the y-webrtc connection's future is {size} bytes");
    }
}
