//! The PeerJS dialect: what peerjs-server answers, so an app written for the
//! `peerjs` client connects by changing only the server's address.
//!
//! * `GET /{key}/id`: a fresh id; `GET /{key}/peers`: the ids connected, with
//!   `--peerjs-discovery` (401 otherwise, as in the original).
//! * `GET /peerjs?key=K&id=ID&token=T`: the WebSocket. `OPEN` first, then
//!   `OFFER` / `ANSWER` / `CANDIDATE` / `LEAVE` / `EXPIRE` relayed by `dst`
//!   with `src` set by the server, `HEARTBEAT` to stay alive.
//!
//! A thin translation onto the hub. Each PeerJS id is a peer whose *mailbox*
//! is a room of capacity 1 that only it is in: holding the id is being in that
//! room, so an id is unique across every node (the broker decides the join),
//! and writing to an id means following its mailbox (the hub mirrors who is in
//! it, here or on another node) and relaying inside it. A message to an id
//! that is not connected waits for the mailbox's next arrival, up to
//! `--peerjs-expire-timeout`, then the sender is told `EXPIRE`, as by the
//! original's offline queue. Nothing here keeps a second copy of membership,
//! routing or limits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use dashmap::DashMap;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};
use switchboard_protocol::compat::peerjs::{self, texts, Kind};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::admitted::{refuse, LenientAdmitted};
use crate::app::App;
use crate::broker::shown;
use crate::connection::{serve, Connection, Departure, Handler, Pending};
use crate::hub::activity::LeftReason;
use crate::hub::room::Flavor;
use crate::hub::{Hub, JoinError, Joiner, RelayError};
use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::telemetry::metrics::{Dropped, Endpoint};
use crate::websocket::{Socket, WebSocketUpgrade};

/// Most ids one connection writes to at once; past this the least recently
/// added one that is not waiting is forgotten (and followed again if needed).
const MAX_CONTACTS: usize = 256;
/// Most messages waiting for one id that is not connected yet, per sender.
const MAX_WAITING: usize = 64;
/// How long a reconnect with the same token waits for the old connection to
/// let go of the id.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// The PeerJS connections of this node, by id, with the switch that ends
/// each: a reconnect with the same id and token takes the id over.
#[derive(Default)]
pub struct Registry {
    live: DashMap<PeerId, Live>,
}

struct Live {
    secret: [u8; 20],
    stop: CancellationToken,
    gone: Arc<Notify>,
}

/// `GET /{key}/id`: a fresh id, as plain text. The original answers any key.
pub async fn id() -> Response {
    let id = PeerId::random_uuid().to_uuid();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], id).into_response()
}

