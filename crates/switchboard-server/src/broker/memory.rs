//! The default broker: one node, everything in memory.
//!
//! It keeps, per room, the numbered list of members the broker contract asks
//! for (capacity, join order, the seq of the latest event) and publishes each
//! event straight to the hub, under the room's lock, so events reach the hub
//! in the order they are numbered. A member's profile is shared with the hub's
//! copy of it, so the list costs a peer id and a pointer per member.

use std::sync::{Arc, OnceLock, Weak};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures_util::future::{self, BoxFuture, FutureExt};
use indexmap::IndexMap;

use super::{Broker, BrokerError, Listed, RoomEvent, RoomEvents, Shown, Verdict};
use crate::peer_id::{NodeId, PeerId};

/// A room as the broker keeps it.
struct Seats {
    /// The number of the room's latest event.
    seq: u64,
    /// Set by the join that created the room.
    capacity: Option<u32>,
    /// Set by the join that created the room: close once full.
    seal: bool,
    /// It was full once and is sealed: nobody else gets in.
    sealed: bool,
    /// In join order.
    members: IndexMap<PeerId, Shown>,
}

/// Rooms of one node on its own.
pub struct MemoryBroker {
    node: NodeId,
    rooms: DashMap<Arc<str>, Seats>,
    max_peers_per_room: u32,
    /// The hub, once started. Weak: the hub owns the broker.
    events: OnceLock<Weak<dyn RoomEvents>>,
}

impl MemoryBroker {
    /// An empty broker whose rooms hold at most `max_peers_per_room`.
    pub fn new(max_peers_per_room: u32) -> MemoryBroker {
        MemoryBroker { node: NodeId::random(), rooms: DashMap::new(), max_peers_per_room, events: OnceLock::new() }
    }

    fn publish(&self, room: &str, event: RoomEvent<'_>) {
        if let Some(events) = self.events.get().and_then(Weak::upgrade) {
            events.apply(room, event);
        }
    }

    fn listed(&self, seats: &Seats) -> Vec<Listed> {
        seats.members.iter().map(|(id, shown)| Listed { id: *id, node: self.node, shown: shown.clone() }).collect()
    }

    /// The decision, synchronous: it never waits on anything.
    fn decide(&self, room: &Arc<str>, member: &Listed, capacity: Option<u32>, seal: bool) -> Verdict {
        let max = self.max_peers_per_room;
        let mut seats = self.rooms.entry(room.clone()).or_insert_with(|| Seats {
            seq: 0,
            capacity,
            seal,
            sealed: false,
            members: IndexMap::new(),
        });
        if seats.members.contains_key(&member.id) {
            return Verdict::AlreadyJoined;
        }
        let limit = seats.capacity.unwrap_or(u32::MAX).min(max);
        if seats.sealed || seats.members.len() >= limit as usize {
            return Verdict::Full(limit);
        }
        seats.seq += 1;
        let seq = seats.seq;
        seats.members.insert(member.id, member.shown.clone());
        seats.sealed = seats.seal && seats.members.len() >= limit as usize;
        let members = self.listed(&seats);
        // Under the room's lock: the hub sees this room's events in seq order.
        self.publish(room, RoomEvent::Joined { seq, member: member.clone(), restored: false });
        Verdict::Admitted { capacity: seats.capacity.map(|c| c.min(max)), seq, members }
    }

    fn remove(&self, room: &Arc<str>, peer: PeerId) {
        if let Entry::Occupied(mut seats) = self.rooms.entry(room.clone()) {
            if seats.get_mut().members.shift_remove(&peer).is_none() {
                return;
            }
            seats.get_mut().seq += 1;
            let seq = seats.get().seq;
            self.publish(room, RoomEvent::Left { seq, peer });
            if seats.get().members.is_empty() {
                seats.remove();
            }
        }
    }
}

impl Broker for MemoryBroker {
    fn node(&self) -> NodeId {
        self.node
    }

    fn start(self: Arc<Self>, events: Arc<dyn RoomEvents>) {
        let _ = self.events.set(Arc::downgrade(&events));
    }

    fn acquire<'a>(&'a self, _room: &'a Arc<str>) -> BoxFuture<'a, Result<(), BrokerError>> {
        // Every event is handed to the hub directly: there is nothing to subscribe to.
        future::ready(Ok(())).boxed()
    }

    fn release(&self, _room: Arc<str>) {}

