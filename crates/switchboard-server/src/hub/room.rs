//! One signaling room: its members in join order, its capacity, its observers.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use indexmap::IndexMap;
use switchboard_protocol::compat::matchbox::PeerEvent;
use switchboard_protocol::server::encode::{self, PeerRef};
use tokio::sync::{broadcast, Notify};

use crate::broker::{meta_of, user_of, Shown};
use crate::outbox::Outbox;
use crate::peer_id::{NodeId, PeerId};

/// How many membership events an observer may fall behind before it is sent a
/// fresh snapshot instead.
pub const OBSERVER_BACKLOG: usize = 64;

/// How a room's members hear about each other: the protocol they speak. Rooms
/// of different flavors never share a name (dialects namespace theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Switchboard's own: `joined` for the newcomer, `peer-joined` / `peer-left`.
    Signaling,
    /// matchbox: `NewPeer` / `PeerLeft` with UUID ids, nothing for the newcomer.
    Matchbox,
    /// Nothing at all (y-webrtc topics, the PeerJS realm).
    Quiet,
}

impl Flavor {
    /// What members are told when `id` joins, if anything.
    pub fn joined_event(self, room: &str, id: PeerId, shown: &Shown) -> Option<Utf8Bytes> {
        match self {
            Flavor::Signaling => Some(encode::peer_joined(id.as_str(), room, user_of(shown), meta_of(shown)).into()),
            Flavor::Matchbox => Some(PeerEvent::NewPeer(&id.to_uuid()).encode().into()),
            Flavor::Quiet => None,
        }
    }

    /// What members are told when `id` leaves, if anything.
    pub fn left_event(self, room: &str, id: PeerId) -> Option<Utf8Bytes> {
        match self {
            Flavor::Signaling => Some(encode::peer_left(id.as_str(), room).into()),
            Flavor::Matchbox => Some(PeerEvent::PeerLeft(&id.to_uuid()).encode().into()),
            Flavor::Quiet => None,
        }
    }

    /// Whether a newcomer is sent `joined` with the room's members.
    pub fn tells_newcomer(self) -> bool {
        self == Flavor::Signaling
    }
}

/// Where a member is connected.
#[derive(Clone)]
pub enum Location {
    /// To this node: frames go straight into its outbox.
    Local(Arc<Outbox>),
    /// To another node (when rooms are shared over a broker): frames go to that node.
    Remote(NodeId),
}

/// A peer in a room.
#[derive(Clone)]
pub struct Member {
    /// Where to deliver frames for this peer.
    pub location: Location,
    /// Its user and `meta`, shown to the others (shared with the broker's record).
    pub shown: Shown,
    /// The seq of the last room event this member's `joined`
    /// list already covers. The event stream may still carry older events; only
    /// later ones are news to it.
    pub since: u64,
}

impl Member {
    /// A member connected to this node, sent room events numbered after `since`.
    pub fn local(outbox: Arc<Outbox>, shown: Shown, since: u64) -> Member {
        Member { location: Location::Local(outbox), shown, since }
    }

    /// A member connected to another node.
    pub fn remote(node: NodeId, shown: Shown) -> Member {
        Member { location: Location::Remote(node), shown, since: 0 }
    }

    /// The outbox of a local member that is to be sent a room event numbered
    /// `seq` (`None`: an event outside the numbering, sent to every local member).
    pub fn listening(&self, seq: Option<u64>) -> Option<&Arc<Outbox>> {
        match &self.location {
            Location::Local(outbox) if seq.is_none_or(|seq| seq > self.since) => Some(outbox),
            _ => None,
        }
    }

    /// Whether it is connected to this node.
    pub fn is_local(&self) -> bool {
        matches!(self.location, Location::Local(_))
    }
}

