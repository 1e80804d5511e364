//! Holds: a claimed session hears a departure only after the relays the
//! departed peer sent it before leaving.
//!
//! A relay sent to a session's old node before its sender heard that the
//! session moved is passed on by that node: a second hop. The sender's
//! `leave` takes one hop, so the departed peer's `peer-left` could overtake
//! its own last relays. For a while after this node claims a session from a
//! node that may still be passing relays on for it (the node that parked it),
//! a departure in one of its rooms waits behind a fence sent to that node: the
//! node answers once it has passed on everything it heard before the fence,
//! and everything it passed on reaches this node's inbox before the answer.
//! The claim itself waits for such a fence too, after it has read the rooms
//! (see `RedisBroker::adopt`), so a departure it finds comes after the relays.
//!
//! Only the room's events wait (in order, behind the first held one); relays
//! and the other rooms flow on. A fence that is not answered lapses after the
//! broker's timeout, with whatever the silent node had not passed on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::peer_id::{NodeId, PeerId};

/// What a fence number is waiting for.
enum Waiter {
    /// A room's held events.
    Room(Arc<str>),
    /// A claim (see `RedisBroker::passed_on`).
    Call(oneshot::Sender<()>),
}

/// A room whose events wait.
struct Held {
    /// Fences not yet answered.
    waiting: HashSet<u64>,
    /// Room messages as they came from Redis, oldest first.
    events: Vec<Vec<u8>>,
}

/// A session claimed here from `from`, which may still be passing relays on.
struct Claimed {
    peer: PeerId,
    from: NodeId,
    until: Instant,
}

#[derive(Default)]
struct Inner {
    /// By room: the sessions claimed lately that are in it.
    claims: HashMap<Arc<str>, Vec<Claimed>>,
    held: HashMap<Arc<str>, Held>,
    waiters: HashMap<u64, Waiter>,
}

/// This node's holds.
#[derive(Default)]
pub struct Holds {
    /// Rooms with recent claims or held events: room messages look at the map only when some are.
    active: AtomicUsize,
    inner: Mutex<Inner>,
}

/// What [`Holds::arrived`] decided about a room message.
pub enum Arrival {
    /// Apply it now.
    Apply,
    /// Queued behind a held one.
    Queued,
    /// Held: send these fences (node, number), then wait.
    Fence(Vec<(NodeId, u64)>),
}

impl Holds {
    /// Notes a session claimed here from `from`, in `rooms`, for `window`.
    pub fn claimed(&self, peer: PeerId, from: NodeId, rooms: &[Arc<str>], window: Duration) {
        let until = Instant::now() + window;
        let mut inner = self.lock();
        for room in rooms {
            let claims = inner.claims.entry(room.clone()).or_default();
            claims.retain(|c| c.peer != peer);
            claims.push(Claimed { peer, from, until });
        }
        self.active.store(inner.claims.len() + inner.held.len(), Ordering::Release);
    }

