//! The one seam between the hub and the deployment it runs in.
//!
//! The hub (`hub::Hub`) keeps this node's peers and delivers frames to
//! them; a [`Broker`] decides membership for the whole deployment and carries
//! what must reach other nodes. Every endpoint talks to the hub, and the hub
//! talks to a broker through this trait only: it never asks which one it has.
//!
//! * [`memory::MemoryBroker`], the default: one node, no external service.
//! * `cluster::RedisBroker`: several nodes sharing rooms over Redis.
//!
//! Both follow one contract, so one hub path serves both:
//!
//! * **Joins are decided here.** [`Broker::join`] checks capacity and admits
//!   atomically, numbers the join among the room's events, and answers with the
//!   room's members as of that number.
//! * **Membership events come back through [`RoomEvents::apply`]**, on every node
//!   with an interest in the room (the joiner's included), in the one order the
//!   broker gave them. That is the only place `peer-joined` and `peer-left` are
//!   sent from. A broker may call `apply` from inside `join` or `leave` (the
//!   in-memory one does); the hub holds none of its locks across those calls.
//! * **Relays and broadcasts for other nodes** go through [`Broker::forward`]
//!   and [`Broker::broadcast`]; what arrives from other nodes is handed to the
//!   hub with [`RoomEvents::deliver`] and [`RoomEvents::apply`].
//!
//! The centrifuge server pairs its `Broker` interface with an in-memory default
//! the same way.

pub mod memory;
pub mod parking;

use std::sync::Arc;

use futures_util::future::{self, BoxFuture, FutureExt};
use serde_json::value::RawValue;
use switchboard_protocol::ErrorCode;

use crate::outbox::Removal;
use crate::peer_id::{NodeId, PeerId};
use parking::{Adopted, Claim, Parked, SessionRecord};

/// Why the broker could not do something. Whatever it is, the peer is told
/// `unavailable` and may try again.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backing service is unreachable (or was, and this node has not
    /// re-registered with it yet).
    #[error("the broker is unreachable")]
    Down,
    /// The backing service did not answer in time.
    #[error("the broker did not answer in time")]
    Timeout,
    /// Too much is waiting to be sent to other nodes.
    #[error("too many messages are waiting for the broker")]
    Backlog,
    /// The backing service refused or failed a command.
    #[error("the broker failed: {0}")]
    Failed(String),
    /// The backing service answered something it never should.
    #[error("unexpected answer from the broker")]
    Protocol,
}

/// How a member is shown to the others: its authenticated user and its `meta`.
/// Shared (by `Arc`) between the broker's record and the hub's member.
#[derive(Debug)]
pub struct Profile {
    /// The token's subject.
    pub user: Option<Arc<str>>,
    /// The `meta` object it joined with.
    pub meta: Option<Box<RawValue>>,
}

/// A member's profile; `None` for an anonymous member without `meta`, the
/// common case, which then costs no allocation.
pub type Shown = Option<Arc<Profile>>;

/// A profile from its parts; `None` when there is nothing to show.
pub fn shown(user: Option<Arc<str>>, meta: Option<Box<RawValue>>) -> Shown {
    match (user, meta) {
        (None, None) => None,
        (user, meta) => Some(Arc::new(Profile { user, meta })),
    }
}

/// The user of a profile.
pub fn user_of(shown: &Shown) -> Option<&str> {
    shown.as_deref().and_then(|p| p.user.as_deref())
}

/// The `meta` of a profile.
pub fn meta_of(shown: &Shown) -> Option<&RawValue> {
    shown.as_deref().and_then(|p| p.meta.as_deref())
}

/// A room member as the broker lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The peer.
    pub id: PeerId,
    /// The node it is connected to.
    pub node: NodeId,
    /// How it is shown.
    pub shown: Shown,
    /// When it joined, in milliseconds since the Unix epoch.
    pub joined: u64,
}

/// Now, in milliseconds since the Unix epoch: how join and creation times are kept.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// A room as the server API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// Its name.
    pub name: String,
    /// How many members it has, on every node.
    pub members: usize,
    /// The capacity set by the join that created it.
    pub capacity: Option<u32>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created: u64,
}

/// A room and its members, oldest first, for the server API.
#[derive(Debug, Clone)]
pub struct RoomDetail {
    /// The room.
    pub summary: RoomSummary,
    /// Its members on every node.
    pub members: Vec<Listed>,
}

/// One node of the deployment, as the server API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// The address it listens on.
    pub address: String,
    /// The server version it runs.
    pub version: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started: u64,
    /// Its signaling connections (every dialect).
    pub connections: u64,
    /// The rooms it has members in.
    pub rooms: u64,
    /// Client messages it has received since it started.
    pub messages_in: u64,
}

/// What the server API asks of one peer, wherever it is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Deliver this frame to it.
    Send(String),
    /// Close its connection with this code and reason; its session is over.
    Remove(Removal),
    /// Another node resumes its session: switch its (half-open) connection
    /// off, which parks the session for the claim (close 4001).
    HandOver,
}

