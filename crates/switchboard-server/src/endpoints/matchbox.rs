//! `/matchbox/{room}[?next=N]`: the protocol of `matchbox_server` 0.14, so
//! unmodified `matchbox_socket` clients connect (docs/compat.md, matchbox).
//!
//! A thin translation onto the hub: the connection joins its room when it
//! connects (before the loop reads anything), the hub's [`Flavor::Matchbox`]
//! rooms send `NewPeer` / `PeerLeft` themselves (here and across nodes), and a
//! client's `Signal` is re-addressed and relayed by [`Hub::relay`], only
//! within the room.
//!
//! Rooms live in a namespace of their own: a native room name can never hold a
//! control character, and every matchbox room name starts with one
//! (`\u{1}matchbox\u{1}{next}\u{1}{room}`), so the two never meet, and rooms that
//! differ in `next` never meet either.
//!
//! `?next=N` (N ≥ 2) groups arrivals into sets of N, cluster-wide: group `k` is
//! its own room of capacity N, joined with `seal`, so once it has been full it
//! admits nobody (a leave is told to the rest of the group; the place is not
//! given to a newcomer). An arrival joins the lowest group at or above this
//! node's hint that admits it; a full group raises the hint, so arrivals do not
//! probe groups known to be sealed (one broker round trip each with Redis).
//!
//! [`Hub::relay`]: crate::hub::Hub::relay

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use dashmap::DashMap;
use serde::Deserialize;
use switchboard_protocol::compat::matchbox::{decode, PeerEvent, PeerRequest};
use tracing::{debug, info};

use super::admitted::{refuse, Admitted};
use super::signaling::HARD_LIMIT_FACTOR;
use crate::admission::Refusal;
use crate::app::App;
use crate::broker::shown;
use crate::connection::{Connection, Departure, Handler, Pending};
use crate::hub::activity::LeftReason;
use crate::hub::room::Flavor;
use crate::hub::{JoinError, Joiner, RelayError};
use crate::peer_id::PeerId;
use crate::rate_limit::Limit;
use crate::telemetry::metrics::{Dropped, Endpoint};
use crate::websocket::{Socket, WebSocketUpgrade};

/// The prefix of every matchbox room name: native names cannot contain `\u{1}`.
const NAMESPACE: &str = "\u{1}matchbox\u{1}";

/// `?next=N`; anything but a number counts as no `next`, as in the original.
#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where a connection goes, decided before the upgrade.
enum Placement {
    /// One room that takes everyone (no `next`, or `next=0`), up to its capacity.
    Room { name: Arc<str>, capacity: Option<u32> },
    /// `next=1`: a group of one. The peer meets nobody, as with the original.
    Alone,
    /// `next=N`, N ≥ 2: the first group at or above the hint that admits it.
    Groups { family: Arc<str>, size: u32 },
}

/// The room name of a room without `next` (`next` = `None`) or with `next=0`.
fn room_name(next: Option<usize>, room: &str) -> String {
    match next {
        Some(next) => format!("{NAMESPACE}{next}\u{1}{room}"),
        None => format!("{NAMESPACE}\u{1}{room}"),
    }
}

/// The name shared by the groups of `room?next=size`.
fn family_name(size: u32, room: &str) -> String {
    format!("{size}\u{1}{room}")
}

/// The room name of group `k` of a family.
fn group_name(family: &str, k: u64) -> Arc<str> {
    // `family` is "N\u{1}room": the group index goes after N, before the room.
    let (size, room) = family.split_once('\u{1}').unwrap_or((family, ""));
    format!("{NAMESPACE}{size}#{k}\u{1}{room}").into()
}