/// A room. It lives in the registry while it has members or observers.
pub struct Room {
    /// Members in join order, so `joined` lists them oldest first.
    pub members: IndexMap<PeerId, Member>,
    /// The capacity set by the join that created the room.
    pub capacity: Option<u32>,
    /// What its members are told.
    pub flavor: Flavor,
    /// Membership events for `/sse/rooms/{room}`; `None` while nobody watches.
    pub observers: Option<broadcast::Sender<Utf8Bytes>>,
    /// Connections on this node that follow the room without being in it (a
    /// PeerJS peer's mailbox, followed by those who write to it).
    pub followers: u32,
    /// Woken whenever someone joins, for followers; `None` until one asks.
    pub arrivals: Option<Arc<Notify>>,
    /// Joins of local peers that the broker is deciding right now.
    pub pending_joins: u32,
    /// While joins are pending: the events applied meanwhile, which
    /// may be newer than a pending join's snapshot of the room.
    pub recent: Vec<Recent>,
    /// Relays to a peer joining on this node whose `peer-joined` the room
    /// already heard, before its admission here: sent right after its
    /// `joined` (see `Hub::relay`).
    pub early: Vec<(PeerId, Utf8Bytes)>,
}

/// A membership event applied while a join was pending.
pub struct Recent {
    /// Its seq among the room's events.
    pub seq: u64,
    /// Who joined or left.
    pub peer: PeerId,
    /// For a join of a peer on another node: where, and how it is shown.
    pub joined: Option<Member>,
    /// Whether it was a leave.
    pub left: bool,
    /// Whether the room was closed (everyone joined before `seq` is out).
    pub closed: bool,
    /// For a session that moved (parked, or claimed by a node): where it is now.
    pub moved: Option<NodeId>,
    /// The event as sent to members, if they are told.
    pub frame: Option<Utf8Bytes>,
}

impl Room {
    /// An empty room.
    pub fn new(capacity: Option<u32>, flavor: Flavor) -> Room {
        Room {
            members: IndexMap::new(),
            capacity,
            flavor,
            observers: None,
            followers: 0,
            arrivals: None,
            pending_joins: 0,
            recent: Vec::new(),
            early: Vec::new(),
        }
    }

    /// Whether `peer` is joining here: its join's event was applied (members
    /// were told `peer-joined`) and its admission is still pending.
    pub fn is_joining_here(&self, peer: PeerId) -> bool {
        self.pending_joins > 0
            && self
                .recent
                .iter()
                .rev()
                .find(|r| r.peer == peer)
                .is_some_and(|r| r.joined.is_none() && !r.left && !r.closed && r.moved.is_none() && r.frame.is_some())
    }

    /// Whether the registry may drop this room: nobody on this node is in it or
    /// watches it (members on other nodes are only a mirror, kept for routing).
    pub fn is_unused(&self) -> bool {
        !self.members.values().any(Member::is_local)
            && !self.is_observed()
            && self.pending_joins == 0
            && self.followers == 0
    }

    /// Whether an event stream watches this room.
    pub fn is_observed(&self) -> bool {
        self.observers.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// The members as the protocol lists them, oldest first.
    pub fn peer_refs(&self) -> Vec<PeerRef<'_>> {
        self.members
            .iter()
            .map(|(id, m)| PeerRef { id: id.as_str(), user: user_of(&m.shown), meta: meta_of(&m.shown) })
            .collect()
    }

    /// Wakes the followers waiting for someone to join.
    pub fn notify_arrival(&self) {
        if let Some(arrivals) = &self.arrivals {
            arrivals.notify_waiters();
        }
    }

    /// Sends a membership event to the observers, if there are any.
    pub fn notify_observers(&self, event: &Utf8Bytes) {
        if let Some(observers) = &self.observers {
            // An error only means every observer has gone; the last one to go
            // clears `observers` itself.
            let _ = observers.send(event.clone());
        }
    }

    /// A new receiver of membership events.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Utf8Bytes> {
        match &self.observers {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(OBSERVER_BACKLOG);
                self.observers = Some(tx);
                rx
            }
        }
    }
}

/// Checks a room or channel name: 1 to `max_len` bytes, no control characters.
pub fn validate_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("room name must not be empty".into());
    }
    if name.len() > max_len {
        return Err(format!("room name must be at most {max_len} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("room name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(validate_name("lobby", 64).is_ok());
        assert!(validate_name("café ☕", 64).is_ok());
        assert!(validate_name("", 64).is_err());
        assert!(validate_name("a\nb", 64).is_err());
        assert!(validate_name("abcde", 4).is_err());
    }
}