    fn join<'a>(
        &'a self,
        room: &'a Arc<str>,
        member: &'a Listed,
        capacity: Option<u32>,
        seal: bool,
    ) -> BoxFuture<'a, Result<Verdict, BrokerError>> {
        future::ready(Ok(self.decide(room, member, capacity, seal))).boxed()
    }

    fn leave<'a>(&'a self, room: &'a Arc<str>, peer: PeerId) -> BoxFuture<'a, ()> {
        self.remove(room, peer);
        future::ready(()).boxed()
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        let members = self.rooms.get(room).map(|seats| self.listed(&seats)).unwrap_or_default();
        future::ready(Ok(members)).boxed()
    }

    fn forward(&self, _node: NodeId, _target: PeerId, _sender: PeerId, _frame: &str) -> Result<(), BrokerError> {
        // The hub forwards only to members on other nodes, and this broker has none.
        Err(BrokerError::Protocol)
    }

    fn broadcast(&self, _room: &str, _sender: PeerId, _frame: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    fn state(&self) -> Option<&'static str> {
        None
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        future::ready(()).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the broker hands back.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl RoomEvents for Recorder {
        fn apply(&self, room: &str, event: RoomEvent<'_>) {
            let line = match event {
                RoomEvent::Joined { seq, member, .. } => format!("{room} {seq} joined {}", member.id),
                RoomEvent::Left { seq, peer } => format!("{room} {seq} left {peer}"),
                RoomEvent::Broadcast { .. } => format!("{room} broadcast"),
            };
            self.0.lock().unwrap().push(line);
        }
        fn deliver(&self, _: PeerId, _: &str) -> Result<(), super::super::Undelivered> {
            Ok(())
        }
        fn tell_error(
            &self,
            _: PeerId,
            _: switchboard_protocol::ErrorCode,
            _: &str,
            _: Option<&serde_json::value::RawValue>,
        ) {
        }
        fn local_members(&self) -> Vec<(Arc<str>, Vec<Listed>)> {
            Vec::new()
        }
        fn resync(&self, _: &str, _: u64, _: Vec<Listed>) -> Vec<PeerId> {
            Vec::new()
        }
        fn forget(&self, _: &str, _: &[PeerId]) {}
    }

    fn member(broker: &MemoryBroker) -> Listed {
        Listed { id: PeerId::random(), node: broker.node(), shown: None }
    }

    fn started() -> (Arc<MemoryBroker>, Arc<Recorder>) {
        let broker = Arc::new(MemoryBroker::new(3));
        let recorder = Arc::new(Recorder::default());
        broker.clone().start(recorder.clone());
        (broker, recorder)
    }

    #[tokio::test]
    async fn joins_are_numbered_capped_and_published_in_order() {
        let (broker, recorder) = started();
        let room: Arc<str> = "r".into();
        let (a, b, c) = (member(&broker), member(&broker), member(&broker));
        let Verdict::Admitted { capacity, seq, members } = broker.join(&room, &a, Some(2), false).await.unwrap() else {
            panic!("a is admitted")
        };
        assert_eq!((capacity, seq, members.len()), (Some(2), 1, 1));
        let Verdict::Admitted { seq, members, .. } = broker.join(&room, &b, None, false).await.unwrap() else {
            panic!("b is admitted")
        };
        assert_eq!(seq, 2);
        assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a.id, b.id], "oldest first");
        assert!(matches!(broker.join(&room, &c, None, false).await.unwrap(), Verdict::Full(2)));
        assert!(matches!(broker.join(&room, &a, None, false).await.unwrap(), Verdict::AlreadyJoined));
        broker.leave(&room, a.id).await;
        broker.leave(&room, a.id).await; // not a member any more: nothing happens
        let lines = recorder.0.lock().unwrap().clone();
        assert_eq!(
            lines,
            vec![format!("r 1 joined {}", a.id), format!("r 2 joined {}", b.id), format!("r 3 left {}", a.id)]
        );
    }

    #[tokio::test]
    async fn a_sealed_room_admits_nobody_once_it_has_been_full() {
        let (broker, _) = started();
        let room: Arc<str> = "group".into();
        let (a, b) = (member(&broker), member(&broker));
        broker.join(&room, &a, Some(2), true).await.unwrap();
        broker.join(&room, &b, None, true).await.unwrap();
        broker.leave(&room, b.id).await;
        assert!(matches!(broker.join(&room, &member(&broker), None, true).await.unwrap(), Verdict::Full(2)));
        // Empty, it is gone, seal and all: a new group may form under the name.
        broker.leave(&room, a.id).await;
        let again = broker.join(&room, &member(&broker), Some(2), true).await.unwrap();
        assert!(matches!(again, Verdict::Admitted { .. }));
    }

    #[tokio::test]
    async fn an_empty_room_is_forgotten_with_its_capacity() {
        let (broker, _) = started();
        let room: Arc<str> = "r".into();
        let a = member(&broker);
        broker.join(&room, &a, Some(1), false).await.unwrap();
        broker.leave(&room, a.id).await;
        assert!(broker.members(&room).await.unwrap().is_empty());
        // A new room of the same name takes the server's maximum (3), not the old capacity.
        for _ in 0..3 {
            assert!(matches!(
                broker.join(&room, &member(&broker), None, false).await.unwrap(),
                Verdict::Admitted { .. }
            ));
        }
        assert!(matches!(broker.join(&room, &member(&broker), None, false).await.unwrap(), Verdict::Full(3)));
    }
}