    /// The node a recent claim of `peer` took it from, if any.
    pub fn claimed_from(&self, peer: PeerId) -> Option<NodeId> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = Instant::now();
        let inner = self.lock();
        inner.claims.values().flatten().find(|c| c.peer == peer && c.until > now).map(|c| c.from)
    }

    /// A room message: applied now, queued behind held ones, or held itself
    /// (a departure of someone other than a session claimed lately from a node
    /// that may still pass relays on). `numbers` gives fence numbers.
    pub fn arrived(
        &self,
        room: &str,
        departed: Option<PeerId>,
        payload: &[u8],
        numbers: impl FnMut() -> u64,
    ) -> Arrival {
        if self.active.load(Ordering::Acquire) == 0 {
            return Arrival::Apply;
        }
        let mut inner = self.lock();
        if let Some(held) = inner.held.get_mut(room) {
            held.events.push(payload.to_vec());
            return Arrival::Queued;
        }
        let Some(departed) = departed else { return Arrival::Apply };
        let now = Instant::now();
        let Some((key, claims)) = inner.claims.get_key_value(room) else { return Arrival::Apply };
        let key = key.clone();
        let mut nodes: Vec<NodeId> =
            claims.iter().filter(|c| c.until > now && c.peer != departed).map(|c| c.from).collect();
        nodes.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        nodes.dedup();
        if nodes.is_empty() {
            return Arrival::Apply;
        }
        let mut numbers = numbers;
        let fences: Vec<(NodeId, u64)> = nodes.into_iter().map(|node| (node, numbers())).collect();
        for (_, number) in &fences {
            inner.waiters.insert(*number, Waiter::Room(key.clone()));
        }
        inner
            .held
            .insert(key, Held { waiting: fences.iter().map(|(_, n)| *n).collect(), events: vec![payload.to_vec()] });
        self.active.store(inner.claims.len() + inner.held.len(), Ordering::Release);
        Arrival::Fence(fences)
    }

    /// Registers a claim's wait for fence `number`.
    pub fn wait(&self, number: u64) -> oneshot::Receiver<()> {
        let (done, waiting) = oneshot::channel();
        self.lock().waiters.insert(number, Waiter::Call(done));
        waiting
    }

    /// Fence `number` is passed (answered, or lapsed). Whether it was one of
    /// these; once a room's last fence is, `release` gets the room and its
    /// held messages in order, under the lock (no later message overtakes them).
    pub fn passed(&self, number: u64, release: impl FnOnce(&str, Vec<Vec<u8>>)) -> bool {
        let mut inner = self.lock();
        match inner.waiters.remove(&number) {
            None => false,
            Some(Waiter::Call(done)) => {
                let _ = done.send(());
                true
            }
            Some(Waiter::Room(room)) => {
                let last = inner.held.get_mut(&room).is_some_and(|held| {
                    held.waiting.remove(&number);
                    held.waiting.is_empty()
                });
                if last {
                    if let Some(held) = inner.held.remove(&room) {
                        release(&room, held.events);
                    }
                    self.active.store(inner.claims.len() + inner.held.len(), Ordering::Release);
                }
                true
            }
        }
    }

    /// Forgets claims older than their window.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.claims.retain(|_, claims| {
            claims.retain(|c| c.until > now);
            !claims.is_empty()
        });
        self.active.store(inner.claims.len() + inner.held.len(), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> u64 {
        let mut next = 0;
        move || {
            next += 1;
            next
        }
    }

    #[test]
    fn a_departure_in_a_room_with_a_recent_claim_waits_for_the_fence_and_later_events_queue_behind_it() {
        let holds = Holds::default();
        let (claimed, departed) = (PeerId::random(), PeerId::random());
        let from = NodeId::random();
        let room: Arc<str> = Arc::from("r");
        assert!(matches!(holds.arrived("r", Some(departed), b"x", counter()), Arrival::Apply), "no claim yet");
        holds.claimed(claimed, from, std::slice::from_ref(&room), Duration::from_secs(5));
        assert_eq!(holds.claimed_from(claimed), Some(from));
        assert!(matches!(holds.arrived("other room", Some(departed), b"x", counter()), Arrival::Apply));
        assert!(matches!(holds.arrived("r", None, b"joined", counter()), Arrival::Apply), "only departures wait");
        let Arrival::Fence(fences) = holds.arrived("r", Some(departed), b"left", counter()) else {
            panic!("a departure waits")
        };
        assert_eq!(fences, vec![(from, 1)]);
        assert!(matches!(holds.arrived("r", None, b"joined again", counter()), Arrival::Queued));
        assert!(!holds.passed(99, |_, _| panic!("not a fence of these")));
        let mut released = None;
        assert!(holds.passed(1, |room, events| released = Some((room.to_owned(), events))));
        let (room, events) = released.expect("released with its fence");
        assert_eq!(room, "r");
        assert_eq!(events, vec![b"left".to_vec(), b"joined again".to_vec()]);
        assert!(matches!(holds.arrived("r", None, b"after", counter()), Arrival::Apply));
    }

    #[test]
    fn the_claimed_peer_s_own_departure_and_expired_claims_do_not_wait() {
        let holds = Holds::default();
        let claimed = PeerId::random();
        let room: Arc<str> = Arc::from("r");
        holds.claimed(claimed, NodeId::random(), std::slice::from_ref(&room), Duration::ZERO);
        assert!(matches!(holds.arrived("r", Some(PeerId::random()), b"x", counter()), Arrival::Apply));
        holds.prune();
        assert_eq!(holds.claimed_from(claimed), None);
        holds.claimed(claimed, NodeId::random(), std::slice::from_ref(&room), Duration::from_secs(5));
        assert!(matches!(holds.arrived("r", Some(claimed), b"x", counter()), Arrival::Apply));
    }

    #[test]
    fn a_claim_s_wait_ends_with_its_fence() {
        let holds = Holds::default();
        let mut waiting = holds.wait(7);
        assert!(waiting.try_recv().is_err());
        assert!(holds.passed(7, |_, _| {}));
        assert!(waiting.try_recv().is_ok());
    }
}
