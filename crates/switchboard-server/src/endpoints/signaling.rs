//! `/ws`: WebRTC signaling. One [`Session`] per connection turns decoded client
//! messages into hub operations and replies.
//!
//! A frame's path: `connection::serve` reads it → [`Session::on_text`] checks its
//! size and decodes it (one validating pass, borrowing) → a relay is stamped with
//! `from` by splicing the original bytes and pushed into the target's outbox by
//! the hub → the target's own `serve` loop writes it. A `join` or `leave` waits
//! on the hub's broker, so it is finished before the next frame is read.
//!
//! The session never asks where the hub's broker is: one node or many, it is
//! the same code.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes};
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_protocol::client::{clip, decode, peek_rid, ClientMessage, Relay, Request};
use switchboard_protocol::relay::stamp;
use switchboard_protocol::server::encode;
use switchboard_protocol::{ErrorCode, DEFAULT_ROOM};
use tracing::{debug, info};

use super::admitted::Admitted;
use crate::app::App;
use crate::auth::{Identity, TokenError, ANONYMOUS};
use crate::broker::parking::{Claim, Parked, SessionRecord};
use crate::broker::{meta_of, shown, BrokerError, Shown};
use crate::connection::{Connection, Departure, Handler, Pending};
use crate::hub::activity::LeftReason;
use crate::hub::room::{validate_name, Flavor};
use crate::hub::{JoinError, Joiner, RelayError};
use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::rate_limit::Limit;
use crate::resume::{ResumeToken, SessionState};
use crate::settings::HookFailure;
use crate::telemetry::metrics::Endpoint;
use crate::webhooks::join_hook::HookVerdict;
use crate::websocket::{Socket, WebSocketUpgrade};

/// Frames up to this many times `max-message-size` are read and answered with
/// `message-too-large`; larger ones close the connection (1009) unread.
pub const HARD_LIMIT_FACTOR: usize = 4;

/// The most a client that has not authenticated yet may send: one `auth`
/// message with a token (tokens are a few hundred bytes; this leaves room for
/// large claims). Capped by `max-message-size`.
pub const AUTH_FRAME_LIMIT: usize = 8 * 1024;

/// `?resume`: a new session that may be resumed; `?resume=TOKEN`: resume one.
#[derive(Deserialize)]
pub struct ResumeQuery {
    resume: Option<String>,
}

/// Accepts the upgrade once admission has passed.
pub async fn upgrade(
    upgrade: WebSocketUpgrade,
    admitted: Admitted,
    Query(query): Query<ResumeQuery>,
    State(app): State<Arc<App>>,
) -> Response {
    let limit = hard_limit(&app);
    upgrade.on_upgrade(limit, move |socket| {
        crate::connection::serve(app.connections.clone(), Box::pin(set_up(socket, app, admitted, query.resume)))
    })
}

fn hard_limit(app: &App) -> usize {
    app.settings.max_message_size.saturating_mul(HARD_LIMIT_FACTOR)
}

