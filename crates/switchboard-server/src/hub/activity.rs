//! What the hub tells the world outside its peers: the life of its rooms, for
//! the app's backend (webhooks), and the one thing it asks of the sessions it
//! does not keep (a suspended session the server API removes).
//!
//! Both are traits the hub defines and others implement, so the hub never
//! depends on webhooks or on resume.
//!
//! Each happening is told by exactly one node: the node of the peer that
//! joined or left, the node that closed a room, or the one node that reaped a
//! dead node's peers. Only rooms of the native protocol are told: the dialects'
//! rooms (PeerJS mailboxes, y-webrtc topics, matchbox groups) are named in a
//! namespace of their own, which starts with a control character no native
//! room name may contain.

use std::sync::Arc;

use crate::broker::Listed;
use crate::peer_id::PeerId;

/// Why a member left a room, as webhooks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// It sent `leave`.
    Left,
    /// Its connection closed (by the client, or lost and not resumable).
    Disconnected,
    /// The server API removed it.
    Kicked,
    /// Its session expired: the resume grace period, or a dialect's keepalive.
    TimedOut,
    /// Its node died; another node removed it.
    NodeLost,
    /// The server API closed the room.
    RoomClosed,
}

impl LeftReason {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Left => "left",
            LeftReason::Disconnected => "disconnected",
            LeftReason::Kicked => "kicked",
            LeftReason::TimedOut => "timed-out",
            LeftReason::NodeLost => "node-lost",
            LeftReason::RoomClosed => "room-closed",
        }
    }
}

/// Something that happened in a room.
#[derive(Debug, Clone, Copy)]
pub enum Activity<'a> {
    /// Its first member joined.
    RoomStarted {
        /// The room.
        room: &'a str,
    },
    /// Its last member left, or it was closed.
    RoomFinished {
        /// The room.
        room: &'a str,
    },
    /// A peer joined.
    PeerJoined {
        /// The room.
        room: &'a str,
        /// Who, on which node, shown how.
        member: &'a Listed,
    },
    /// A peer left.
    PeerLeft {
        /// The room.
        room: &'a str,
        /// Who.
        member: &'a Listed,
        /// Why.
        reason: LeftReason,
    },
}

/// Hears what happens in the hub's rooms. Called on the hub's paths: it must
/// return at once (queue, never wait).
pub trait Listener: Send + Sync {
    /// One happening.
    fn heard(&self, activity: Activity<'_>);
}

/// Keeps the sessions whose connection is gone for a while (resume).
pub trait Suspended: Send + Sync {
    /// Ends `peer`'s session if it is suspended, returning its rooms for the
    /// hub to take it out of.
    fn end(&self, peer: PeerId) -> Option<Vec<Arc<str>>>;
    /// Another node resumes `peer`'s session: switches its live connection
    /// off (it parks itself). Returns whether it was live here.
    fn hand_over(&self, peer: PeerId) -> bool;
}

/// Whether a room is told: native rooms only (see the module docs).
pub fn is_told(room: &str) -> bool {
    !room.starts_with('\u{1}')
}