/// `GET /{key}/peers`: the ids connected, when discovery is on.
pub async fn peers(Path(key): Path<String>, State(app): State<Arc<App>>) -> Response {
    if !app.settings.peerjs_discovery || key != app.settings.peerjs_key {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let realm = realm_room(&key);
    match app.hub.broker().members(&realm).await {
        Ok(members) => {
            let ids: Vec<&str> = members
                .iter()
                .filter_map(|m| crate::broker::meta_of(&m.shown))
                .filter_map(|meta| serde_json::from_str::<Shown>(meta.get()).ok())
                .map(|shown| shown.id)
                .collect();
            axum::Json(ids).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// Every PeerJS answer may be read by any page, as the original's are: an id
/// carries no authority, and the WebSocket has its own origin check.
pub async fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// The query of the PeerJS WebSocket.
#[derive(Deserialize)]
pub struct Params {
    key: Option<String>,
    id: Option<String>,
    token: Option<String>,
}

/// `GET /peerjs`: the WebSocket, once admission has passed. With `--auth
/// required`, `token` (the client's `token` option) must be a valid JWT; it is
/// also the id's reconnect secret, as in PeerJS.
pub async fn upgrade(
    upgrade: WebSocketUpgrade,
    LenientAdmitted(admitted): LenientAdmitted,
    Query(params): Query<Params>,
    State(app): State<Arc<App>>,
    Extension(registry): Extension<Arc<Registry>>,
) -> Response {
    if let Err(refusal) = admitted.require_identity() {
        return refuse(&app, refusal);
    }
    let limit = app.settings.max_message_size;
    upgrade.on_upgrade(limit, move |socket| {
        let env = app.connections.clone();
        serve(env, Box::pin(set_up(socket, app, registry, admitted, params)))
    })
}

/// What a mailbox member shows: its PeerJS id (for discovery) and a digest of
/// its token (for a takeover by the same client).
#[derive(serde::Serialize, Deserialize)]
struct Shown<'a> {
    id: &'a str,
}

async fn set_up(
    mut socket: Socket,
    app: Arc<App>,
    registry: Arc<Registry>,
    admitted: super::admitted::Admitted,
    params: Params,
) -> Option<Connection<Peer>> {
    let key = &app.settings.peerjs_key;
    let (name, secret) = match (params.key, params.id, params.token) {
        (Some(given), Some(id), Some(token)) if given == *key => {
            if !peerjs::valid_id(&id) || id.len() > app.settings.max_room_name_len {
                return goodbye(&mut socket, &app, peerjs::error(texts::INVALID_ID)).await;
            }
            (id, digest(&token))
        }
        (Some(_), Some(_), Some(_)) => return goodbye(&mut socket, &app, peerjs::error(texts::INVALID_KEY)).await,
        _ => return goodbye(&mut socket, &app, peerjs::error(texts::INVALID_WS_PARAMETERS)).await,
    };
    let id = peer_of(key, &name);
    let mailbox = mailbox_room(key, &name);
    let outbox = app.outbox();
    let identity = admitted.identity.clone().unwrap_or_default();
    let meta = serde_json::to_string(&Shown { id: &name }).ok().and_then(|m| RawValue::from_string(m).ok());
    let profile = shown(identity.user.clone(), meta);
    let mut took_over = false;
    let mut takeover_deadline = Instant::now();
    loop {
        let joiner = Joiner {
            id,
            outbox: &outbox,
            shown: profile.clone(),
            capacity: Some(1),
            seal: false,
            flavor: Flavor::Quiet,
        };
        match app.hub.join(joiner, &mailbox, None).await {
            Ok(()) => break,
            Err(JoinError::RoomFull { .. } | JoinError::AlreadyJoined) if !took_over => {
                // The id is live. The same client reconnecting (same token) takes
                // it over from its old connection on this node; anyone else is refused.
                let holder = registry
                    .live
                    .get(&id)
                    .filter(|live| live.secret == secret)
                    .map(|l| (l.stop.clone(), l.gone.clone()));
                let Some((stop, gone)) = holder else {
                    return goodbye(&mut socket, &app, peerjs::id_taken()).await;
                };
                let released = gone.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                stop.cancel();
                let _ = tokio::time::timeout(TAKEOVER_WAIT, released).await;
                took_over = true;
                takeover_deadline = Instant::now() + TAKEOVER_WAIT;
            }
            // The old connection has let go here; the broker may take a moment more.
            Err(JoinError::RoomFull { .. } | JoinError::AlreadyJoined) if Instant::now() < takeover_deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(JoinError::RoomFull { .. } | JoinError::AlreadyJoined) => {
                return goodbye(&mut socket, &app, peerjs::id_taken()).await
            }
            Err(JoinError::Unavailable(error)) => {
                return goodbye(&mut socket, &app, peerjs::error(&format!("{error}; try again shortly"))).await
            }
        }
    }
    let realm = realm_room(key);
    let in_realm = app.settings.peerjs_discovery && {
        let joiner = Joiner { id, outbox: &outbox, shown: profile, capacity: None, seal: false, flavor: Flavor::Quiet };
        app.hub.join(joiner, &realm, None).await.is_ok()
    };
    app.hub.connect(id, outbox.clone());
    let stop = app.lifecycle().close_connections.child_token();
    let gone = Arc::new(Notify::new());
    registry.live.insert(id, Live { secret, stop: stop.clone(), gone: gone.clone() });
    // Straight onto the socket: what waited for this id comes after it.
    let _ = socket.send(Message::Text(Utf8Bytes::from_static(peerjs::OPEN))).await;
    app.metrics.messages_out("welcome", 1);
    debug!(peer = %name, ip = %admitted.ip, "PeerJS peer connected");
    let rooms = if in_realm { vec![mailbox, realm] } else { vec![mailbox] };
    let handler = Peer {
        app: app.clone(),
        registry,
        id,
        name: name.into(),
        outbox: outbox.clone(),
        rooms,
        heard: Instant::now(),
        contacts: IndexMap::new(),
        stop: stop.clone(),
        gone,
    };
    let largest_frame = app.settings.max_message_size;
    Some(Connection {
        endpoint: Endpoint::Peerjs,
        socket,
        outbox,
        handler,
        largest_frame,
        takeover: Some(stop),
        slot: admitted.into_slot(),
    })
}

/// Sends a refusal the client understands, then closes (without a code, as
/// the original does).
async fn goodbye(socket: &mut Socket, app: &App, refusal: String) -> Option<Connection<Peer>> {
    app.metrics.refused("unauthorized");
    let farewell = async {
        socket.send(Message::Text(refusal.into())).await?;
        socket.send(Message::Close(None)).await
    };
    let _ = tokio::time::timeout(app.settings.write_timeout, farewell).await;
    None
}

/// The peer id of a PeerJS id: the same on every node, and no PeerJS id can
/// name a native peer (those are random).
fn peer_of(key: &str, name: &str) -> PeerId {
    let digest = Sha1::new().chain_update(key).chain_update([0]).chain_update(name).finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    PeerId::from_bits(bits)
}

fn digest(token: &str) -> [u8; 20] {
    Sha1::digest(token.as_bytes()).into()
}

/// The room an id lives in. Control characters keep dialect rooms apart from
/// native ones, whose names may not contain them.
fn mailbox_room(key: &str, name: &str) -> Arc<str> {
    format!("\u{1}peerjs\u{1}{key}\u{1}{name}").into()
}

/// The room every peer of a key is in when discovery is on.
fn realm_room(key: &str) -> Arc<str> {
    format!("\u{1}peerjs\u{1}{key}").into()
}

/// One PeerJS connection.
struct Peer {
    app: Arc<App>,
    registry: Arc<Registry>,
    id: PeerId,
    /// Its PeerJS id, as clients write it.
    name: Arc<str>,
    outbox: Arc<Outbox>,
    /// Its mailbox (and the realm, with discovery).
    rooms: Vec<Arc<str>>,
    /// The last `HEARTBEAT` (or the connection's start).
    heard: Instant,
    /// The ids it writes to, by PeerJS id: each one's mailbox is followed.
    contacts: IndexMap<Arc<str>, Contact>,
    /// Ends this connection (takeover, `LEAVE` without `dst`), and with it
    /// every wait for an id.
    stop: CancellationToken,
    /// Woken when this connection has let go of its id.
    gone: Arc<Notify>,
}

/// An id this connection writes to.
struct Contact {
    /// Its peer id.
    target: PeerId,
    mailbox: Arc<str>,
    arrivals: Arc<Notify>,
    /// Messages waiting for it to connect, when it is not; `None` otherwise.
    waiting: Arc<Mutex<Option<Waiting>>>,
}

struct Waiting {
    frames: VecDeque<Utf8Bytes>,
}

impl Handler for Peer {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        let metrics = &self.app.metrics;
        let Some(message) = peerjs::decode(text.as_str()) else {
            metrics.message_in(None);
            metrics.dropped(Endpoint::Peerjs, Dropped::Malformed);
            return None;
        };
        metrics.message_in(Some(inbound_label(message.kind)));
        if message.kind == Kind::Heartbeat {
            self.heard = Instant::now();
            return None;
        }
        let Some(dst) = message.dst.as_deref() else {
            if message.kind == Kind::Leave {
                // The client leaves the server altogether.
                self.stop.cancel();
            } else {
                metrics.dropped(Endpoint::Peerjs, Dropped::Malformed);
            }
            return None;
        };
        if !peerjs::valid_id(dst) {
            metrics.dropped(Endpoint::Peerjs, Dropped::UnknownTarget);
            return None;
        }
        let frame: Utf8Bytes = peerjs::relayed(message.kind, &self.name, dst, message.payload).into();
        let kind = message.kind;
        // The common case: an id this connection already writes to.
        if self.contacts.contains_key(dst) {
            self.send(kind, dst, frame);
            return None;
        }
        let target = peer_of(&self.app.settings.peerjs_key, dst);
        let mailbox = mailbox_room(&self.app.settings.peerjs_key, dst);
        let name: Arc<str> = dst.into();
        Some(Box::pin(async move {
            match self.app.hub.follow(&mailbox, Flavor::Quiet).await {
                Ok(arrivals) => {
                    let contact = Contact { target, mailbox, arrivals, waiting: Arc::default() };
                    self.remember(name.clone(), contact);
                    self.send(kind, &name, frame);
                }
                Err(error) => {
                    debug!(%error, "cannot follow a PeerJS id; message dropped");
                    self.app.metrics.dropped(Endpoint::Peerjs, Dropped::UnknownTarget);
                }
            }
        }))
    }

    fn on_binary(&mut self, _data: Bytes) {
        self.app.metrics.message_in(None);
        self.app.metrics.dropped(Endpoint::Peerjs, Dropped::Binary);
    }

    fn on_timer(&mut self) -> bool {
        self.heard.elapsed() < self.app.settings.peerjs_alive_timeout
    }

    fn on_close(&mut self, _departure: Departure) {
        self.stop.cancel();
        self.registry.live.remove_if(&self.id, |_, live| Arc::ptr_eq(&live.gone, &self.gone));
        for (_, contact) in self.contacts.drain(..) {
            self.app.hub.unfollow(&contact.mailbox);
        }
        self.app.hub.disconnect(self.id, std::mem::take(&mut self.rooms), LeftReason::Disconnected);
        self.gone.notify_waiters();
        debug!(peer = %self.name, "PeerJS peer disconnected");
    }
}

impl Peer {
    /// Relays `frame` to `target`, whose mailbox this connection follows: at
    /// once if it is connected and nothing waits for it already, else into the
    /// wait for it.
    fn send(&mut self, kind: Kind, dst: &str, frame: Utf8Bytes) {
        let Some(contact) = self.contacts.get(dst) else { return };
        let target = contact.target;
        let mut waiting = lock(&contact.waiting);
        if let Some(waiting) = waiting.as_mut() {
            // Behind what already waits, to keep the order.
            if waiting.frames.len() < MAX_WAITING {
                waiting.frames.push_back(frame);
            } else {
                self.app.metrics.dropped(Endpoint::Peerjs, Dropped::Limit);
            }
            return;
        }
        match self.app.hub.relay_in(self.id, &contact.mailbox, target, frame.clone()) {
            Ok(()) => self.app.metrics.messages_out(outbound_label(kind), 1),
            Err(RelayError::UnknownTarget) if kind.waits_for_destination() => {
                *waiting = Some(Waiting { frames: VecDeque::from([frame]) });
                drop(waiting);
                self.wait_for(dst);
            }
            Err(_) => self.app.metrics.dropped(Endpoint::Peerjs, Dropped::UnknownTarget),
        }
    }

    /// Waits (in a task of its own) for `target` to connect, then delivers what
    /// waits for it; or, after the expire timeout, drops it and says `EXPIRE`.
    fn wait_for(&self, dst: &str) {
        let Some(contact) = self.contacts.get(dst) else { return };
        let task = Wait {
            hub: self.app.hub.clone(),
            sender: self.id,
            outbox: self.outbox.clone(),
            mailbox: contact.mailbox.clone(),
            arrivals: contact.arrivals.clone(),
            waiting: contact.waiting.clone(),
            target: contact.target,
            expire: peerjs::expire(dst, &self.name).into(),
            deadline: Instant::now() + self.app.settings.peerjs_expire_timeout,
            stop: self.stop.clone(),
        };
        tokio::spawn(task.run());
    }

    /// Adds a contact, forgetting the oldest idle one past [`MAX_CONTACTS`].
    fn remember(&mut self, name: Arc<str>, contact: Contact) {
        if self.contacts.len() >= MAX_CONTACTS {
            let idle = self.contacts.iter().position(|(_, c)| lock(&c.waiting).is_none());
            if let Some((_, old)) = idle.and_then(|index| self.contacts.shift_remove_index(index)) {
                self.app.hub.unfollow(&old.mailbox);
            }
        }
        if let Some(old) = self.contacts.insert(name, contact) {
            self.app.hub.unfollow(&old.mailbox);
        }
    }
}

/// A wait for one id, on behalf of one sender.
struct Wait {
    hub: Arc<Hub>,
    sender: PeerId,
    outbox: Arc<Outbox>,
    mailbox: Arc<str>,
    arrivals: Arc<Notify>,
    waiting: Arc<Mutex<Option<Waiting>>>,
    target: PeerId,
    expire: Utf8Bytes,
    deadline: Instant,
    stop: CancellationToken,
}

impl Wait {
    async fn run(self) {
        loop {
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            // Registered before looking, so an arrival in between is not missed.
            arrival.as_mut().enable();
            if self.deliver() {
                return;
            }
            tokio::select! {
                () = arrival => {}
                () = tokio::time::sleep_until(self.deadline) => {
                    *lock(&self.waiting) = None;
                    let _ = self.outbox.push(Message::Text(self.expire.clone()));
                    return;
                }
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Delivers what waits, in order, if the target is there; `true` once
    /// nothing waits any more.
    fn deliver(&self) -> bool {
        let mut waiting = lock(&self.waiting);
        let Some(queue) = waiting.as_mut() else { return true };
        while let Some(frame) = queue.frames.front() {
            match self.hub.relay_in(self.sender, &self.mailbox, self.target, frame.clone()) {
                Err(RelayError::UnknownTarget) => return false,
                // Delivered, or undeliverable for good (the target is not reading): next.
                _ => {
                    queue.frames.pop_front();
                }
            }
        }
        *waiting = None;
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// PeerJS types as the metrics' message types.
fn inbound_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Offer => "offer",
        Kind::Answer => "answer",
        Kind::Candidate => "candidate",
        Kind::Leave | Kind::Expire => "signal",
        Kind::Heartbeat => "ping",
    }
}

fn outbound_label(kind: Kind) -> &'static str {
    inbound_label(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PeerJS peer idles like a signaling peer: keep its connection's
    /// future within the same 1 KiB.
    #[test]
    fn an_idle_peerjs_connection_s_future_fits_in_1_kib() {
        let size = crate::connection::idle_future_size::<Peer>();
        assert!(size <= 1024, "the PeerJS connection's future is {size} bytes");
    }

    #[test]
    fn ids_map_to_the_same_peer_on_every_node_and_keys_keep_them_apart() {
        assert_eq!(peer_of("peerjs", "alice"), peer_of("peerjs", "alice"));
        assert_ne!(peer_of("peerjs", "alice"), peer_of("other", "alice"));
        assert_ne!(peer_of("peerjs", "alice"), peer_of("peerjs", "alice "));
        assert!(crate::hub::room::validate_name(&mailbox_room("peerjs", "alice"), usize::MAX).is_err());
    }
}
