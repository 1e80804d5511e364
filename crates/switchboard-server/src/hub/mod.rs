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

pub mod room;

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes};
use dashmap::DashMap;
use serde_json::value::RawValue;
use switchboard_protocol::server::encode;
use tokio::sync::broadcast;

use crate::outbox::Outbox;
use crate::peer_id::PeerId;
use crate::telemetry::metrics::Metrics;
use room::{Member, Room};

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

/// The in-memory hub for one node.
pub struct Hub {
    peers: DashMap<PeerId, ()>,
    rooms: DashMap<Arc<str>, Room>,
    max_peers_per_room: u32,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub.
    pub fn new(max_peers_per_room: u32, metrics: Arc<Metrics>) -> Hub {
        Hub { peers: DashMap::new(), rooms: DashMap::new(), max_peers_per_room, metrics }
    }

    /// Registers a connected peer, so relays to it can tell "unknown" from "not shared".
    pub fn connect(&self, id: PeerId) {
        self.peers.insert(id, ());
        self.metrics.peers.increment(1.0);
    }

    /// Removes a peer from its rooms (telling the others) and from the hub.
    pub fn disconnect(&self, id: PeerId, rooms: &[Arc<str>]) {
        for room in rooms {
            self.leave(id, room);
        }
        if self.peers.remove(&id).is_some() {
            self.metrics.peers.decrement(1.0);
        }
    }

    /// Adds a peer to `room`: queues `joined` for the newcomer and `peer-joined`
    /// for everyone already there.
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
        self.fan_out(&room, None, &event);
        self.metrics.messages_out("peer-joined", room.members.len() as u64);
        room.notify_observers(&event);
        room.members.insert(id, Member { outbox: outbox.clone(), meta, user });
        Ok(())
    }

    /// Removes `id` from `room` and tells the others. Returns whether it was a member.
    pub fn leave(&self, id: PeerId, room_name: &str) -> bool {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else {
                return false;
            };
            if room.members.shift_remove(&id).is_none() {
                return false;
            }
            let event: Utf8Bytes = encode::peer_left(id.as_str(), room_name).into();
            self.fan_out(&room, None, &event);
            self.metrics.messages_out("peer-left", room.members.len() as u64);
            room.notify_observers(&event);
            if room.members.is_empty() {
                self.metrics.rooms.decrement(1.0);
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
        true
    }

    /// Delivers a relay frame to `target` if it shares one of `rooms` with the sender.
    pub fn relay(&self, rooms: &[Arc<str>], target: PeerId, frame: Utf8Bytes) -> Result<(), RelayError> {
        for room_name in rooms {
            let Some(room) = self.rooms.get(room_name) else {
                continue;
            };
            if let Some(member) = room.members.get(&target) {
                member.outbox.push(Message::Text(frame)).map_err(|_| RelayError::DeliveryFailed)?;
                self.metrics.messages_out("relay", 1);
                return Ok(());
            }
        }
        if self.peers.contains_key(&target) {
            Err(RelayError::NoSharedRoom)
        } else {
            Err(RelayError::UnknownTarget)
        }
    }

    /// Delivers a broadcast frame to every member of `room` except `from`.
    /// Returns how many peers it was queued for.
    pub fn broadcast(&self, from: PeerId, room_name: &str, frame: Utf8Bytes) -> usize {
        let Some(room) = self.rooms.get(room_name) else {
            return 0;
        };
        let delivered = self.fan_out(&room, Some(from), &frame);
        self.metrics.messages_out("broadcast", delivered as u64);
        delivered
    }

    /// Starts watching a room's membership: the current state as a `room-state`
    /// event, and a receiver of every later `peer-joined` / `peer-left`.
    /// Call [`Hub::release_observer`] after dropping the receiver.
    pub fn observe(&self, room_name: &str) -> (Utf8Bytes, broadcast::Receiver<Utf8Bytes>) {
        let mut room = self.rooms.entry(Arc::from(room_name)).or_insert_with(|| Room::new(None));
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

    fn fan_out(&self, room: &Room, except: Option<PeerId>, frame: &Utf8Bytes) -> usize {
        let mut delivered = 0;
        for (id, member) in &room.members {
            if Some(*id) != except && member.outbox.push(Message::Text(frame.clone())).is_ok() {
                delivered += 1;
            }
        }
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
        Hub::new(1000, Arc::new(Metrics::install()))
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
        hub.connect(a);
        hub.connect(b);
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
            hub.connect(id);
            hub.join(joiner(id, &outbox(), None), room, None).unwrap();
        }
        assert_eq!(hub.relay(std::slice::from_ref(&r1), b, "{}".into()), Ok(()));
        assert_eq!(hub.relay(std::slice::from_ref(&r1), c, "{}".into()), Err(RelayError::NoSharedRoom));
        assert_eq!(hub.relay(std::slice::from_ref(&r1), PeerId::random(), "{}".into()), Err(RelayError::UnknownTarget));
    }

    #[test]
    fn observers_see_a_consistent_snapshot_then_events() {
        let hub = hub();
        let room: Arc<str> = "watched".into();
        let (snapshot, mut events) = hub.observe(&room);
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
