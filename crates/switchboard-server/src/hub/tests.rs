//! The hub over both kinds of broker: the in-memory one, and a scripted one
//! that plays what Redis can do to a node (events racing a join, members on
//! other nodes, a resync after an outage).

use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::future::{self, BoxFuture, FutureExt};
use switchboard_protocol::ServerMessage;

use super::*;
use crate::broker::memory::MemoryBroker;
use crate::broker::{RoomEvent, RoomEvents};
use crate::hub::activity::LeftReason;
use crate::outbox::QueueLimits;

fn memory_hub(max: u32) -> Arc<Hub> {
    Hub::start(Arc::new(MemoryBroker::new(max)), Arc::new(Metrics::install()))
}

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(QueueLimits { messages: 100, bytes: 1 << 20 }))
}

fn joiner(id: PeerId, outbox: &Arc<Outbox>, capacity: Option<u32>) -> Joiner<'_> {
    Joiner { id, outbox, shown: None, capacity, seal: false, flavor: room::Flavor::Signaling }
}

fn drain(outbox: &Outbox) -> Vec<ServerMessage> {
    outbox.take().unwrap().into_iter().map(|m| ServerMessage::decode(m.to_text().unwrap()).unwrap()).collect()
}

#[tokio::test]
async fn join_leave_and_cleanup() {
    let hub = memory_hub(1000);
    let room: Arc<str> = "r".into();
    let (a, b) = (PeerId::random(), PeerId::random());
    let (oa, ob) = (outbox(), outbox());
    hub.connect(a, oa.clone());
    hub.connect(b, ob.clone());
    hub.join(joiner(a, &oa, Some(2)), &room, None).await.unwrap();
    hub.join(joiner(b, &ob, None), &room, None).await.unwrap();
    assert!(matches!(hub.join(joiner(b, &ob, None), &room, None).await, Err(JoinError::AlreadyJoined)));
    let c = PeerId::random();
    let full = hub.join(joiner(c, &outbox(), None), &room, None).await;
    assert!(matches!(full, Err(JoinError::RoomFull { capacity: 2 })), "{full:?}");

    assert!(
        matches!(&drain(&oa)[..], [ServerMessage::Joined { .. }, ServerMessage::PeerJoined { id, .. }] if id == b.as_str())
    );
    match &drain(&ob)[..] {
        [ServerMessage::Joined { peers, capacity: Some(2), .. }] => assert_eq!(peers[0].id, a.as_str()),
        other => panic!("{other:?}"),
    }
    hub.disconnect(b, vec![room.clone()], LeftReason::Disconnected);
    assert!(matches!(&drain(&oa)[..], [ServerMessage::PeerLeft { id, .. }] if id == b.as_str()));
    assert!(hub.leave(a, &room).await);
    assert_eq!(hub.room_count(), 0, "an empty room is dropped");
    assert!(!hub.leave(a, &room).await, "not a member any more");
}

