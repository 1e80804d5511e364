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

use super::{
    now_ms, Broker, BrokerError, Command, Listed, NodeInfo, RoomDetail, RoomEvent, RoomEvents, RoomSummary, Shown,
    Vacated, Verdict,
};
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
    /// When it was created (ms since the epoch).
    created: u64,
    /// In join order, with when each joined.
    members: IndexMap<PeerId, (Shown, u64)>,
}

impl Seats {
    fn summary(&self, name: &str, max: u32) -> RoomSummary {
        RoomSummary {
            name: name.to_owned(),
            members: self.members.len(),
            capacity: self.capacity.map(|c| c.min(max)),
            created: self.created,
        }
    }
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
        seats
            .members
            .iter()
            .map(|(id, (shown, joined))| Listed { id: *id, node: self.node, shown: shown.clone(), joined: *joined })
            .collect()
    }

    /// The decision, synchronous: it never waits on anything.
    fn decide(&self, room: &Arc<str>, member: &Listed, capacity: Option<u32>, seal: bool) -> Verdict {
        let max = self.max_peers_per_room;
        let mut seats = self.rooms.entry(room.clone()).or_insert_with(|| Seats {
            seq: 0,
            capacity,
            seal,
            sealed: false,
            created: now_ms(),
            members: IndexMap::new(),
        });
        if seats.members.contains_key(&member.id) {
            return Verdict::AlreadyJoined;
        }
        let limit = seats.capacity.unwrap_or(u32::MAX).min(max);
        if seats.sealed || seats.members.len() >= limit as usize {
            return Verdict::Full(limit);
        }
        let created = seats.members.is_empty();
        seats.seq += 1;
        let seq = seats.seq;
        seats.members.insert(member.id, (member.shown.clone(), member.joined));
        seats.sealed = seats.seal && seats.members.len() >= limit as usize;
        let members = self.listed(&seats);
        // Under the room's lock: the hub sees this room's events in seq order.
        self.publish(room, RoomEvent::Joined { seq, member: member.clone(), restored: false });
        Verdict::Admitted { capacity: seats.capacity.map(|c| c.min(max)), seq, members, created }
    }

    fn remove(&self, room: &Arc<str>, peer: PeerId) -> Vacated {
        let Entry::Occupied(mut seats) = self.rooms.entry(room.clone()) else { return Vacated::default() };
        if seats.get_mut().members.shift_remove(&peer).is_none() {
            return Vacated::default();
        }
        seats.get_mut().seq += 1;
        let seq = seats.get().seq;
        self.publish(room, RoomEvent::Left { seq, peer });
        let emptied = seats.get().members.is_empty();
        if emptied {
            seats.remove();
        }
        Vacated { removed: true, emptied }
    }

    fn close_now(&self, room: &Arc<str>) -> Vec<Listed> {
        let Entry::Occupied(mut seats) = self.rooms.entry(room.clone()) else { return Vec::new() };
        let members = self.listed(seats.get());
        seats.get_mut().seq += 1;
        let seq = seats.get().seq;
        self.publish(room, RoomEvent::Closed { seq });
        seats.remove();
        members
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

    fn leave<'a>(&'a self, room: &'a Arc<str>, peer: PeerId) -> BoxFuture<'a, Vacated> {
        future::ready(self.remove(room, peer)).boxed()
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        let members = self.rooms.get(room).map(|seats| self.listed(&seats)).unwrap_or_default();
        future::ready(Ok(members)).boxed()
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BrokerError>> {
        let max = self.max_peers_per_room;
        let rooms = self.rooms.iter().map(|seats| seats.summary(seats.key(), max)).collect();
        future::ready(Ok(rooms)).boxed()
    }

    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<RoomDetail>, BrokerError>> {
        let max = self.max_peers_per_room;
        let detail = self
            .rooms
            .get(room)
            .map(|seats| RoomDetail { summary: seats.summary(room, max), members: self.listed(&seats) });
        future::ready(Ok(detail)).boxed()
    }

    fn close<'a>(&'a self, room: &'a Arc<str>) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        future::ready(Ok(self.close_now(room))).boxed()
    }

    fn command<'a>(&'a self, _peer: PeerId, _command: &'a Command) -> BoxFuture<'a, Result<bool, BrokerError>> {
        // There is no other node to ask.
        future::ready(Ok(false)).boxed()
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>> {
        future::ready(Ok(Vec::new())).boxed()
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
                RoomEvent::Closed { seq } => format!("{room} {seq} closed"),
                RoomEvent::Broadcast { .. } => format!("{room} broadcast"),
                RoomEvent::Moved { peer, .. } => format!("{room} moved {peer}"),
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
        ) -> bool {
            false
        }
        fn local_members(&self) -> Vec<(Arc<str>, Vec<Listed>)> {
            Vec::new()
        }
        fn resync(&self, _: &str, _: u64, _: Vec<Listed>) -> Vec<PeerId> {
            Vec::new()
        }
        fn forget(&self, _: &str, _: &[PeerId]) {}
        fn reaped(&self, _: &str, _: Vec<Listed>, _: bool) {}
        fn expired(&self, _: &str, _: Listed, _: bool) {}
        fn command(&self, _: PeerId, _: &Command) -> bool {
            false
        }
        fn node_info(&self) -> NodeInfo {
            unimplemented!("not asked in these tests")
        }
    }

    fn member(broker: &MemoryBroker) -> Listed {
        Listed { id: PeerId::random(), node: broker.node(), shown: None, joined: now_ms() }
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
        let Verdict::Admitted { capacity, seq, members, created } =
            broker.join(&room, &a, Some(2), false).await.unwrap()
        else {
            panic!("a is admitted")
        };
        assert_eq!((capacity, seq, members.len(), created), (Some(2), 1, 1, true));
        let Verdict::Admitted { seq, members, created, .. } = broker.join(&room, &b, None, false).await.unwrap() else {
            panic!("b is admitted")
        };
        assert_eq!((seq, created), (2, false));
        assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a.id, b.id], "oldest first");
        assert!(matches!(broker.join(&room, &c, None, false).await.unwrap(), Verdict::Full(2)));
        assert!(matches!(broker.join(&room, &a, None, false).await.unwrap(), Verdict::AlreadyJoined));
        assert_eq!(broker.leave(&room, a.id).await, Vacated { removed: true, emptied: false });
        assert_eq!(broker.leave(&room, a.id).await, Vacated::default(), "not a member any more: nothing happens");
        let lines = recorder.0.lock().unwrap().clone();
        assert_eq!(
            lines,
            vec![format!("r 1 joined {}", a.id), format!("r 2 joined {}", b.id), format!("r 3 left {}", a.id)]
        );
        assert_eq!(broker.leave(&room, b.id).await, Vacated { removed: true, emptied: true });
    }

    #[tokio::test]
    async fn rooms_are_listed_and_closed_with_their_members() {
        let (broker, recorder) = started();
        let room: Arc<str> = "r".into();
        let (a, b) = (member(&broker), member(&broker));
        broker.join(&room, &a, Some(3), false).await.unwrap();
        broker.join(&room, &b, None, false).await.unwrap();
        let rooms = broker.rooms().await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].name.as_str(), rooms[0].members, rooms[0].capacity), ("r", 2, Some(3)));
        let detail = broker.room("r").await.unwrap().expect("the room is there");
        assert_eq!(detail.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a.id, b.id]);
        assert_eq!(detail.members[0].joined, a.joined);
        assert!(broker.room("other").await.unwrap().is_none());

        let removed = broker.close(&room).await.unwrap();
        assert_eq!(removed.len(), 2);
        assert!(broker.room("r").await.unwrap().is_none(), "gone");
        assert!(broker.close(&room).await.unwrap().is_empty(), "nothing left to close");
        assert_eq!(recorder.0.lock().unwrap().last().unwrap(), "r 3 closed");
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
