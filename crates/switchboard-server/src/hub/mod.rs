//! The hub: which peers are connected, which rooms exist, who is in them.
//!
//! Every operation is synchronous and short: it takes one room's lock, changes
//! membership or looks up a target, pushes finished frames into outboxes, and
//! returns. No lock is held across an `.await`, and no two room locks are ever
//! held at once, so the hub cannot deadlock.
//!
//! Ordering: a room's lock is held while its events are pushed, so every member
//! sees a room's events in one order, and a newcomer's `joined` is queued before
//! any later `peer-joined` of that room.
//!
//! # One node or many
//!
//! On its own, the hub is the whole truth: [`Hub::join`] checks capacity, admits,
//! and tells the room. When rooms are shared over a broker (see
//! [`crate::cluster`]), Redis holds the truth and the hub on each node keeps the
//! local part of it plus a mirror of the members on other nodes, for routing.
//! Then a join is decided by the broker and recorded here with [`Hub::admit`];
//! leaving only removes the local member ([`Hub::leave`]); and every
//! `peer-joined`/`peer-left` a local member sees comes from the room's event
//! stream through [`Hub::apply`], in the one order Redis gave it.

pub mod room;

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use dashmap::DashMap;
use serde_json::value::RawValue;
use switchboard_protocol::server::encode::{self, PeerRef};
use switchboard_protocol::ErrorCode;
use tokio::sync::broadcast;

use crate::cluster::wire::{record_prefix, RoomMessage};
use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::telemetry::metrics::Metrics;
use room::{Location, Member, Recent, Room};

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The peer is already a member.
    #[error("already in room")]
    AlreadyJoined,
    /// The room is at capacity.
    #[error("room is full (capacity {capacity})")]
    RoomFull {
        /// The capacity in force.
        capacity: u32,
    },
}

/// Why a relay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No connected peer has that id.
    #[error("unknown target")]
    UnknownTarget,
    /// The target is connected but in none of the sender's rooms.
    #[error("no shared room")]
    NoSharedRoom,
    /// The target's send queue is full.
    #[error("delivery failed")]
    DeliveryFailed,
}

/// Where a relay went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Into a local peer's outbox.
    Delivered,
    /// The target is on this other node: the caller forwards it there.
    Node(PeerId),
}

/// Everything the hub needs to know about a peer entering a room.
pub struct Joiner<'a> {
    /// The peer.
    pub id: PeerId,
    /// Where its frames go.
    pub outbox: &'a Arc<Outbox>,
    /// Its authenticated user, if any.
    pub user: Option<Arc<str>>,
    /// The `meta` it joins with.
    pub meta: Option<Box<RawValue>>,
    /// The capacity it asks for, used if the join creates the room.
    pub capacity: Option<u32>,
}

/// A member as the broker reports it, in join order.
pub struct Listed {
    /// The peer.
    pub id: PeerId,
    /// The node it is connected to.
    pub node: PeerId,
    /// Its authenticated user.
    pub user: Option<Arc<str>>,
    /// Its `meta`.
    pub meta: Option<Box<RawValue>>,
}

/// A room's name and this node's members in it, each with its record for Redis.
pub type LocalRoom = (Arc<str>, Vec<(PeerId, String)>);

/// The hub of one node.
pub struct Hub {
    peers: DashMap<PeerId, Arc<Outbox>>,
    rooms: DashMap<Arc<str>, Room>,
    max_peers_per_room: u32,
    metrics: Arc<Metrics>,
    /// This node's id when rooms are shared over a broker; `None` on its own.
    node: Option<PeerId>,
}

impl Hub {
    /// An empty hub; `node` is this node's id when rooms are shared over a broker.
    pub fn new(max_peers_per_room: u32, metrics: Arc<Metrics>, node: Option<PeerId>) -> Hub {
        Hub { peers: DashMap::new(), rooms: DashMap::new(), max_peers_per_room, metrics, node }
    }

    /// Registers a connected peer: relays to it find its outbox, and relays can
    /// tell "unknown" from "not shared".
    pub fn connect(&self, id: PeerId, outbox: Arc<Outbox>) {
        self.peers.insert(id, outbox);
        self.metrics.peers.increment(1.0);
    }

    /// Removes a peer from its rooms and from the hub.
    pub fn disconnect(&self, id: PeerId, rooms: &[Arc<str>]) {
        for room in rooms {
            self.leave(id, room);
        }
        if self.peers.remove(&id).is_some() {
            self.metrics.peers.decrement(1.0);
        }
    }