/// Authenticates (when the token must come in a message), creates or resumes
/// the session, and sends `welcome`; `None` when the client is refused.
async fn set_up(
    mut socket: Socket,
    app: Arc<App>,
    admitted: Admitted,
    resume: Option<String>,
) -> Option<Connection<Session>> {
    let identity = match admitted.identity.clone() {
        Some(identity) => identity,
        None => authenticate(&mut socket, &app, admitted.ip).await?,
    };
    // Resuming is for clients that ask for it (the browser SDK does): a client
    // that never will, like the seeds', would leave a ghost in its rooms for the
    // whole grace period after every dropped connection.
    let resumable = resume.is_some() && !app.settings.resume_grace.is_zero();
    let claimed = match resume.as_deref().and_then(PeerId::parse) {
        Some(token) if resumable => claim(&app, token).await,
        _ => None,
    };
    let resumed = match claimed {
        // A session whose queue overflowed while it was away lost messages: it
        // cannot be resumed as if nothing happened. One the server removed is over.
        Some(state) if state.outbox.is_overflowed() || state.outbox.is_removed() => {
            let reason = if state.outbox.is_removed() { LeftReason::Kicked } else { LeftReason::Disconnected };
            app.hub.disconnect(state.id, state.rooms, reason);
            None
        }
        other => other,
    };
    let was_resumed = resumed.is_some();
    let state = resumed.unwrap_or_else(|| {
        let id = PeerId::random();
        let outbox = app.outbox();
        app.hub.connect(id, outbox.clone());
        SessionState { id, identity, outbox, rooms: Vec::new() }
    });
    let SessionState { id, identity, outbox, rooms } = state;
    let (token, takeover) = match resumable {
        true => {
            let (token, takeover) = app.sessions.register(&app.lifecycle().close_connections, id);
            let record = SessionRecord { id, token, identity: identity.to_record(), rooms: rooms.clone() };
            // Written before `welcome`: the token it carries resumes on any node.
            app.hub.broker().open_session(&record).await;
            (Some(token), Some(takeover))
        }
        false => (None, None),
    };
    // TURN credentials name the authenticated user, or else the peer.
    let ice_servers = app.ice.for_user(identity.user.as_deref().unwrap_or(id.as_str()));
    let welcome = match token {
        Some(token) => {
            let names: Vec<&str> = rooms.iter().map(|r| &**r).collect();
            encode::welcome_session(id.as_str(), ice_servers.as_deref(), token.as_str(), Some(was_resumed), &names)
        }
        None => encode::welcome(id.as_str(), ice_servers.as_deref()),
    };
    // Straight onto the socket: a resumed session's outbox already holds what
    // was sent to it while it was away, which must come after `welcome`. A
    // failed write shows up at once in the connection loop.
    let _ = socket.send(Message::Text(welcome.into())).await;
    app.metrics.messages_out("welcome", 1);
    if was_resumed {
        app.metrics.resumes.increment(1);
        info!(peer = %id, rooms = rooms.len(), "session resumed");
    }
    debug!(peer = %id, ip = %admitted.ip, resumed = was_resumed, "signaling peer connected");
    let largest_frame = hard_limit(&app);
    let identity = (!identity.is_anonymous()).then(|| Box::new(identity));
    let handler = Session { app, id, identity, outbox: outbox.clone(), rooms, resume: token };
    let slot = admitted.into_slot();
    Some(Connection { endpoint: Endpoint::Signaling, socket, outbox, handler, largest_frame, takeover, slot })
}

/// Takes back the session `token` resumes: one this node keeps (suspended,
/// or live on a half-open connection), or else one the deployment keeps
/// (parked by any node, or live on another, which hands it over).
async fn claim(app: &Arc<App>, token: ResumeToken) -> Option<SessionState> {
    if let Some(state) = app.sessions.claim(token).await {
        return Some(state);
    }
    let broker = app.hub.broker();
    if !broker.keeps_sessions() {
        return None;
    }
    let peer = broker.find_session(token).await.ok().flatten()?;
    let outbox = app.outbox();
    // Registered before the claim: a relay sent here once the session is this
    // node's is kept, behind what was queued for it while it was away.
    app.hub.connect(peer, outbox.clone());
    let taken = match broker.claim(token, peer).await {
        Ok(Claim::Taken(taken)) => taken,
        Ok(Claim::Unknown) | Err(_) => {
            app.hub.disconnect(peer, Vec::new(), LeftReason::Disconnected);
            return None;
        }
    };
    let (rooms, missed) = app.hub.adopt(peer, &outbox, taken.record.rooms, &taken.known).await;
    let fits = !missed.overflowed && outbox.prepend(missed.around(taken.frames)).is_ok();
    if taken.overflowed || !fits {
        // It lost messages while it was away: over, as on its own node.
        broker.end_session(peer, token);
        app.hub.disconnect(peer, rooms, LeftReason::Disconnected);
        return None;
    }
    info!(peer = %peer, rooms = rooms.len(), "session resumed from another node");
    Some(SessionState { id: peer, identity: Identity::from_record(&taken.record.identity), outbox, rooms })
}

