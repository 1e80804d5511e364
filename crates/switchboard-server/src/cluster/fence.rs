//! Fences: keeping one sender's relays in order while their target moves.
//!
//! When a session moves away from node F (parked, or taken over), this node
//! may have relays for it still on their way to F's inbox, and F passes those
//! on to where the session went. A relay this node sent the new way at once
//! could overtake them. So on hearing the move, this node holds its relays for
//! the peer and sends F a fence behind the ones in flight (one publisher, one
//! connection: F hears them in order); F answers once it has passed on
//! everything before the fence, and the held relays follow. A fence F does not
//! answer (F died) lapses after the broker's timeout: what F had not passed on
//! died with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::peer_id::{NodeId, PeerId};

/// A relay held until its target's fences are passed.
pub struct Held {
    /// Who sent it.
    pub sender: PeerId,
    /// As delivered.
    pub frame: String,
}

struct Fence {
    /// Fences sent and not yet answered.
    waiting: HashSet<u64>,
    /// Where the peer is now.
    to: NodeId,
    /// Relays for it, in the order they were sent.
    held: Vec<Held>,
}

/// This node's fences, by peer.
#[derive(Default)]
pub struct Fences {
    /// How many peers are fenced: relays look at the map only when some are.
    active: AtomicUsize,
    next: AtomicU64,
    fences: Mutex<HashMap<PeerId, Fence>>,
}

impl Fences {
    /// A fresh fence number (the holds of [`super::holds`] draw theirs here too,
    /// so an answer names one fence).
    pub fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Fences `peer`, which moved to `to`; returns the fence's number, to send.
    pub fn raise(&self, peer: PeerId, to: NodeId) -> u64 {
        let id = self.number();
        let mut fences = self.lock();
        let fence = fences.entry(peer).or_insert_with(|| {
            self.active.fetch_add(1, Ordering::AcqRel);
            Fence { waiting: HashSet::new(), to, held: Vec::new() }
        });
        fence.waiting.insert(id);
        fence.to = to;
        id
    }

    /// Where `peer` moved to, if it is fenced (a later move re-points a fence).
    pub fn moved(&self, peer: PeerId, to: NodeId) {
        if let Some(fence) = self.lock().get_mut(&peer) {
            fence.to = to;
        }
    }

    /// Holds a relay for `target` if it is fenced; returns it otherwise.
    pub fn hold(&self, target: PeerId, sender: PeerId, frame: &str) -> bool {
        if self.active.load(Ordering::Acquire) == 0 {
            return false;
        }
        match self.lock().get_mut(&target) {
            Some(fence) => {
                fence.held.push(Held { sender, frame: frame.to_owned() });
                true
            }
            None => false,
        }
    }

    /// Fence `id` for `peer` is passed (answered, or lapsed). Once the last
    /// one is, `release` gets where the peer is and its held relays, under the
    /// lock, so that no relay sent after them overtakes them.
    pub fn lower(&self, peer: PeerId, id: u64, release: impl FnOnce(NodeId, Vec<Held>)) {
        let mut fences = self.lock();
        let Some(fence) = fences.get_mut(&peer) else { return };
        if !fence.waiting.remove(&id) || !fence.waiting.is_empty() {
            return;
        }
        if let Some(fence) = fences.remove(&peer) {
            release(fence.to, fence.held);
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Fence>> {
        self.fences.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_are_held_until_the_last_fence_is_passed_then_released_in_order() {
        let fences = Fences::default();
        let (peer, sender) = (PeerId::random(), PeerId::random());
        assert!(!fences.hold(peer, sender, "before"), "nothing is fenced yet");
        let first = fences.raise(peer, NodeId::parked());
        let to = NodeId::random();
        let second = fences.raise(peer, to);
        assert!(fences.hold(peer, sender, "a") && fences.hold(peer, sender, "b"));
        let mut released = None;
        fences.lower(peer, first, |_, _| panic!("one fence is still up"));
        fences.lower(peer, first, |_, _| panic!("a fence passes once"));
        fences.lower(peer, second, |node, held| released = Some((node, held)));
        let (node, held) = released.expect("released with the last fence");
        assert_eq!(node, to, "to where the peer went last");
        assert_eq!(held.iter().map(|h| h.frame.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(!fences.hold(peer, sender, "after"));
    }
}
