//! Sessions the deployment keeps while their peer is away, so that any node
//! can take them back (`?resume=TOKEN`).
//!
//! On one node the node itself keeps its suspended sessions (the resume module),
//! and the broker keeps none. Over Redis a resumable session is written to
//! Redis when it opens, and *parked* there when its connection is lost or its
//! node stops: its state, the frames it had not been sent, and, while it is
//! away, every relay sent to it, in order and within its send-queue limits.
//! Its room records stay, pointing at [`NodeId::parked`](crate::peer_id::NodeId::parked)
//! rather than at a node, so the other members see nothing; a relay to it goes
//! to its parked queue. The node that claims it moves its records to itself
//! (a `moved` event, which no member hears) and is handed the queue.

use std::sync::Arc;

use crate::peer_id::PeerId;

/// A resumable session as another node needs it to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The peer.
    pub id: PeerId,
    /// Its current (secret) resume token.
    pub token: PeerId,
    /// Who it is, as the endpoint encodes it (the broker does not read it).
    pub identity: String,
    /// Its rooms, in join order.
    pub rooms: Vec<Arc<str>>,
}

/// A session being parked.
#[derive(Debug, Clone)]
pub struct Parked {
    /// What it is.
    pub record: SessionRecord,
    /// The frames queued for it and not yet written, oldest first.
    pub frames: Vec<String>,
    /// The limits its queue keeps while it is away (its send-queue limits).
    pub messages: usize,
    /// The same, in bytes.
    pub bytes: usize,
    /// How long it may stay parked: the resume grace period.
    pub grace: std::time::Duration,
    /// The other members of each of its rooms as it last heard: whoever
    /// resumes it tells it what changed meanwhile.
    pub known: Known,
}

/// The other members of each room, as a parked peer last heard them.
pub type Known = Vec<(Arc<str>, Vec<PeerId>)>;

/// A parked session a node took back.
#[derive(Debug, Clone)]
pub struct Taken {
    /// What it was (its token is spent).
    pub record: SessionRecord,
    /// What was queued for it while it was away, oldest first.
    pub frames: Vec<String>,
    /// Something sent to it did not fit: it lost messages and cannot be resumed.
    pub overflowed: bool,
    /// Its rooms' other members when it was parked (none if it never was:
    /// taken from a node that died).
    pub known: Known,
}

/// What a node's claim on a session found.
#[derive(Debug)]
pub enum Claim {
    /// Taken: it is this node's now.
    Taken(Taken),
    /// No such session (unknown, spent or expired token; or the broker keeps none).
    Unknown,
}

/// A room record moved to this node by a claim.
#[derive(Debug)]
pub struct Adopted {
    /// The number of the move among the room's events: later ones are news.
    pub seq: u64,
    /// The room's capacity, if it has one.
    pub capacity: Option<u32>,
    /// Every member as of `seq`, the adopted one included.
    pub members: Vec<crate::broker::Listed>,
}