/// Ends a suspended session whose grace period ran out without a resume.
async fn expire(app: Arc<App>, token: ResumeToken) {
    tokio::time::sleep(app.settings.resume_grace).await;
    if let Some(state) = app.sessions.expire(token) {
        debug!(peer = %state.id, "resume grace period over");
        app.hub.broker().end_session(state.id, token);
        app.metrics.resume_expired.increment(1);
        app.hub.disconnect(state.id, state.rooms, LeftReason::TimedOut);
    }
}

/// With `--auth required` and no token on the URL, the first message must be
/// `{"type":"auth","token":...}`, within `auth-timeout` and at most
/// [`AUTH_FRAME_LIMIT`] bytes (and `max-message-size`). No peer id before that.
async fn authenticate(socket: &mut Socket, app: &App, ip: IpAddr) -> Option<Identity> {
    let first = tokio::time::timeout(app.settings.auth_timeout, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Ok(_))) => Utf8Bytes::from_static(""),
        Ok(None) | Ok(Some(Err(_))) => return None,
        Err(_) => Utf8Bytes::from_static(""),
    };
    let limit = AUTH_FRAME_LIMIT.min(app.settings.max_message_size);
    let (refusal, rid) = if text.len() > limit {
        let message = format!("message is {} bytes; before authenticating the limit is {limit}", text.len());
        info!(%ip, size = text.len(), "refused signaling connection: auth message too large");
        ((ErrorCode::MessageTooLarge, message), None)
    } else {
        let (identity, rid) = match decode(text.as_str()) {
            Ok(Request { rid, message: ClientMessage::Auth { token } }) => (app.auth.verify(&token), rid),
            _ => (Err(TokenError::Missing), None),
        };
        match identity {
            Ok(identity) => return Some(identity),
            Err(err) => {
                info!(%ip, reason = %err, "refused signaling connection: no valid auth message");
                ((ErrorCode::Unauthorized, "a valid token is required".to_owned()), rid)
            }
        }
    };
    let (code, message) = refusal;
    app.metrics.refused("unauthorized");
    app.metrics.error(code);
    let refusal = encode::error(code, &message, rid);
    let close = CloseFrame { code: close_code::POLICY, reason: Utf8Bytes::from_static(code.as_str()) };
    let goodbye = async {
        socket.send(Message::Text(refusal.into())).await?;
        socket.send(Message::Close(Some(close))).await
    };
    let _ = tokio::time::timeout(app.settings.write_timeout, goodbye).await;
    None
}

/// One signaling peer.
struct Session {
    app: Arc<App>,
    id: PeerId,
    /// Who the peer is, from its token; decides which rooms it may join.
    /// `None` for an anonymous peer: every idle connection holds a Session,
    /// and most have no token.
    identity: Option<Box<Identity>>,
    outbox: Arc<Outbox>,
    /// The rooms this peer is in, in join order. The hub holds the same
    /// membership; keeping it here too makes "am I in room X" and disconnect
    /// cleanup lock-free.
    rooms: Vec<Arc<str>>,
    /// The session's resume token, when the client asked to be resumable.
    resume: Option<crate::resume::ResumeToken>,
}

/// A request the session turns down: the `error` the client is sent.
struct RequestError {
    code: ErrorCode,
    message: String,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError { code, message: message.into() }
    }

    fn unavailable(error: BrokerError) -> RequestError {
        RequestError::new(ErrorCode::Unavailable, format!("{error}; try again shortly"))
    }

    fn not_in(room: &str) -> RequestError {
        RequestError::new(ErrorCode::NotInRoom, format!("not in room `{}`", clip(room, 64)))
    }
}

/// A join that passed this node's checks, owned so it can wait on the broker.
struct JoinRequest {
    room: Arc<str>,
    shown: Shown,
    capacity: Option<u32>,
    rid: Option<Box<RawValue>>,
}