#[tokio::test]
async fn relay_distinguishes_unknown_from_unshared() {
    let hub = memory_hub(1000);
    let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    let (r1, r2): (Arc<str>, Arc<str>) = ("one".into(), "two".into());
    let mut boxes = Vec::new();
    for (id, room) in [(a, &r1), (b, &r1), (c, &r2)] {
        let outbox = outbox();
        hub.connect(id, outbox.clone());
        hub.join(joiner(id, &outbox, None), room, None).await.unwrap();
        boxes.push(outbox);
    }
    let rooms = std::slice::from_ref(&r1);
    assert!(hub.relay(a, rooms, b, "{}".into()).is_ok());
    assert!(matches!(hub.relay(a, rooms, c, "{}".into()), Err(RelayError::NoSharedRoom)));
    assert!(matches!(hub.relay(a, rooms, PeerId::random(), "{}".into()), Err(RelayError::UnknownTarget)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_joins_on_one_node_admit_exactly_capacity_and_agree_on_the_room() {
    let hub = memory_hub(1000);
    let room: Arc<str> = "race".into();
    let peers: Vec<(PeerId, Arc<Outbox>)> = (0..24).map(|_| (PeerId::random(), outbox())).collect();
    for (id, outbox) in &peers {
        hub.connect(*id, outbox.clone());
    }
    let tasks: Vec<_> = peers
        .iter()
        .cloned()
        .map(|(id, outbox)| {
            let (hub, room) = (hub.clone(), room.clone());
            tokio::spawn(async move { hub.join(joiner(id, &outbox, Some(5)), &room, None).await.is_ok().then_some(id) })
        })
        .collect();
    let mut members = Vec::new();
    for task in tasks {
        members.extend(task.await.unwrap());
    }
    assert_eq!(members.len(), 5);
    // Every member's view (its `joined` list plus later `peer-joined`) is the
    // room's four others, each exactly once.
    for (id, outbox) in peers.iter().filter(|(id, _)| members.contains(id)) {
        let mut seen: Vec<String> = Vec::new();
        for message in drain(outbox) {
            match message {
                ServerMessage::Joined { peers, .. } => seen.extend(peers.into_iter().map(|p| p.id)),
                ServerMessage::PeerJoined { id, .. } => seen.push(id),
                ServerMessage::Error { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        seen.sort();
        let mut expected: Vec<String> = members.iter().filter(|m| *m != id).map(|m| m.as_str().to_owned()).collect();
        expected.sort();
        assert_eq!(seen, expected, "the view of {id}");
    }
}

/// What a scripted broker does to the hub while it "decides" a join.
type Script = Box<dyn FnOnce(&dyn RoomEvents) + Send>;

/// A broker whose answers a test writes: each join runs `script` (which may
/// apply events to the hub, as Redis would deliver them meanwhile) and then
/// returns the next verdict.
struct Scripted {
    node: NodeId,
    events: OnceLock<Weak<dyn RoomEvents>>,
    verdicts: Mutex<Vec<Verdict>>,
    script: Mutex<Option<Script>>,
    leave_script: Mutex<Option<Script>>,
    /// What a leave answers.
    vacated: Mutex<Vacated>,
}

impl Scripted {
    fn hub(verdicts: Vec<Verdict>) -> (Arc<Hub>, Arc<Scripted>) {
        let broker = Arc::new(Scripted {
            node: NodeId::random(),
            events: OnceLock::new(),
            verdicts: Mutex::new(verdicts),
            script: Mutex::new(None),
            leave_script: Mutex::new(None),
            vacated: Mutex::new(Vacated::default()),
        });
        (Hub::start(broker.clone(), Arc::new(Metrics::install())), broker)
    }

    fn hub_events(&self) -> Arc<dyn RoomEvents> {
        self.events.get().and_then(Weak::upgrade).unwrap()
    }

    fn during_next_join(&self, script: impl FnOnce(&dyn RoomEvents) + Send + 'static) {
        *self.script.lock().unwrap() = Some(Box::new(script));
    }

    fn during_next_leave(&self, script: impl FnOnce(&dyn RoomEvents) + Send + 'static) {
        *self.leave_script.lock().unwrap() = Some(Box::new(script));
    }
}

impl Broker for Scripted {
    fn node(&self) -> NodeId {
        self.node
    }
    fn start(self: Arc<Self>, events: Arc<dyn RoomEvents>) {
        let _ = self.events.set(Arc::downgrade(&events));
    }
    fn acquire<'a>(&'a self, _: &'a Arc<str>) -> BoxFuture<'a, Result<(), BrokerError>> {
        future::ready(Ok(())).boxed()
    }
    fn release(&self, _: Arc<str>) {}
    fn join<'a>(
        &'a self,
        _: &'a Arc<str>,
        _: &'a Listed,
        _: Option<u32>,
        _: bool,
    ) -> BoxFuture<'a, Result<Verdict, BrokerError>> {
        if let Some(script) = self.script.lock().unwrap().take() {
            script(&*self.hub_events());
        }
        let verdict = self.verdicts.lock().unwrap().remove(0);
        future::ready(Ok(verdict)).boxed()
    }
    fn leave<'a>(&'a self, _: &'a Arc<str>, _: PeerId) -> BoxFuture<'a, Vacated> {
        if let Some(script) = self.leave_script.lock().unwrap().take() {
            script(&*self.hub_events());
        }
        future::ready(*self.vacated.lock().unwrap()).boxed()
    }
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<crate::broker::RoomSummary>, BrokerError>> {
        future::ready(Ok(Vec::new())).boxed()
    }
    fn room<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<crate::broker::RoomDetail>, BrokerError>> {
        future::ready(Ok(None)).boxed()
    }
    fn close<'a>(&'a self, _: &'a Arc<str>) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        future::ready(Ok(Vec::new())).boxed()
    }
    fn command<'a>(&'a self, _: PeerId, _: &'a Command) -> BoxFuture<'a, Result<bool, BrokerError>> {
        future::ready(Ok(false)).boxed()
    }
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>> {
        future::ready(Ok(Vec::new())).boxed()
    }
    fn members<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        future::ready(Ok(Vec::new())).boxed()
    }
    fn forward(&self, _: NodeId, _: PeerId, _: PeerId, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    fn broadcast(&self, _: &str, _: PeerId, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    fn state(&self) -> Option<&'static str> {
        Some("up")
    }
    fn stop(&self) -> BoxFuture<'_, ()> {
        future::ready(()).boxed()
    }
}

fn remote(id: PeerId, node: NodeId) -> Listed {
    Listed { id, node, shown: None, joined: 0 }
}

#[tokio::test]
async fn a_newcomer_hears_only_events_after_its_join_and_those_that_raced_it() {
    let there = NodeId::random();
    let (old, late, newcomer) = (PeerId::random(), PeerId::random(), PeerId::random());
    // The join is admitted at seq 5, with a snapshot that predates `late`...
    let listed = vec![remote(old, there)];
    let (hub, broker) =
        Scripted::hub(vec![Verdict::Admitted { capacity: None, seq: 5, members: listed, created: false }]);
    // ...while the event stream brings an event newer than the snapshot (seq 6).
    broker.during_next_join(move |events| {
        events.apply("r", RoomEvent::Joined { seq: 6, member: remote(late, there), restored: false })
    });
    let room: Arc<str> = "r".into();
    let outbox = outbox();
    hub.connect(newcomer, outbox.clone());
    hub.join(joiner(newcomer, &outbox, None), &room, None).await.unwrap();
    // An old event (seq 4) arriving late is not news to the newcomer.
    broker.hub_events().apply("r", RoomEvent::Joined { seq: 4, member: remote(old, there), restored: false });
    match &drain(&outbox)[..] {
        [ServerMessage::Joined { peers, .. }, ServerMessage::PeerJoined { id, .. }] => {
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].id, old.as_str());
            assert_eq!(id, late.as_str(), "the event that raced the join is replayed");
        }
        other => panic!("{other:?}"),
    }
    // Both remote peers are routed through the broker, not refused.
    let rooms = std::slice::from_ref(&room);
    assert!(hub.relay(newcomer, rooms, late, "{}".into()).is_ok());
    assert!(hub.relay(newcomer, rooms, old, "{}".into()).is_ok());
}