    /// Adds a peer to `room` (one node): queues `joined` for the newcomer and
    /// `peer-joined` for everyone already there.
    pub fn join(&self, joiner: Joiner, room_name: &Arc<str>, rid: Option<&RawValue>) -> Result<(), JoinError> {
        let Joiner { id, outbox, user, meta, capacity } = joiner;
        let mut room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(capacity));
        if room.members.contains_key(&id) {
            return Err(JoinError::AlreadyJoined);
        }
        let limit = room.capacity.unwrap_or(u32::MAX).min(self.max_peers_per_room);
        if room.members.len() >= limit as usize {
            return Err(JoinError::RoomFull { capacity: limit });
        }
        // A join that creates a room on an observed (member-less) entry sets its capacity.
        if room.members.is_empty() {
            room.capacity = capacity;
            self.metrics.rooms.increment(1.0);
        }
        let shown_capacity = room.capacity.map(|c| c.min(self.max_peers_per_room));

        let joined = encode::joined(room_name, shown_capacity, room.peer_refs(), rid);
        // The newcomer's own queue: an overflow here closes it, nothing to undo.
        let _ = outbox.push(Message::Text(joined.into()));
        self.metrics.messages_out("joined", 1);

        let event: Utf8Bytes = encode::peer_joined(id.as_str(), room_name, user.as_deref(), meta.as_deref()).into();
        self.fan_out(&room, None, &event, "peer-joined", None);
        room.notify_observers(&event);
        room.members.insert(id, Member::local(outbox.clone(), user, meta, 0));
        Ok(())
    }

    /// Records a join the broker has admitted as the room's event `seq`: the
    /// room's members on every node replace this node's mirror, the newcomer is
    /// queued its `joined`, and it is sent the room's events numbered after `seq`.
    pub fn admit(
        &self,
        joiner: Joiner,
        room_name: &Arc<str>,
        capacity: Option<u32>,
        seq: u64,
        members: Vec<Listed>,
        rid: Option<&RawValue>,
    ) {
        let Joiner { id, outbox, user, meta, .. } = joiner;
        let mut room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(capacity));
        room.capacity = capacity;
        let others: Vec<PeerRef> = members
            .iter()
            .filter(|m| m.id != id)
            .map(|m| PeerRef { id: m.id.as_str(), user: m.user.as_deref(), meta: m.meta.as_deref() })
            .collect();
        let joined = encode::joined(room_name, capacity, others, rid);
        let _ = outbox.push(Message::Text(joined.into()));
        self.metrics.messages_out("joined", 1);

        if !room.members.values().any(Member::is_local) {
            self.metrics.rooms.increment(1.0);
        }
        self.replace_mirror(&mut room, members);
        // Events newer than the snapshot that arrived while Redis decided: they
        // changed the room after the snapshot, and they are news to the newcomer.
        let recent = std::mem::take(&mut room.recent);
        for event in &recent {
            if event.seq <= seq {
                continue;
            }
            if event.left {
                if room.members.get(&event.peer).is_some_and(|m| !m.is_local()) {
                    room.members.shift_remove(&event.peer);
                }
            } else if let Some(member) = &event.joined {
                if !room.members.contains_key(&event.peer) {
                    room.members.insert(event.peer, member.clone());
                }
            }
            if event.peer != id {
                let _ = outbox.push(Message::Text(event.frame.clone()));
            }
        }
        room.pending_joins = room.pending_joins.saturating_sub(1);
        if room.pending_joins > 0 {
            room.recent = recent;
        }
        room.members.insert(id, Member::local(outbox.clone(), user, meta, seq));
    }

    /// Notes that a local peer's join to `room` is being decided by the broker,
    /// so that the room's events meanwhile are kept for [`Hub::admit`]. Pair
    /// with `admit`, or with [`Hub::abandon`] if the join fails.
    pub fn prepare(&self, room_name: &Arc<str>) {
        let mut room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(None));
        room.pending_joins += 1;
    }

    /// A prepared join did not happen.
    pub fn abandon(&self, room_name: &str) {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else { return };
            room.pending_joins = room.pending_joins.saturating_sub(1);
            if room.pending_joins == 0 {
                room.recent.clear();
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
    }

    /// Removes `id` from `room`. On one node the others are told here; with a
    /// broker they are told by the room's event stream. Returns whether it was a member.
    pub fn leave(&self, id: PeerId, room_name: &str) -> bool {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else {
                return false;
            };
            match room.members.get(&id) {
                Some(member) if member.is_local() => {}
                _ => return false,
            }
            room.members.shift_remove(&id);
            if self.node.is_none() {
                let event: Utf8Bytes = encode::peer_left(id.as_str(), room_name).into();
                self.fan_out(&room, None, &event, "peer-left", None);
                room.notify_observers(&event);
            }
            if !room.members.values().any(Member::is_local) {
                self.metrics.rooms.decrement(1.0);
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
        true
    }

    /// Applies one message of a room's event stream (with a broker): updates the
    /// mirror and tells the local members.
    pub fn apply(&self, room_name: &str, message: RoomMessage) {
        let Some(mut room) = self.rooms.get_mut(room_name) else {
            // Nobody here is in the room or watches it any more.
            return;
        };
        match message {
            RoomMessage::Joined { seq, peer, record, restored } => {
                if restored && room.members.contains_key(&peer) {
                    // Written back after Redis lost it: this node never forgot it.
                    return;
                }
                let user = record.user.as_deref();
                let event: Utf8Bytes = encode::peer_joined(peer.as_str(), room_name, user, record.meta).into();
                let node = PeerId::parse(record.node).filter(|node| Some(*node) != self.node);
                let remote = node.map(|node| Member {
                    location: Location::Remote(node),
                    meta: record.meta.map(RawValue::to_owned),
                    user: user.map(Arc::from),
                    since: 0,
                });
                if room.pending_joins > 0 {
                    let joined = remote.clone();
                    room.recent.push(Recent { seq, peer, joined, left: false, frame: event.clone() });
                }
                if let (Some(member), false) = (remote, room.members.contains_key(&peer)) {
                    room.members.insert(peer, member);
                }
                self.fan_out(&room, Some(peer), &event, "peer-joined", Some(seq));
                room.notify_observers(&event);
            }
            RoomMessage::Left { seq, peer } => {
                if room.members.get(&peer).is_some_and(|m| !m.is_local()) {
                    room.members.shift_remove(&peer);
                }
                let event: Utf8Bytes = encode::peer_left(peer.as_str(), room_name).into();
                if room.pending_joins > 0 {
                    room.recent.push(Recent { seq, peer, joined: None, left: true, frame: event.clone() });
                }
                self.fan_out(&room, Some(peer), &event, "peer-left", Some(seq));
                room.notify_observers(&event);
            }
            RoomMessage::Broadcast { sender, frame, .. } => {
                self.fan_out(&room, Some(sender), &Utf8Bytes::from(frame), "broadcast", None);
            }
        }
    }

    /// After the event stream may have missed messages (Redis was unreachable):
    /// adds the members the broker lists (as of event `seq`) that this node did
    /// not know, telling local members, and from now on sends them every event
    /// after `seq` (Redis may have restarted its count). Returns the members on
    /// other nodes that the broker no longer lists: they may have left, or their
    /// node may not have written them back yet; [`Hub::forget`] settles it later.
    pub fn resync(&self, room_name: &str, seq: u64, members: Vec<Listed>) -> Vec<PeerId> {
        let Some(mut room) = self.rooms.get_mut(room_name) else { return Vec::new() };
        let listed: std::collections::HashSet<PeerId> = members.iter().map(|m| m.id).collect();
        let missing =
            room.members.iter().filter(|(id, m)| !m.is_local() && !listed.contains(id)).map(|(id, _)| *id).collect();
        for member in members {
            if Some(member.node) == self.node || room.members.contains_key(&member.id) {
                continue;
            }
            let event: Utf8Bytes =
                encode::peer_joined(member.id.as_str(), room_name, member.user.as_deref(), member.meta.as_deref())
                    .into();
            self.fan_out(&room, None, &event, "peer-joined", None);
            room.notify_observers(&event);
            let remote =
                Member { location: Location::Remote(member.node), meta: member.meta, user: member.user, since: 0 };
            room.members.insert(member.id, remote);
        }
        for member in room.members.values_mut() {
            member.since = seq;
        }
        missing
    }

    /// Removes members on other nodes that are gone for good, telling local members.
    pub fn forget(&self, room_name: &str, gone: &[PeerId]) {
        let Some(mut room) = self.rooms.get_mut(room_name) else { return };
        for id in gone {
            if room.members.get(id).is_some_and(|m| !m.is_local()) {
                room.members.shift_remove(id);
                let event: Utf8Bytes = encode::peer_left(id.as_str(), room_name).into();
                self.fan_out(&room, None, &event, "peer-left", None);
                room.notify_observers(&event);
            }
        }
    }

    /// Replaces the members on other nodes with `members` (local ones are this
    /// node's own business), silently: for a room's first snapshot on this node.
    fn replace_mirror(&self, room: &mut Room, members: Vec<Listed>) {
        let listed: std::collections::HashSet<PeerId> = members.iter().map(|m| m.id).collect();
        room.members.retain(|id, m| m.is_local() || listed.contains(id));
        for listed in members {
            if Some(listed.node) == self.node || room.members.contains_key(&listed.id) {
                continue;
            }
            let member =
                Member { location: Location::Remote(listed.node), meta: listed.meta, user: listed.user, since: 0 };
            room.members.insert(listed.id, member);
        }
    }

    /// Routes a relay frame to `target` if it shares one of `rooms` with the sender.
    pub fn relay(&self, rooms: &[Arc<str>], target: PeerId, frame: Utf8Bytes) -> Result<Route, RelayError> {
        for room_name in rooms {
            let Some(room) = self.rooms.get(room_name) else {
                continue;
            };
            match room.members.get(&target).map(|m| &m.location) {
                Some(Location::Local(outbox)) => {
                    // Counted by type by the caller, which knows it.
                    outbox.push(Message::Text(frame)).map_err(|_| RelayError::DeliveryFailed)?;
                    return Ok(Route::Delivered);
                }
                Some(Location::Remote(node)) => return Ok(Route::Node(*node)),
                None => {}
            }
        }
        if self.peers.contains_key(&target) {
            Err(RelayError::NoSharedRoom)
        } else {
            Err(RelayError::UnknownTarget)
        }
    }

    /// Delivers a relay another node routed here to its local target.
    pub fn deliver(&self, target: PeerId, frame: &str) -> Result<(), RelayError> {
        let outbox = self.peers.get(&target).ok_or(RelayError::UnknownTarget)?;
        outbox.push(Message::Text(frame.into())).map_err(|_| RelayError::DeliveryFailed)
    }

    /// Queues an error for a local peer, outside any request of its own (a relay
    /// that failed on another node, say).
    pub fn tell_error(&self, peer: PeerId, code: ErrorCode, message: &str, rid: Option<&RawValue>) {
        if let Some(outbox) = self.peers.get(&peer) {
            self.metrics.error(code);
            self.metrics.messages_out("error", 1);
            let _ = outbox.push(Message::Text(encode::error(code, message, rid).into()));
        }
    }

    /// Delivers a broadcast frame to every local member of `room` except `from`.
    /// Returns how many peers it was queued for, and whether the room has members
    /// on other nodes that the caller must reach through the broker.
    pub fn broadcast(&self, from: PeerId, room_name: &str, frame: Utf8Bytes) -> (usize, bool) {
        let Some(room) = self.rooms.get(room_name) else {
            return (0, false);
        };
        let delivered = self.fan_out(&room, Some(from), &frame, "broadcast", None);
        (delivered, room.members.values().any(|m| !m.is_local()))
    }

    /// This node's peers in each of its rooms, with their records, for
    /// re-registering them with the broker.
    pub fn local_members(&self) -> Vec<LocalRoom> {
        let Some(node) = self.node else { return Vec::new() };
        self.rooms
            .iter()
            .map(|room| {
                let members = room
                    .members
                    .iter()
                    .filter(|(_, m)| m.is_local())
                    .map(|(id, m)| (*id, record_prefix(node, m.user.as_deref(), m.meta.as_deref())))
                    .collect();
                (room.key().clone(), members)
            })
            .collect()
    }

    /// Whether anyone on this node is in the room or watches it.
    pub fn is_used_here(&self, room_name: &str) -> bool {
        self.rooms.get(room_name).is_some_and(|room| !room.is_unused())
    }

    /// Starts watching a room's membership: the current state as a `room-state`
    /// event, and a receiver of every later `peer-joined` / `peer-left`. With a
    /// broker, `members` is the room as the broker lists it, for a room nobody
    /// on this node is in yet. Call [`Hub::release_observer`] after dropping the receiver.
    pub fn observe(
        &self,
        room_name: &str,
        members: Option<Vec<Listed>>,
    ) -> (Utf8Bytes, broadcast::Receiver<Utf8Bytes>) {
        let mut room = self.rooms.entry(Arc::from(room_name)).or_insert_with(|| Room::new(None));
        if let Some(members) = members {
            if !room.members.values().any(Member::is_local) {
                self.replace_mirror(&mut room, members);
            }
        }
        // Snapshot and subscription under one lock: no event falls between them.
        (room_state(room_name, &room), room.subscribe())
    }

    /// The current `room-state` of a room (empty if it does not exist).
    pub fn room_state(&self, room_name: &str) -> Utf8Bytes {
        match self.rooms.get(room_name) {
            Some(room) => room_state(room_name, &room),
            None => encode::room_state(room_name, Vec::new()).into(),
        }
    }

    /// Forgets a room's observer channel once its last receiver is gone, and the
    /// room itself if it has no members either.
    pub fn release_observer(&self, room_name: &str) {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else {
                return;
            };
            if room.observers.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
                room.observers = None;
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
    }

    /// Number of rooms in the registry (with members or observers), for tests.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Queues `frame` for every local member but `except` that is to hear event
    /// `seq` (see [`Member::listening`]); counts it as `kind` going out. Returns
    /// how many took it.
    fn fan_out(&self, room: &Room, except: Option<PeerId>, frame: &Utf8Bytes, kind: &str, seq: Option<u64>) -> usize {
        let mut delivered = 0;
        for (id, member) in &room.members {
            if Some(*id) == except {
                continue;
            }
            if let Some(outbox) = member.listening(seq) {
                if outbox.push(Message::Text(frame.clone())).is_ok() {
                    delivered += 1;
                }
            }
        }
        self.metrics.messages_out(kind, delivered as u64);
        delivered
    }
}

fn room_state(room_name: &str, room: &Room) -> Utf8Bytes {
    encode::room_state(room_name, room.peer_refs()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::QueueLimits;
    use switchboard_protocol::ServerMessage;

    fn hub() -> Hub {
        Hub::new(1000, Arc::new(Metrics::install()), None)
    }

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(QueueLimits { messages: 100, bytes: 1 << 20 }))
    }

    fn joiner(id: PeerId, outbox: &Arc<Outbox>, capacity: Option<u32>) -> Joiner<'_> {
        Joiner { id, outbox, user: None, meta: None, capacity }
    }

    fn drain(outbox: &Outbox) -> Vec<ServerMessage> {
        outbox.take().unwrap().into_iter().map(|m| ServerMessage::decode(m.to_text().unwrap()).unwrap()).collect()
    }

    #[test]
    fn join_leave_and_cleanup() {
        let hub = hub();
        let room: Arc<str> = "r".into();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (oa, ob) = (outbox(), outbox());
        hub.connect(a, oa.clone());
        hub.connect(b, ob.clone());
        hub.join(joiner(a, &oa, Some(2)), &room, None).unwrap();
        hub.join(joiner(b, &ob, None), &room, None).unwrap();
        assert_eq!(hub.join(joiner(b, &ob, None), &room, None), Err(JoinError::AlreadyJoined));
        let c = PeerId::random();
        assert_eq!(hub.join(joiner(c, &outbox(), None), &room, None), Err(JoinError::RoomFull { capacity: 2 }));

        assert!(
            matches!(&drain(&oa)[..], [ServerMessage::Joined { .. }, ServerMessage::PeerJoined { id, .. }] if id == b.as_str())
        );
        match &drain(&ob)[..] {
            [ServerMessage::Joined { peers, capacity: Some(2), .. }] => assert_eq!(peers[0].id, a.as_str()),
            other => panic!("{other:?}"),
        }
        hub.disconnect(b, std::slice::from_ref(&room));
        assert!(matches!(&drain(&oa)[..], [ServerMessage::PeerLeft { id, .. }] if id == b.as_str()));
        assert!(hub.leave(a, &room));
        assert_eq!(hub.room_count(), 0, "an empty room is dropped");
    }

    #[test]
    fn relay_distinguishes_unknown_from_unshared() {
        let hub = hub();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (r1, r2): (Arc<str>, Arc<str>) = ("one".into(), "two".into());
        for (id, room) in [(a, &r1), (b, &r1), (c, &r2)] {
            let outbox = outbox();
            hub.connect(id, outbox.clone());
            hub.join(joiner(id, &outbox, None), room, None).unwrap();
        }
        assert_eq!(hub.relay(std::slice::from_ref(&r1), b, "{}".into()), Ok(Route::Delivered));
        assert_eq!(hub.relay(std::slice::from_ref(&r1), c, "{}".into()), Err(RelayError::NoSharedRoom));
        assert_eq!(hub.relay(std::slice::from_ref(&r1), PeerId::random(), "{}".into()), Err(RelayError::UnknownTarget));
    }

    fn record(node: PeerId, order: u64) -> String {
        format!("{},\"o\":{order}}}", record_prefix(node, None, None))
    }

    fn joined_event(seq: u64, peer: PeerId, record: &str) -> String {
        format!(r#"{{"k":"j","s":{seq},"p":"{peer}","d":{record}}}"#)
    }

    #[test]
    fn with_a_broker_a_newcomer_hears_only_events_after_its_join_and_those_that_raced_it() {
        let (here, there) = (PeerId::random(), PeerId::random());
        let hub = Hub::new(1000, Arc::new(Metrics::install()), Some(here));
        let room: Arc<str> = "r".into();
        let (old, late, newcomer) = (PeerId::random(), PeerId::random(), PeerId::random());
        let outbox = outbox();
        hub.connect(newcomer, outbox.clone());
        hub.prepare(&room);
        // While Redis decides, the stream brings an event newer than the snapshot (seq 6)...
        let racing = record(there, 6);
        let event = joined_event(6, late, &racing);
        hub.apply(&room, crate::cluster::wire::parse_room(event.as_bytes()).unwrap());
        // ...and the join is admitted at seq 5, with a snapshot that predates `late`.
        let listed = vec![Listed { id: old, node: there, user: None, meta: None }];
        hub.admit(joiner(newcomer, &outbox, None), &room, None, 5, listed, None);
        // An old event (seq 4) arriving late is not news to the newcomer.
        let stale = joined_event(4, old, &record(there, 4));
        hub.apply(&room, crate::cluster::wire::parse_room(stale.as_bytes()).unwrap());
        match &drain(&outbox)[..] {
            [ServerMessage::Joined { peers, .. }, ServerMessage::PeerJoined { id, .. }] => {
                assert_eq!(peers.len(), 1);
                assert_eq!(peers[0].id, old.as_str());
                assert_eq!(id, late.as_str(), "the event that raced the join is replayed");
            }
            other => panic!("{other:?}"),
        }
        // Both remote peers are routable through their node.
        let rooms = std::slice::from_ref(&room);
        assert_eq!(hub.relay(rooms, late, "{}".into()), Ok(Route::Node(there)));
        assert_eq!(hub.relay(rooms, old, "{}".into()), Ok(Route::Node(there)));
    }

    #[test]
    fn with_a_broker_a_restored_peer_is_not_announced_twice_and_departures_wait_for_confirmation() {
        let (here, there) = (PeerId::random(), PeerId::random());
        let hub = Hub::new(1000, Arc::new(Metrics::install()), Some(here));
        let room: Arc<str> = "r".into();
        let (me, kept, gone) = (PeerId::random(), PeerId::random(), PeerId::random());
        let outbox = outbox();
        hub.connect(me, outbox.clone());
        hub.prepare(&room);
        let listed = |id| Listed { id, node: there, user: None, meta: None };
        hub.admit(joiner(me, &outbox, None), &room, None, 3, vec![listed(kept), listed(gone)], None);
        drain(&outbox);
        // Redis came back empty: the resync finds neither; nothing is said yet.
        let missing = hub.resync(&room, 0, Vec::new());
        assert_eq!(missing.len(), 2);
        assert!(outbox.take().unwrap().is_empty());
        // `kept`'s node writes it back: a restored event, not news.
        let restored = format!(r#"{{"k":"r","s":1,"p":"{kept}","d":{}}}"#, record(there, 1));
        hub.apply(&room, crate::cluster::wire::parse_room(restored.as_bytes()).unwrap());
        assert!(outbox.take().unwrap().is_empty());
        // A TTL later, only `gone` is still missing: it left.
        hub.forget(&room, &[gone]);
        assert!(matches!(&drain(&outbox)[..], [ServerMessage::PeerLeft { id, .. }] if id == gone.as_str()));
    }

    #[test]
    fn observers_see_a_consistent_snapshot_then_events() {
        let hub = hub();
        let room: Arc<str> = "watched".into();
        let (snapshot, mut events) = hub.observe(&room, None);
        assert!(snapshot.as_str().contains("\"peers\":[]"));
        let a = PeerId::random();
        hub.join(joiner(a, &outbox(), None), &room, None).unwrap();
        hub.leave(a, &room);
        assert!(events.try_recv().unwrap().as_str().contains("peer-joined"));
        assert!(events.try_recv().unwrap().as_str().contains("peer-left"));
        assert_eq!(hub.room_count(), 1, "kept while observed");
        drop(events);
        hub.release_observer(&room);
        assert_eq!(hub.room_count(), 0);
    }
}