impl Handler for Session {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        let max = self.app.settings.max_message_size;
        if text.len() > max {
            self.app.metrics.message_in(None);
            let message = format!("message is {} bytes; the limit is {max}", text.len());
            self.send_error(ErrorCode::MessageTooLarge, &message, None);
            return None;
        }
        let request = match decode(text.as_str()) {
            Ok(request) => request,
            Err(err) => {
                self.app.metrics.message_in(None);
                self.send_error(err.code, &err.message, err.rid);
                return None;
            }
        };
        self.app.metrics.message_in(Some(request.message.type_name()));
        let rid = request.rid;
        let result = match request.message {
            // Joins and leaves wait on the broker: finished before the next frame.
            ClientMessage::Join { room, meta, capacity } => {
                match self.check_join(room.as_deref().unwrap_or(DEFAULT_ROOM), meta, capacity, rid) {
                    Ok(join) => return Some(Box::pin(self.join(join))),
                    Err(refusal) => Err(refusal),
                }
            }
            ClientMessage::Leave { room } => match self.take_rooms(room.as_deref()) {
                Ok(leaving) => return Some(Box::pin(self.leave(leaving, rid.map(RawValue::to_owned)))),
                Err(refusal) => Err(refusal),
            },
            ClientMessage::Relay(relay) => self.relay(relay, text.as_str(), rid),
            ClientMessage::Broadcast { room, data } => self.broadcast(room.as_deref(), data, rid),
            ClientMessage::Ping => {
                self.send(encode::pong(rid), "pong");
                Ok(())
            }
            ClientMessage::Auth { .. } => Err(RequestError::new(
                ErrorCode::UnexpectedMessage,
                "`auth` is only accepted as the first message, when the server waits for it",
            )),
        };
        if let Err(refusal) = result {
            self.send_error(refusal.code, &refusal.message, rid);
        }
        None
    }

    fn on_binary(&mut self, _data: Bytes) {
        self.app.metrics.message_in(None);
        self.send_error(
            ErrorCode::BinaryNotSupported,
            "/ws speaks JSON text frames; binary frames are not accepted",
            None,
        );
    }

    fn on_rate_limited(&mut self, limit: Limit, text: Option<&str>) {
        let message = match limit {
            Limit::Messages => "too many messages per second; this one was dropped",
            Limit::Bytes => "too many bytes per second; this message was dropped",
        };
        self.send_error(ErrorCode::RateLimited, message, text.and_then(peek_rid));
    }

    fn on_removed(&mut self, room: &str) {
        if let Some(index) = self.rooms.iter().position(|r| **r == *room) {
            self.app.hub.removed(self.rooms.remove(index));
            self.rooms_changed();
        }
    }

    fn on_close(&mut self, departure: Departure) {
        let rooms = std::mem::take(&mut self.rooms);
        // The server API may have removed the session just as its connection dropped.
        let removed = self.outbox.is_removed();
        let comes_back = matches!(departure, Departure::Lost | Departure::TakenOver | Departure::Shutdown);
        match (departure, self.resume) {
            // The client may come back, to any node: the deployment keeps
            // everything for it, for a while, if it keeps sessions.
            (_, Some(token)) if comes_back && !removed && self.park(token, &rooms) => {
                self.app.sessions.end(token);
                debug!(peer = %self.id, ?departure, "signaling session parked");
            }
            // Else this node keeps it, unless this node is stopping.
            (Departure::Lost | Departure::TakenOver, Some(token)) if !removed => {
                let state =
                    SessionState { id: self.id, identity: self.identity().clone(), outbox: self.outbox.clone(), rooms };
                self.app.sessions.suspend(token, state);
                tokio::spawn(expire(self.app.clone(), token));
                debug!(peer = %self.id, ?departure, "signaling session suspended");
            }
            (_, token) => {
                if let Some(token) = token {
                    self.app.sessions.end(token);
                    self.app.hub.broker().end_session(self.id, token);
                }
                let reason = if removed { LeftReason::Kicked } else { LeftReason::Disconnected };
                self.app.hub.disconnect(self.id, rooms, reason);
                debug!(peer = %self.id, "signaling peer disconnected");
            }
        }
    }
}

impl Session {
    /// Parks the session with the deployment (see `broker::parking`); whether it did.
    fn park(&self, token: ResumeToken, rooms: &[Arc<str>]) -> bool {
        let record = SessionRecord { id: self.id, token, identity: self.identity().to_record(), rooms: rooms.to_vec() };
        let limits = self.outbox.limits();
        let parked = Parked {
            record,
            frames: Vec::new(),
            messages: limits.messages,
            bytes: limits.bytes,
            grace: self.app.settings.resume_grace,
            known: Vec::new(),
        };
        self.app.hub.park(self.id, &self.outbox, parked)
    }