/// What a leave did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vacated {
    /// The peer was a member (of this node) and is not any more.
    pub removed: bool,
    /// It was the last member: the room is gone.
    pub emptied: bool,
}

/// What the broker decided about a join.
#[derive(Debug)]
pub enum Verdict {
    /// In, as the room's event `seq`.
    Admitted {
        /// The room's capacity, if it has one (already capped by the server's maximum).
        capacity: Option<u32>,
        /// The join's number among the room's events.
        seq: u64,
        /// Every member as of `seq`, oldest first, the newcomer included.
        members: Vec<Listed>,
        /// The join created the room.
        created: bool,
    },
    /// The room is full at this capacity.
    Full(u32),
    /// The peer is already a member.
    AlreadyJoined,
}

/// A membership event of one room, numbered by the broker.
#[derive(Debug)]
pub enum RoomEvent<'a> {
    /// A peer joined. `restored`: its node wrote it back after the broker lost
    /// it (it never left), which is news only to nodes that had forgotten it.
    Joined {
        /// The event's number.
        seq: u64,
        /// Who joined, where, shown how.
        member: Listed,
        /// Written back, not new.
        restored: bool,
    },
    /// A peer left.
    Left {
        /// The event's number.
        seq: u64,
        /// Who left.
        peer: PeerId,
    },
    /// A member's session moved: parked while its peer is away
    /// ([`NodeId::parked`]), or claimed by a node. The members hear nothing;
    /// relays to it go the new way.
    Moved {
        /// The event's number.
        seq: u64,
        /// Whose.
        peer: PeerId,
        /// Where it was.
        from: NodeId,
        /// Where it is now.
        to: NodeId,
    },
    /// The room was closed (the server API): every member joined before `seq`
    /// is out of it, and it is gone.
    Closed {
        /// The event's number.
        seq: u64,
    },
    /// A room broadcast from `sender` on another node `node`, as delivered.
    Broadcast {
        /// The sender's node.
        node: NodeId,
        /// The sender.
        sender: PeerId,
        /// The frame, as members receive it.
        frame: &'a str,
    },
}

/// Why a relay from another node could not be delivered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// No such peer on this node (it left).
    Gone,
    /// Its send queue overflowed.
    Full,
}

/// What a broker hands back to the hub: implemented by
/// the hub (`hub::Hub`), so the broker never depends on it.
pub trait RoomEvents: Send + Sync {
    /// Applies one event of `room`'s stream: the mirror of other nodes'
    /// members is updated and local members are told.
    fn apply(&self, room: &str, event: RoomEvent<'_>);
    /// Delivers a relay another node routed to a local peer.
    fn deliver(&self, target: PeerId, frame: &str) -> Result<(), Undelivered>;
    /// Tells a local peer about an error outside any request of its own (a
    /// relay that failed on the way to another node); returns whether the
    /// peer is here.
    fn tell_error(&self, peer: PeerId, code: ErrorCode, message: &str, rid: Option<&RawValue>) -> bool;
    /// This node's members of every room, to write back after the broker lost them.
    fn local_members(&self) -> Vec<(Arc<str>, Vec<Listed>)>;
    /// After events may have been missed: reconciles the room with the
    /// broker's list as of `seq`; returns the members on other nodes the list
    /// no longer has (see [`RoomEvents::forget`]).
    fn resync(&self, room: &str, seq: u64, members: Vec<Listed>) -> Vec<PeerId>;
    /// Removes members on other nodes that are gone for good, telling local members.
    fn forget(&self, room: &str, gone: &[PeerId]);
    /// Members of a node that died were removed from `room` by this node
    /// (`emptied`: the room went with them). Told to exactly one node.
    fn reaped(&self, room: &str, members: Vec<Listed>, emptied: bool);
    /// A parked session's grace period ran out and this node took it out of
    /// `room` (`emptied`: the room went with it). Told to exactly one node.
    fn expired(&self, room: &str, member: Listed, emptied: bool);
    /// Carries out `command` if `peer` is connected here (or suspended,
    /// waiting for a resume); returns whether it was.
    fn command(&self, peer: PeerId, command: &Command) -> bool;
    /// This node, as the server API shows it.
    fn node_info(&self) -> NodeInfo;
}

/// Membership and delivery for a whole deployment. See the module docs for
/// the contract both implementations keep.
pub trait Broker: Send + Sync {
    /// This node's id.
    fn node(&self) -> NodeId;

    /// Starts the broker, handing what it hears to `events` (the hub).
    fn start(self: Arc<Self>, events: Arc<dyn RoomEvents>);

    /// Starts hearing `room`'s events on this node, if it does not yet, and
    /// counts one more reason to. Pair with [`Broker::release`].
    fn acquire<'a>(&'a self, room: &'a Arc<str>) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Drops one reason to hear `room`'s events.
    fn release(&self, room: Arc<str>);