/// Over Redis the event of a recorded leave arrives apart from the broker's
/// answer, maybe after it: the leaver stays a member until the event, so a
/// relay to it is delivered until the sender has been told `peer-left`.
#[tokio::test]
async fn a_recorded_leave_waits_for_its_event_before_relays_are_refused() {
    let (hub, broker) = Scripted::hub(Vec::new());
    let node = broker.node;
    let (sender, leaver) = (PeerId::random(), PeerId::random());
    let here = move |id| Listed { id, node, shown: None, joined: 0 };
    broker.verdicts.lock().unwrap().extend([
        Verdict::Admitted { capacity: None, seq: 1, members: vec![here(sender)], created: true },
        Verdict::Admitted { capacity: None, seq: 2, members: vec![here(sender), here(leaver)], created: false },
    ]);
    *broker.vacated.lock().unwrap() = Vacated { removed: true, emptied: false };
    let room: Arc<str> = "r".into();
    let (os, ol) = (outbox(), outbox());
    hub.connect(sender, os.clone());
    hub.connect(leaver, ol.clone());
    hub.join(joiner(sender, &os, None), &room, None).await.unwrap();
    hub.join(joiner(leaver, &ol, None), &room, None).await.unwrap();
    drain(&os);
    let leaving = tokio::spawn({
        let (hub, room) = (hub.clone(), room.clone());
        async move { hub.leave(leaver, &room).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let rooms = std::slice::from_ref(&room);
    let signal = r#"{"type":"signal","from":"s"}"#;
    assert!(hub.relay(sender, rooms, leaver, signal.into()).is_ok(), "a member until its event");
    broker.hub_events().apply("r", RoomEvent::Left { seq: 3, peer: leaver });
    assert!(leaving.await.unwrap());
    assert!(matches!(hub.relay(sender, rooms, leaver, signal.into()), Err(RelayError::NoSharedRoom)));
    assert!(matches!(&drain(&os)[..], [ServerMessage::PeerLeft { id, .. }] if id == leaver.as_str()));
}

/// A peer is a member until the broker has decided its leave: a relay to it
/// meanwhile is delivered, and one refused afterwards is refused after the
/// sender was told `peer-left` (the soak checks that order).
#[tokio::test]
async fn a_leaver_is_a_member_until_the_broker_decides_and_refusals_come_after_peer_left() {
    let (a, b) = (PeerId::random(), PeerId::random());
    let admitted = |seq| Verdict::Admitted { capacity: None, seq, members: Vec::new(), created: false };
    let (hub, broker) = Scripted::hub(vec![admitted(1), admitted(2)]);
    let room: Arc<str> = "r".into();
    let (oa, ob) = (outbox(), outbox());
    for (id, outbox) in [(a, &oa), (b, &ob)] {
        hub.connect(id, outbox.clone());
        hub.join(joiner(id, outbox, None), &room, None).await.unwrap();
    }
    drain(&oa);
    drain(&ob);
    let during = Arc::new(Mutex::new(None));
    let (seen, relaying) = (during.clone(), hub.clone());
    let relay_room = room.clone();
    broker.during_next_leave(move |events| {
        // While the broker decides: `b` is still there.
        *seen.lock().unwrap() = Some(relaying.relay(a, std::slice::from_ref(&relay_room), b, "{}".into()).is_ok());
        events.apply("r", RoomEvent::Left { seq: 3, peer: b });
    });
    assert!(hub.leave(b, &room).await);
    assert_eq!(*during.lock().unwrap(), Some(true), "a relay while the leave is decided reaches the leaver");
    assert_eq!(ob.take().unwrap().len(), 1, "and is queued for it");
    assert!(matches!(&drain(&oa)[..], [ServerMessage::PeerLeft { id, .. }] if id == b.as_str()));
    let rooms = std::slice::from_ref(&room);
    assert!(matches!(hub.relay(a, rooms, b, "{}".into()), Err(RelayError::NoSharedRoom)), "refused after peer-left");
}

/// A peer joining on this node is announced to the room by the broker's event,
/// which can come before the broker's answer admits it here: a member that
/// relays to it on hearing `peer-joined` is not refused (`no-shared-room`), and
/// the relay reaches the newcomer right after its `joined`.
#[tokio::test]
async fn a_relay_to_a_local_joiner_announced_before_its_admission_follows_its_joined() {
    let (member, newcomer) = (PeerId::random(), PeerId::random());
    let (hub, broker) = Scripted::hub(Vec::new());
    let node = broker.node;
    let here = move |id| Listed { id, node, shown: None, joined: 0 };
    broker.verdicts.lock().unwrap().extend([
        Verdict::Admitted { capacity: None, seq: 1, members: vec![here(member)], created: true },
        Verdict::Admitted { capacity: None, seq: 2, members: vec![here(member), here(newcomer)], created: false },
    ]);
    let room: Arc<str> = "r".into();
    let (om, on) = (outbox(), outbox());
    hub.connect(member, om.clone());
    hub.connect(newcomer, on.clone());
    hub.join(joiner(member, &om, None), &room, None).await.unwrap();
    drain(&om);
    let relayed = Arc::new(Mutex::new(None));
    let (seen, relaying, relay_room) = (relayed.clone(), hub.clone(), room.clone());
    broker.during_next_join(move |events| {
        events.apply("r", RoomEvent::Joined { seq: 2, member: here(newcomer), restored: false });
        let signal = r#"{"type":"offer","from":"m"}"#;
        *seen.lock().unwrap() =
            Some(relaying.relay(member, std::slice::from_ref(&relay_room), newcomer, signal.into()));
    });
    hub.join(joiner(newcomer, &on, None), &room, None).await.unwrap();
    let relayed = relayed.lock().unwrap().take().expect("relayed during the join");
    assert!(relayed.is_ok(), "not refused: {relayed:?}");
    assert!(matches!(&drain(&om)[..], [ServerMessage::PeerJoined { id, .. }] if id == newcomer.as_str()));
    let got = on.take().unwrap();
    let types: Vec<_> = got
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(m.to_text().unwrap()).unwrap()["type"].clone())
        .collect();
    assert_eq!(types, ["joined", "offer"], "the relay follows the newcomer's joined");
}

/// A room closed while a join to it was being decided: the join was numbered
/// before the close, so the newcomer is told `joined`, then `room-closed`, and
/// is not left behind as a member.
#[tokio::test]
async fn a_join_that_races_a_close_ends_out_of_the_room() {
    let there = NodeId::random();
    let (old, newcomer) = (PeerId::random(), PeerId::random());
    let listed = vec![remote(old, there)];
    let (hub, broker) =
        Scripted::hub(vec![Verdict::Admitted { capacity: None, seq: 5, members: listed, created: false }]);
    broker.during_next_join(move |events| events.apply("r", RoomEvent::Closed { seq: 6 }));
    let room: Arc<str> = "r".into();
    let outbox = outbox();
    hub.connect(newcomer, outbox.clone());
    hub.join(joiner(newcomer, &outbox, None), &room, None).await.unwrap();
    assert!(
        matches!(&drain(&outbox)[..], [ServerMessage::Joined { .. }, ServerMessage::RoomClosed { room }] if room == "r")
    );
    assert_eq!(outbox.take_notices().0, vec![room.clone()], "its connection is told to drop the room");
    assert_eq!(hub.member_count("r"), 0, "nobody is left: not the newcomer, not the mirror");
    assert!(hub.relay(newcomer, std::slice::from_ref(&room), old, "{}".into()).is_err());
}

/// A close removes everyone who joined before it, on every node, and nobody
/// who joined after.
#[tokio::test]
async fn a_close_removes_the_members_it_numbered() {
    let hub = memory_hub(1000);
    let room: Arc<str> = "r".into();
    let (a, b) = (PeerId::random(), PeerId::random());
    let (oa, ob) = (outbox(), outbox());
    hub.connect(a, oa.clone());
    hub.connect(b, ob.clone());
    hub.join(joiner(a, &oa, None), &room, None).await.unwrap();
    hub.join(joiner(b, &ob, None), &room, None).await.unwrap();
    drain(&oa);
    drain(&ob);
    assert!(hub.close_room(&room).await.unwrap());
    for outbox in [&oa, &ob] {
        assert!(matches!(&drain(outbox)[..], [ServerMessage::RoomClosed { .. }]), "no peer-left for each other");
        assert_eq!(outbox.take_notices().0.len(), 1);
    }
    assert_eq!(hub.room_count(), 0);
    assert!(!hub.close_room(&room).await.unwrap(), "nothing left to close");
    hub.join(joiner(a, &oa, None), &room, None).await.expect("a fresh room under the name");
}

#[tokio::test]
async fn a_restored_peer_is_not_announced_twice_and_departures_wait_for_confirmation() {
    let there = NodeId::random();
    let (me, kept, gone) = (PeerId::random(), PeerId::random(), PeerId::random());
    let members = vec![remote(kept, there), remote(gone, there)];
    let (hub, broker) = Scripted::hub(vec![Verdict::Admitted { capacity: None, seq: 3, members, created: false }]);
    let room: Arc<str> = "r".into();
    let outbox = outbox();
    hub.connect(me, outbox.clone());
    hub.join(joiner(me, &outbox, None), &room, None).await.unwrap();
    drain(&outbox);
    let events = broker.hub_events();
    // The broker came back empty: the resync finds neither; nothing is said yet.
    let missing = events.resync("r", 0, Vec::new());
    assert_eq!(missing.len(), 2);
    assert!(outbox.take().unwrap().is_empty());
    // `kept`'s node writes it back: a restored event, not news.
    events.apply("r", RoomEvent::Joined { seq: 1, member: remote(kept, there), restored: true });
    assert!(outbox.take().unwrap().is_empty());
    // A TTL later, only `gone` is still missing: it left.
    events.forget("r", &[gone]);
    assert!(matches!(&drain(&outbox)[..], [ServerMessage::PeerLeft { id, .. }] if id == gone.as_str()));
}

#[tokio::test]
async fn observers_see_a_consistent_snapshot_then_events() {
    let hub = memory_hub(1000);
    let room: Arc<str> = "watched".into();
    let (snapshot, mut events) = hub.observe(&room).await.unwrap();
    assert!(snapshot.as_str().contains("\"peers\":[]"));
    let a = PeerId::random();
    let outbox = outbox();
    hub.connect(a, outbox.clone());
    hub.join(joiner(a, &outbox, None), &room, None).await.unwrap();
    hub.leave(a, &room).await;
    assert!(events.try_recv().unwrap().as_str().contains("peer-joined"));
    assert!(events.try_recv().unwrap().as_str().contains("peer-left"));
    assert_eq!(hub.room_count(), 1, "kept while observed");
    drop(events);
    hub.release_observer(&room);
    assert_eq!(hub.room_count(), 0);
}