/// Accepts the upgrade once admission has passed and the room is settled.
pub async fn upgrade(
    upgrade: WebSocketUpgrade,
    admitted: Admitted,
    room: Option<Path<String>>,
    uri: Uri,
    State(app): State<Arc<App>>,
    Extension(hints): Extension<Arc<Hints>>,
) -> Response {
    // No way to send a token in a message: it comes on the URL or not at all.
    let identity = match admitted.require_identity() {
        Ok(identity) => identity,
        Err(refusal) => return refuse(&app, refusal),
    };
    let room = room.map(|Path(room)| room).unwrap_or_default();
    let max_len = app.settings.max_room_name_len;
    if room.len() > max_len || room.chars().any(char::is_control) {
        info!(ip = %admitted.ip, len = room.len(), "refused matchbox connection: bad room name");
        let reason = format!("room name must be at most {max_len} bytes, without control characters");
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    if !identity.may_join(&room) {
        info!(ip = %admitted.ip, "refused matchbox connection: the token does not allow the room");
        return refuse(&app, Refusal::Forbidden);
    }
    let next = Query::<NextQuery>::try_from_uri(&uri)
        .ok()
        .and_then(|Query(query)| query.next)
        .and_then(|next| next.parse::<usize>().ok());
    let max_peers = app.settings.max_peers_per_room;
    let placement = match next {
        None | Some(0) => {
            Placement::Room { name: room_name(next, &room).into(), capacity: identity.room_capacity(None) }
        }
        Some(1) => Placement::Alone,
        Some(size) => {
            let size = match u32::try_from(size) {
                Ok(size) if size <= max_peers => size,
                _ => {
                    let reason = format!("next must be at most {max_peers} (--max-peers-per-room)");
                    return (StatusCode::BAD_REQUEST, reason).into_response();
                }
            };
            if identity.room_capacity(Some(size)) != Some(size) {
                info!(ip = %admitted.ip, size, "refused matchbox connection: next is over the token's capacity");
                return refuse(&app, Refusal::Forbidden);
            }
            Placement::Groups { family: family_name(size, &room).into(), size }
        }
    };
    let limit = hard_limit(&app);
    upgrade.on_upgrade(limit, move |socket| {
        crate::connection::serve(app.connections.clone(), Box::pin(set_up(socket, app, hints, admitted, placement)))
    })
}

fn hard_limit(app: &App) -> usize {
    app.settings.max_message_size.saturating_mul(HARD_LIMIT_FACTOR)
}

/// Gives the peer its id and puts it in its room, before anything it sends is
/// read; `None` (the socket closed with a reason) when the room cannot take it.
async fn set_up(
    socket: Socket,
    app: Arc<App>,
    hints: Arc<Hints>,
    admitted: Admitted,
    placement: Placement,
) -> Option<Connection<MatchboxPeer>> {
    let id = PeerId::random_uuid();
    let outbox = app.outbox();
    app.hub.connect(id, outbox.clone());
    // Queued first: whatever the room sends while the join is decided comes after it.
    let _ = outbox.push(Message::Text(PeerEvent::IdAssigned(&id.to_uuid()).encode().into()));
    let user = admitted.identity.as_ref().and_then(|identity| identity.user.clone());
    let queue = &outbox;
    let joiner = move |capacity, seal| Joiner {
        id,
        outbox: queue,
        shown: shown(user.clone(), None),
        capacity,
        seal,
        flavor: Flavor::Matchbox,
    };
    let (rooms, family) = match placement {
        Placement::Alone => (Vec::new(), None),
        Placement::Room { name, capacity } => match app.hub.join(joiner(capacity, false), &name, None).await {
            Ok(()) => (vec![name], None),
            Err(error) => return refuse_socket(socket, &app, id, error).await,
        },
        Placement::Groups { family, size } => {
            let family = Family::enter(&hints, &family);
            let mut k = family.lowest();
            loop {
                let group = group_name(family.name(), k);
                match app.hub.join(joiner(Some(size), true), &group, None).await {
                    Ok(()) => break (vec![group], Some(family)),
                    Err(JoinError::RoomFull { .. }) => {
                        family.sealed(k);
                        k += 1;
                    }
                    Err(error) => return refuse_socket(socket, &app, id, error).await,
                }
            }
        }
    };
    // Counted once it is sure to be sent (a refused peer's queue is dropped).
    app.metrics.messages_out("welcome", 1);
    debug!(peer = %id, ip = %admitted.ip, room = ?rooms.first(), "matchbox peer connected");
    let handler = MatchboxPeer { app: app.clone(), id, rooms, _family: family };
    let slot = admitted.into_slot();
    Some(Connection::plain(Endpoint::Matchbox, socket, outbox, handler, hard_limit(&app), slot))
}

/// Closes a connection whose room would not take it: matchbox has no error
/// message, so the close frame says why.
async fn refuse_socket(
    mut socket: Socket,
    app: &App,
    id: PeerId,
    error: JoinError,
) -> Option<Connection<MatchboxPeer>> {
    app.hub.disconnect(id, Vec::new(), LeftReason::Disconnected);
    info!(peer = %id, %error, "matchbox peer refused: its room would not take it");
    let (code, reason) = match error {
        JoinError::RoomFull { .. } => (close_code::POLICY, "room is full"),
        JoinError::AlreadyJoined => (close_code::ERROR, "already in the room"),
        JoinError::Unavailable(_) => (close_code::AGAIN, "unavailable: try again shortly"),
    };
    let close = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = tokio::time::timeout(app.settings.write_timeout, socket.send(Message::Close(Some(close)))).await;
    None
}

/// For each `?next=N` room family with a peer of this node in it: the lowest
/// group that may still admit anyone. One per server (its router holds it, as
/// the PeerJS dialect holds its registry); an entry goes with the node's last
/// peer in the family.
#[derive(Default)]
pub struct Hints {
    families: DashMap<Arc<str>, Hint>,
}

struct Hint {
    /// Every group below this one has been seen full (so sealed).
    lowest: u64,
    /// Peers of this node in the family, or on their way in.
    peers: usize,
}

/// A peer's share in its family's hint; dropping it lets the hint go with the
/// family's last peer on this node.
struct Family {
    hints: Arc<Hints>,
    name: Arc<str>,
}

impl Family {
    fn enter(hints: &Arc<Hints>, family: &str) -> Family {
        let name: Arc<str> = family.into();
        hints.families.entry(name.clone()).or_insert(Hint { lowest: 0, peers: 0 }).peers += 1;
        Family { hints: hints.clone(), name }
    }

    /// The family's name.
    fn name(&self) -> &str {
        &self.name
    }

    fn lowest(&self) -> u64 {
        self.hints.families.get(&self.name).map_or(0, |hint| hint.lowest)
    }

    /// Group `k` was full: no arrival here needs to try it again.
    fn sealed(&self, k: u64) {
        if let Some(mut hint) = self.hints.families.get_mut(&self.name) {
            hint.lowest = hint.lowest.max(k + 1);
        }
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        self.hints.families.remove_if_mut(&self.name, |_, hint| {
            hint.peers -= 1;
            hint.peers == 0
        });
    }
}

/// One matchbox peer.
struct MatchboxPeer {
    app: Arc<App>,
    id: PeerId,
    /// Its room (none for `next=1`).
    rooms: Vec<Arc<str>>,
    /// Its share in the family's hint, for `?next=N`.
    _family: Option<Family>,
}

impl MatchboxPeer {
    fn dropped(&self, reason: Dropped) {
        self.app.metrics.dropped(Endpoint::Matchbox, reason);
    }

    fn signal(&self, receiver: &str, data: &serde_json::value::RawValue) {
        let Some(target) = PeerId::from_uuid(receiver) else {
            debug!(peer = %self.id, "matchbox Signal to a receiver that is not a UUID dropped");
            return self.dropped(Dropped::UnknownTarget);
        };
        let frame = PeerEvent::Signal { sender: &self.id.to_uuid(), data }.encode();
        match self.app.hub.relay(self.id, &self.rooms, target, frame.into()) {
            Ok(()) => self.app.metrics.messages_out("signal", 1),
            Err(error) => {
                debug!(peer = %self.id, %target, %error, "matchbox Signal dropped");
                self.dropped(match error {
                    RelayError::DeliveryFailed => Dropped::Limit,
                    RelayError::UnknownTarget | RelayError::NoSharedRoom | RelayError::Unavailable(_) => {
                        Dropped::UnknownTarget
                    }
                });
            }
        }
    }
}

impl Handler for MatchboxPeer {
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>> {
        if text.len() > self.app.settings.max_message_size {
            self.app.metrics.message_in(None);
            self.dropped(Dropped::Limit);
            return None;
        }
        match decode(text.as_str()) {
            Some(PeerRequest::Signal { receiver, data }) => {
                self.app.metrics.message_in(Some("signal"));
                self.signal(receiver, data);
            }
            // Sent to keep proxies from closing the socket: nothing to do.
            Some(PeerRequest::KeepAlive) => self.app.metrics.message_in(Some("ping")),
            None => {
                self.app.metrics.message_in(None);
                self.dropped(Dropped::Malformed);
            }
        }
        None
    }

    fn on_binary(&mut self, _data: Bytes) {
        self.app.metrics.message_in(None);
        self.dropped(Dropped::Binary);
    }

    fn on_rate_limited(&mut self, _limit: Limit, _text: Option<&str>) {
        self.dropped(Dropped::Limit);
    }

    fn on_close(&mut self, _departure: Departure) {
        self.app.hub.disconnect(self.id, std::mem::take(&mut self.rooms), LeftReason::Disconnected);
        debug!(peer = %self.id, "matchbox peer disconnected");
    }
}

#[cfg(test)]
mod tests {
    /// A matchbox peer idles like a signaling peer: keep its connection's
    /// future within the same 1 KiB.
    #[test]
    fn an_idle_matchbox_connection_s_future_fits_in_1_kib() {
        let size = crate::connection::idle_future_size::<super::MatchboxPeer>();
        assert!(size <= 1024, "the matchbox connection's future is {size} bytes");
    }

    use super::*;

    #[test]
    fn room_names_cannot_meet_native_names_or_each_other() {
        let names = [
            room_name(None, "r"),
            room_name(Some(0), "r"),
            group_name(&family_name(2, "r"), 0).to_string(),
            group_name(&family_name(2, "r"), 1).to_string(),
            group_name(&family_name(3, "r"), 0).to_string(),
            room_name(None, "s"),
            room_name(None, ""),
            // A room name that looks like a group suffix is still its own room.
            group_name(&family_name(2, "r#1"), 0).to_string(),
        ];
        for (i, a) in names.iter().enumerate() {
            assert!(a.chars().any(char::is_control), "{a:?}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(group_name(&family_name(2, "a\u{1}b"), 7).as_ref(), "\u{1}matchbox\u{1}2#7\u{1}a\u{1}b");
    }

    #[test]
    fn a_family_hint_rises_past_sealed_groups_and_goes_with_its_last_peer() {
        let node = Arc::new(Hints::default());
        let a = Family::enter(&node, "2\u{1}hint-test");
        assert_eq!(a.name(), "2\u{1}hint-test");
        assert_eq!(a.lowest(), 0);
        a.sealed(0);
        a.sealed(3);
        a.sealed(1);
        let b = Family::enter(&node, "2\u{1}hint-test");
        assert_eq!(b.lowest(), 4);
        // Another node's hint is its own.
        assert_eq!(Family::enter(&Arc::new(Hints::default()), "2\u{1}hint-test").lowest(), 0);
        drop(a);
        assert_eq!(b.lowest(), 4);
        drop(b);
        assert_eq!(Family::enter(&node, "2\u{1}hint-test").lowest(), 0);
    }
}