    /// Admits `member` to `room` if it has room for it; `capacity` applies if
    /// the join creates the room, and so does `seal`: a sealed room that has
    /// been full once admits nobody again. Publishes the join to every node
    /// (this one too).
    fn join<'a>(
        &'a self,
        room: &'a Arc<str>,
        member: &'a Listed,
        capacity: Option<u32>,
        seal: bool,
    ) -> BoxFuture<'a, Result<Verdict, BrokerError>>;

    /// Removes `peer` of this node from `room` and publishes its departure. Never
    /// fails: what cannot be recorded now is put right when the broker is back
    /// (and then the answer says nothing was removed).
    fn leave<'a>(&'a self, room: &'a Arc<str>, peer: PeerId) -> BoxFuture<'a, Vacated>;

    /// Every member of `room`, on every node, oldest first.
    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>>;

    /// Every room of the deployment that has members, in no order.
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BrokerError>>;

    /// One room with its members; `None` if it has none.
    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<RoomDetail>, BrokerError>>;

    /// Removes every member from `room` at once and publishes
    /// [`RoomEvent::Closed`] to every node; returns who was removed (none: there
    /// was no such room).
    fn close<'a>(&'a self, room: &'a Arc<str>) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>>;

    /// Asks every other node to carry out `command` for `peer`; returns
    /// whether one of them had it.
    fn command<'a>(&'a self, peer: PeerId, command: &'a Command) -> BoxFuture<'a, Result<bool, BrokerError>>;

    /// Every other live node of the deployment.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>>;

    /// Queues a relay for `target` on another node.
    fn forward(&self, node: NodeId, target: PeerId, sender: PeerId, frame: &str) -> Result<(), BrokerError>;

    /// Queues a broadcast for `room`'s members on other nodes.
    fn broadcast(&self, room: &str, sender: PeerId, frame: &str) -> Result<(), BrokerError>;

    /// The state of the backing service, for `/readyz` (`"up"`, `"down"`);
    /// `None` when there is none.
    fn state(&self) -> Option<&'static str>;

    /// Whether the deployment keeps resumable sessions (see [`parking`]), so
    /// that any node can resume them; when it does not, each node keeps its own.
    fn keeps_sessions(&self) -> bool {
        false
    }

    /// Records a live resumable session for the deployment, in order with the
    /// session's later changes; done when the record is written, so the token
    /// the client is then sent resumes it on any node. Best effort: a session
    /// whose record is lost can still be parked and resumed, and only a node's
    /// death loses it.
    fn open_session(&self, _record: &SessionRecord) -> BoxFuture<'_, ()> {
        future::ready(()).boxed()
    }

    /// A live session's rooms changed.
    fn session_rooms(&self, _peer: PeerId, _rooms: &[Arc<str>]) {}

    /// The session is over (its client left, or the server removed it).
    fn end_session(&self, _peer: PeerId, _token: PeerId) {}

    /// Parks a session whose connection is gone: its records point at
    /// [`NodeId::parked`] and relays to it are queued in the deployment until a
    /// node claims it or its grace period runs out. Returns whether it was
    /// parked (if not, the caller keeps it). Relays this node routes to the
    /// peer after the call are queued after `frames`.
    fn park(&self, _parked: Parked) -> BoxFuture<'_, bool> {
        future::ready(false).boxed()
    }

    /// The peer whose session `token` resumes, if any.
    fn find_session(&self, _token: PeerId) -> BoxFuture<'_, Result<Option<PeerId>, BrokerError>> {
        future::ready(Ok(None)).boxed()
    }

    /// Takes the session of `peer` that `token` resumes, for this node: a
    /// parked one at once; a live one on another node after that node hands it
    /// over; one whose node died, as it was. The caller has registered the peer
    /// with its hub, so relays that arrive for it meanwhile are kept.
    fn claim(&self, _token: PeerId, _peer: PeerId) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        future::ready(Ok(Claim::Unknown)).boxed()
    }

    /// Moves a claimed session's record in `room` to this node; `None` if it
    /// is not in the room any more.
    fn adopt<'a>(&'a self, _room: &'a Arc<str>, _peer: PeerId) -> BoxFuture<'a, Result<Option<Adopted>, BrokerError>> {
        future::ready(Ok(None)).boxed()
    }

    /// Ends a parked session now (the server API removed it): it leaves its
    /// rooms. Returns what it left, or `None` if no such session is parked.
    #[allow(clippy::type_complexity)]
    fn evict(&self, _peer: PeerId) -> BoxFuture<'_, Result<Option<Vec<(Arc<str>, Listed, Vacated)>>, BrokerError>> {
        future::ready(Ok(None)).boxed()
    }

    /// Leaves the deployment on a clean shutdown: this node's peers leave their
    /// rooms at once, rather than when the others notice the node is gone.
    fn stop(&self) -> BoxFuture<'_, ()>;
}