    /// Tells the deployment a resumable session's rooms, for whichever node resumes it.
    fn rooms_changed(&self) {
        if self.resume.is_some() {
            self.app.hub.broker().session_rooms(self.id, &self.rooms);
        }
    }

    /// Who the peer is.
    fn identity(&self) -> &Identity {
        self.identity.as_deref().unwrap_or(&ANONYMOUS)
    }

    /// Checks everything about a join that this node can decide alone.
    fn check_join(
        &self,
        room: &str,
        meta: Option<&RawValue>,
        capacity: Option<u32>,
        rid: Option<&RawValue>,
    ) -> Result<JoinRequest, RequestError> {
        let settings = &self.app.settings;
        validate_name(room, settings.max_room_name_len)
            .map_err(|reason| RequestError::new(ErrorCode::InvalidField, reason))?;
        if let Some(meta) = meta {
            if meta.get().len() > settings.max_meta_size {
                return Err(RequestError::new(
                    ErrorCode::InvalidField,
                    format!("field `meta` must be at most {} bytes", settings.max_meta_size),
                ));
            }
        }
        if !self.identity().may_join(room) {
            return Err(RequestError::new(
                ErrorCode::Forbidden,
                format!("your token does not allow room `{}`", clip(room, 64)),
            ));
        }
        if self.rooms.iter().any(|r| **r == *room) {
            return Err(RequestError::new(ErrorCode::AlreadyJoined, format!("already in room `{}`", clip(room, 64))));
        }
        if self.rooms.len() >= settings.max_rooms_per_peer {
            return Err(RequestError::new(
                ErrorCode::TooManyRooms,
                format!("a peer may be in at most {} rooms", settings.max_rooms_per_peer),
            ));
        }
        Ok(JoinRequest {
            room: room.into(),
            shown: shown(self.identity().user.clone(), meta.map(RawValue::to_owned)),
            capacity: self.identity().room_capacity(capacity),
            rid: rid.map(RawValue::to_owned),
        })
    }

    async fn join(&mut self, join: JoinRequest) {
        let JoinRequest { room, mut shown, mut capacity, rid } = join;
        if let Some(hook) = &self.app.join_hook {
            let user = self.identity().user.clone();
            match hook.ask(self.id.as_str(), user.as_deref(), &room, meta_of(&shown)).await {
                HookVerdict::Allow { meta, capacity: hooked } => {
                    if let Some(meta) = meta {
                        shown = crate::broker::shown(user, Some(meta));
                    }
                    capacity = hooked.or(capacity);
                }
                HookVerdict::Deny(reason) => {
                    self.send_error(ErrorCode::Forbidden, clip(&reason, 256), rid.as_deref());
                    return;
                }
                HookVerdict::Unavailable(_) if hook.failure == HookFailure::Allow => {}
                HookVerdict::Unavailable(_) => {
                    let message = "the join hook did not answer; try again shortly";
                    self.send_error(ErrorCode::Unavailable, message, rid.as_deref());
                    return;
                }
            }
        }
        let joiner =
            Joiner { id: self.id, outbox: &self.outbox, shown, capacity, seal: false, flavor: Flavor::Signaling };
        let refusal = match self.app.hub.join(joiner, &room, rid.as_deref()).await {
            Ok(()) => {
                self.rooms.push(room);
                self.rooms_changed();
                return;
            }
            Err(JoinError::AlreadyJoined) => RequestError::new(ErrorCode::AlreadyJoined, "already in this room"),
            Err(JoinError::RoomFull { capacity }) => RequestError::new(
                ErrorCode::RoomFull,
                format!("room `{}` is full (capacity {capacity})", clip(&room, 64)),
            ),
            Err(JoinError::Unavailable(error)) => RequestError::unavailable(error),
        };
        self.send_error(refusal.code, &refusal.message, rid.as_deref());
    }

    /// Removes the named room (or all rooms) from this peer's list.
    fn take_rooms(&mut self, room: Option<&str>) -> Result<Vec<Arc<str>>, RequestError> {
        match room {
            Some(name) => {
                let index = self.rooms.iter().position(|r| **r == *name).ok_or_else(|| RequestError::not_in(name))?;
                Ok(vec![self.rooms.remove(index)])
            }
            None if self.rooms.is_empty() => Err(RequestError::new(ErrorCode::NotInRoom, "not in any room")),
            None => Ok(std::mem::take(&mut self.rooms)),
        }
    }

    async fn leave(&mut self, leaving: Vec<Arc<str>>, rid: Option<Box<RawValue>>) {
        for room in &leaving {
            self.app.hub.leave(self.id, room).await;
        }
        self.rooms_changed();
        let names: Vec<&str> = leaving.iter().map(|r| &**r).collect();
        self.send(encode::left(&names, rid.as_deref()), "left");
    }

    fn relay(&mut self, relay: Relay<'_>, frame: &str, rid: Option<&RawValue>) -> Result<(), RequestError> {
        if self.rooms.is_empty() {
            return Err(RequestError::new(ErrorCode::NotInRoom, "join a room before signaling other peers"));
        }
        let unknown = || {
            RequestError::new(ErrorCode::UnknownTarget, format!("no peer `{}` is connected", clip(&relay.target, 64)))
        };
        let target = PeerId::parse(&relay.target).ok_or_else(unknown)?;
        let stamped = stamp(frame, relay.has_from, self.id.as_str())
            .map_err(|err| RequestError::new(ErrorCode::MalformedJson, err.to_string()))?;
        self.app.hub.relay(self.id, &self.rooms, target, Utf8Bytes::from(stamped)).map_err(|error| match error {
            RelayError::UnknownTarget => unknown(),
            RelayError::NoSharedRoom => {
                RequestError::new(ErrorCode::NoSharedRoom, format!("peer `{target}` is in none of your rooms"))
            }
            RelayError::DeliveryFailed => RequestError::new(
                ErrorCode::DeliveryFailed,
                format!("peer `{target}` is not reading its messages and is being disconnected"),
            ),
            RelayError::Unavailable(error) => RequestError::unavailable(error),
        })?;
        self.app.metrics.messages_out(relay.kind.as_str(), 1);
        if let Some(rid) = rid {
            self.send(encode::ack(rid), "ack");
        }
        Ok(())
    }

    fn broadcast(&mut self, room: Option<&str>, data: &RawValue, rid: Option<&RawValue>) -> Result<(), RequestError> {
        let room = match (room, self.rooms.as_slice()) {
            (Some(name), rooms) => rooms.iter().find(|r| ***r == *name).ok_or_else(|| RequestError::not_in(name))?,
            (None, [only]) => only,
            (None, []) => return Err(RequestError::new(ErrorCode::NotInRoom, "join a room before broadcasting")),
            (None, _) => {
                return Err(RequestError::new(
                    ErrorCode::MissingField,
                    "field `room` is required when in several rooms",
                ))
            }
        };
        let frame = Utf8Bytes::from(encode::broadcast(self.id.as_str(), room, data));
        self.app.hub.broadcast(self.id, room, frame, false).map_err(|error| {
            RequestError::new(ErrorCode::Unavailable, format!("{error}: delivered to peers on this node only"))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle signaling peer costs is mostly its connection task's
    /// future (docs/benchmarks.md has the measured memory): keep it within 1 KiB,
    /// and in an optimized build within 600 B, so that with tokio's header and
    /// trailer the task fits a 768-byte cell (560 B on 2026-12-07; 800 B when the
    /// connection's ending held a second socket slot, which cost 0.17 KiB per
    /// idle connection at 15,000).
    #[test]
    fn an_idle_signaling_connection_s_future_fits_in_1_kib() {
        let size = crate::connection::idle_future_size::<Session>();
        assert!(size <= 1024, "the signaling connection's future is {size} bytes");
        if !cfg!(debug_assertions) {
            assert!(size <= 600, "the signaling connection's future is {size} bytes: its task no longer fits 768 B");
        }
    }
}
