//! The hub: this node's peers and rooms, and the one path every endpoint takes
//! to join, leave, relay, broadcast and watch.
//!
//! The hub does not know which deployment it runs in. Membership is decided by
//! its [`Broker`] (in memory on one node, Redis across several), and every
//! `peer-joined` / `peer-left` a local member sees comes back from the broker
//! as a numbered [`RoomEvent`] applied in [`mirror`]: one code path, whatever
//! the broker.
//!
//! Every operation on the hub's own state is synchronous and short: it takes
//! one room's lock, changes membership or looks up a target, pushes finished
//! frames into outboxes, and returns. No lock is held across an `.await` or a
//! call into the broker, and no two room locks are ever held at once, so the
//! hub cannot deadlock (a broker may call back into the hub from inside a call).
//!
//! Ordering: a room's lock is held while its events are pushed, so every member
//! sees a room's events in one order; a newcomer is queued `joined` with the
//! room as of its own join's number and then only later events (see
//! [`room::Member::since`]), including those that raced its join.

pub mod activity;
pub mod mirror;
pub mod parking;
pub mod room;

use std::sync::{Arc, OnceLock, Weak};

use axum::extract::ws::{Message, Utf8Bytes};
use dashmap::DashMap;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use switchboard_protocol::server::encode::{self, PeerRef};
use switchboard_protocol::server::SERVER_SENDER;
use tokio::sync::{broadcast, Notify};

use crate::broker::{
    meta_of, now_ms, user_of, Broker, BrokerError, Command, Listed, NodeInfo, RoomEvents, Shown, Vacated, Verdict,
};
use crate::outbox::Outbox;
use crate::peer_id::{NodeId, PeerId};
use crate::telemetry::metrics::Metrics;
use activity::{is_told, Activity, LeftReason, Listener, Suspended};
use room::{Flavor, Location, Member, Room};

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
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
    /// The broker could not decide.
    #[error(transparent)]
    Unavailable(BrokerError),
}

/// Why a relay was refused.
#[derive(Debug, thiserror::Error)]
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
    /// The target is on another node and the broker cannot take the frame.
    #[error(transparent)]
    Unavailable(BrokerError),
}

/// Everything the hub needs to know about a peer entering a room.
pub struct Joiner<'a> {
    /// The peer.
    pub id: PeerId,
    /// Where its frames go.
    pub outbox: &'a Arc<Outbox>,
    /// Its user and `meta`.
    pub shown: Shown,
    /// The capacity it asks for, used if the join creates the room.
    pub capacity: Option<u32>,
    /// Whether a room this join creates closes for good once it is full (a
    /// matchbox `?next=N` group), rather than taking newcomers as places free up.
    pub seal: bool,
    /// The protocol the room's members speak.
    pub flavor: Flavor,
}

/// The hub of one node.
pub struct Hub {
    peers: DashMap<PeerId, Arc<Outbox>>,
    rooms: DashMap<Arc<str>, Room>,
    broker: Arc<dyn Broker>,
    node: NodeId,
    metrics: Arc<Metrics>,
    /// Hears the life of the rooms (webhooks), if anyone does.
    listener: OnceLock<Arc<dyn Listener>>,
    /// Keeps the sessions suspended for a resume, if the server resumes any.
    suspended: OnceLock<Arc<dyn Suspended>>,
    /// The address the server listens on, once bound.
    address: OnceLock<String>,
    /// When the hub started (ms since the epoch).
    started: u64,
    /// Itself, for the work its calls leave running.
    me: Weak<Hub>,
    /// Departures still waiting on the broker (spawned by `disconnect`).
    departing: Arc<std::sync::atomic::AtomicUsize>,
}

/// Longest wait for the broker's event of a leave it recorded (see `Hub::left`).
const LEAVE_EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The sender id a broadcast from the server API travels under between nodes:
/// no peer has it (ids are random), so it is excluded from nobody.
fn server_sender() -> PeerId {
    PeerId::from_bits([0; 16])
}

impl Hub {
    /// An empty hub over `broker`, which is started with the hub as the
    /// receiver of its events.
    pub fn start(broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<Hub> {
        let node = broker.node();
        let hub = Arc::new_cyclic(|me| Hub {
            me: me.clone(),
            peers: DashMap::new(),
            rooms: DashMap::new(),
            broker: broker.clone(),
            node,
            metrics,
            listener: OnceLock::new(),
            suspended: OnceLock::new(),
            address: OnceLock::new(),
            started: now_ms(),
            departing: Arc::default(),
        });
        broker.start(hub.clone());
        hub
    }

    fn me(&self) -> Option<Arc<Hub>> {
        self.me.upgrade()
    }

    /// Waits, up to `timeout`, for the departures still waiting on the broker:
    /// on shutdown, so that what they tell (webhooks) is told before exit.
    pub async fn settle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.departing.load(std::sync::atomic::Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Sets who hears the life of the rooms (once).
    pub fn set_listener(&self, listener: Arc<dyn Listener>) {
        let _ = self.listener.set(listener);
    }

    /// Sets who keeps suspended sessions (once).
    pub fn set_suspended(&self, suspended: Arc<dyn Suspended>) {
        let _ = self.suspended.set(suspended);
    }

    /// Records the address the server listens on, for the server API.
    pub fn set_address(&self, address: String) {
        let _ = self.address.set(address);
    }

    /// Tells the listener, for native rooms.
    fn tell(&self, activity: Activity<'_>) {
        let room = match activity {
            Activity::RoomStarted { room }
            | Activity::RoomFinished { room }
            | Activity::PeerJoined { room, .. }
            | Activity::PeerLeft { room, .. } => room,
        };
        if let (Some(listener), true) = (self.listener.get(), is_told(room)) {
            listener.heard(activity);
        }
    }

    /// Tells the listener that `member` left `room` (and the room finished, if it did).
    fn tell_left(&self, room: &str, member: &Listed, reason: LeftReason, vacated: Vacated) {
        if vacated.removed {
            self.tell(Activity::PeerLeft { room, member, reason });
        }
        if vacated.emptied {
            self.tell(Activity::RoomFinished { room });
        }
    }

    /// The broker the hub runs over.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Registers a connected peer: relays to it find its outbox, and relays can
    /// tell "unknown" from "not shared".
    pub fn connect(&self, id: PeerId, outbox: Arc<Outbox>) {
        self.peers.insert(id, outbox);
        self.metrics.peers.increment(1.0);
    }

    /// Removes a peer from its rooms and from the hub. Its rooms are told now if
    /// the broker can say so at once (in memory), or as soon as it has (Redis).
    pub fn disconnect(&self, id: PeerId, rooms: Vec<Arc<str>>, reason: LeftReason) {
        let left: Vec<(Arc<str>, Option<Listed>)> = rooms
            .into_iter()
            .map(|room| {
                let member = self.local_member(id, &room);
                (room, member)
            })
            .collect();
        if self.peers.remove(&id).is_some() {
            self.metrics.peers.decrement(1.0);
        }
        let Some(hub) = self.me() else { return };
        let mut departures = async move {
            for (room, member) in left {
                let vacated = hub.broker.leave(&room, id).await;
                hub.left(id, &room, vacated).await;
                if let Some(member) = &member {
                    hub.tell_left(&room, member, reason, vacated);
                }
                hub.broker.release(room);
            }
        }
        .boxed();
        // Polled once here: a broker that decides at once (in memory) tells the
        // rooms before this returns; one that waits on Redis finishes in the background.
        if (&mut departures).now_or_never().is_none() {
            let departing = self.departing.clone();
            departing.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            tokio::spawn(async move {
                departures.await;
                departing.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
        }
    }

    /// Adds a peer to `room`: the broker decides, then the newcomer is queued
    /// `joined` (the room as of its join) and everyone else hears `peer-joined`
    /// through the room's events.
    pub async fn join(&self, joiner: Joiner<'_>, room: &Arc<str>, rid: Option<&RawValue>) -> Result<(), JoinError> {
        let Joiner { id, outbox, shown, capacity, seal, flavor } = joiner;
        // Hearing the room before the join is published: no event after it is missed.
        self.broker.acquire(room).await.map_err(JoinError::Unavailable)?;
        self.prepare(room, flavor);
        let member = Listed { id, node: self.node, shown, joined: now_ms() };
        let verdict = self.broker.join(room, &member, capacity, seal).await;
        let refusal = match verdict {
            Ok(Verdict::Admitted { capacity, seq, members, created }) => {
                if created {
                    self.tell(Activity::RoomStarted { room });
                }
                self.tell(Activity::PeerJoined { room, member: &member });
                self.admit(member, outbox, room, capacity, seq, members, rid, true);
                return Ok(());
            }
            Ok(Verdict::Full(capacity)) => JoinError::RoomFull { capacity },
            Ok(Verdict::AlreadyJoined) => JoinError::AlreadyJoined,
            Err(error) => JoinError::Unavailable(error),
        };
        self.abandon(room);
        self.broker.release(room.clone());
        Err(refusal)
    }

    /// Removes `id` from `room`; the others hear `peer-left` through the
    /// room's events. Returns whether it was a member.
    pub async fn leave(&self, id: PeerId, room: &Arc<str>) -> bool {
        let Some(member) = self.local_member(id, room) else {
            return false;
        };
        let vacated = self.broker.leave(room, id).await;
        self.left(id, room, vacated).await;
        self.tell_left(room, &member, LeftReason::Left, vacated);
        self.broker.release(room.clone());
        true
    }

    /// A local member as the broker would list it.
    fn listed(&self, id: PeerId, shown: Shown) -> Listed {
        Listed { id, node: self.node, shown, joined: 0 }
    }

    /// Sends `data` to every member of `room`, on every node, as a broadcast
    /// from the server (`"from":"server"`). Returns how many local members took it.
    pub fn broadcast_from_server(&self, room: &str, data: &RawValue) -> Result<usize, BrokerError> {
        let frame = Utf8Bytes::from(encode::broadcast(SERVER_SENDER, room, data));
        self.broadcast(server_sender(), room, frame, true)
    }

    /// Carries out `command` for `peer`, here or on its node; returns whether
    /// the peer was found.
    pub async fn command(&self, peer: PeerId, command: &Command) -> Result<bool, BrokerError> {
        if RoomEvents::command(self, peer, command) {
            return Ok(true);
        }
        if self.broker.command(peer, command).await? {
            return Ok(true);
        }
        match command {
            // No node holds it: it may be parked, waiting for its client.
            Command::Remove(_) => self.evict(peer).await,
            _ => Ok(false),
        }
    }

    /// Closes `room` on every node: its members are told `room-closed` and are
    /// out of it. Returns whether it had members.
    pub async fn close_room(&self, room: &Arc<str>) -> Result<bool, BrokerError> {
        let removed = self.broker.close(room).await?;
        for member in &removed {
            self.tell(Activity::PeerLeft { room, member, reason: LeftReason::RoomClosed });
        }
        if !removed.is_empty() {
            self.tell(Activity::RoomFinished { room });
        }
        Ok(!removed.is_empty())
    }

    /// This node, and the others the broker knows, for the server API.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let mut nodes = vec![self.node_info()];
        nodes.extend(self.broker.nodes().await?);
        Ok(nodes)
    }

    /// Routes a relay frame from `sender` to `target` if it shares one of
    /// `rooms` with the sender: into its outbox here, or to its node.
    pub fn relay(
        &self,
        sender: PeerId,
        rooms: &[Arc<str>],
        target: PeerId,
        frame: Utf8Bytes,
    ) -> Result<(), RelayError> {
        for room_name in rooms {
            let Some(room) = self.rooms.get(room_name) else {
                continue;
            };
            // The server may have removed the sender from the room a moment ago.
            if !room.members.contains_key(&sender) {
                continue;
            }
            match room.members.get(&target).map(|m| &m.location) {
                // Counted by type by the caller, which knows it.
                Some(Location::Local(outbox)) => {
                    return outbox.push(Message::Text(frame)).map_err(|_| RelayError::DeliveryFailed)
                }
                Some(Location::Remote(node)) => {
                    let node = *node;
                    drop(room);
                    return self.broker.forward(node, target, sender, frame.as_str()).map_err(RelayError::Unavailable);
                }
                None => {}
            }
            if room.is_joining_here(target) {
                drop(room);
                if let Some(result) = self.relay_early(sender, room_name, target, &frame) {
                    return result;
                }
            }
        }
        if self.peers.contains_key(&target) {
            Err(RelayError::NoSharedRoom)
        } else {
            Err(RelayError::UnknownTarget)
        }
    }

    /// A relay to `target`, which is joining `room_name` on this node: its
    /// `peer-joined` went out (from the room's event) before the broker's
    /// answer admitted it here. Kept for it, to follow its `joined`; or
    /// delivered, if it was admitted meanwhile. `None`: it is not joining.
    fn relay_early(
        &self,
        sender: PeerId,
        room_name: &str,
        target: PeerId,
        frame: &Utf8Bytes,
    ) -> Option<Result<(), RelayError>> {
        let mut room = self.rooms.get_mut(room_name)?;
        if !room.members.contains_key(&sender) {
            return None;
        }
        if let Some(Location::Local(outbox)) = room.members.get(&target).map(|m| &m.location) {
            return Some(outbox.push(Message::Text(frame.clone())).map_err(|_| RelayError::DeliveryFailed));
        }
        if !room.is_joining_here(target) {
            return None;
        }
        room.early.push((target, frame.clone()));
        Some(Ok(()))
    }

    /// Delivers a broadcast frame to every member of `room` (but `from`,
    /// unless `to_sender`): here, and through the broker to other nodes if the
    /// room has members there, or may have (nobody here is in it). Returns how
    /// many local peers it was queued for; an error means it reached this
    /// node's peers only.
    pub fn broadcast(
        &self,
        from: PeerId,
        room_name: &str,
        frame: Utf8Bytes,
        to_sender: bool,
    ) -> Result<usize, BrokerError> {
        let (delivered, elsewhere) = match self.rooms.get(room_name) {
            Some(room) => {
                let except = (!to_sender).then_some(from);
                let delivered = self.fan_out(&room, except, &frame, "broadcast", None);
                let local_only = room.members.values().all(Member::is_local);
                (delivered, !local_only || room.members.is_empty())
            }
            None => (0, true),
        };
        if elsewhere {
            self.broker.broadcast(room_name, from, frame.as_str())?;
        }
        Ok(delivered)
    }

    /// Starts following `room` from this node without joining it: its members
    /// become reachable with [`Hub::relay_in`], and the returned `Notify` wakes
    /// whenever someone joins it. Pair with [`Hub::unfollow`].
    pub async fn follow(&self, room_name: &Arc<str>, flavor: Flavor) -> Result<Arc<Notify>, BrokerError> {
        let mut room = self.mirrored(room_name, flavor).await?;
        room.followers += 1;
        Ok(room.arrivals.get_or_insert_with(Default::default).clone())
    }

    /// The room's entry here, with its mirror of the members on other nodes
    /// filled from the broker if nobody here is in it yet: for observers and
    /// followers. Heard before read, so no event falls between the two; the
    /// caller holds a reason to hear the room (released if this fails).
    async fn mirrored(
        &self,
        room_name: &Arc<str>,
        flavor: Flavor,
    ) -> Result<dashmap::mapref::one::RefMut<'_, Arc<str>, Room>, BrokerError> {
        self.broker.acquire(room_name).await?;
        let members = match self.broker.members(room_name).await {
            Ok(members) => members,
            Err(error) => {
                self.broker.release(room_name.clone());
                return Err(error);
            }
        };
        let mut room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(None, flavor));
        if !room.members.values().any(Member::is_local) {
            self.replace_mirror(&mut room, members);
        }
        Ok(room)
    }

    /// Stops following a room.
    pub fn unfollow(&self, room_name: &Arc<str>) {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else { return };
            room.followers = room.followers.saturating_sub(1);
            if room.followers == 0 {
                room.arrivals = None;
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
        self.broker.release(room_name.clone());
    }

    /// Routes a frame to `target` if it is a member of `room`, which the
    /// sender joined or follows: the dialect decides who may write to whom.
    pub fn relay_in(
        &self,
        sender: PeerId,
        room_name: &str,
        target: PeerId,
        frame: Utf8Bytes,
    ) -> Result<(), RelayError> {
        let location = match self.rooms.get(room_name) {
            Some(room) => room.members.get(&target).map(|m| m.location.clone()),
            None => None,
        };
        match location {
            Some(Location::Local(outbox)) => outbox.push(Message::Text(frame)).map_err(|_| RelayError::DeliveryFailed),
            Some(Location::Remote(node)) => {
                self.broker.forward(node, target, sender, frame.as_str()).map_err(RelayError::Unavailable)
            }
            None => Err(RelayError::UnknownTarget),
        }
    }

    /// How many members `room` has, as far as this node knows: its own and its
    /// mirror of the others' (0 when nobody here is in it or watches it).
    pub fn member_count(&self, room_name: &str) -> usize {
        self.rooms.get(room_name).map_or(0, |room| room.members.len())
    }

    /// Starts watching a room's membership: the current state as a `room-state`
    /// event, and a receiver of every later `peer-joined` / `peer-left`. Call
    /// [`Hub::release_observer`] after dropping the receiver.
    pub async fn observe(
        &self,
        room_name: &Arc<str>,
    ) -> Result<(Utf8Bytes, broadcast::Receiver<Utf8Bytes>), BrokerError> {
        let mut room = self.mirrored(room_name, Flavor::Signaling).await?;
        // Snapshot and subscription under one lock: no event falls between them.
        Ok((room_state(room_name, &room), room.subscribe()))
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
    pub fn release_observer(&self, room_name: &Arc<str>) {
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
        self.broker.release(room_name.clone());
    }

    /// Number of rooms in the registry (with members or observers), for tests.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A local member of `room` as the broker would list it; `None` if it is not one.
    fn local_member(&self, id: PeerId, room_name: &str) -> Option<Listed> {
        let room = self.rooms.get(room_name)?;
        room.members.get(&id).filter(|m| m.is_local()).map(|m| self.listed(id, m.shown.clone()))
    }

    /// The broker decided `id`'s leave of `room`. If it recorded it, its event
    /// is on its way (over Redis it arrives apart from the answer) and removes
    /// the member under the lock its `peer-left` goes out under: waited for, so
    /// that a relay to the leaver is never refused before the sender is told.
    /// If the event does not come (it was lost with the link), or the broker
    /// recorded nothing, the member is removed here.
    async fn left(&self, id: PeerId, room_name: &str, vacated: Vacated) {
        if vacated.removed {
            let deadline = tokio::time::Instant::now() + LEAVE_EVENT_WAIT;
            while self.local_member(id, room_name).is_some() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        self.leave_here(id, room_name);
    }

    /// Removes a local member from a room here once the broker has decided its
    /// leave, silently (the room hears of it from the broker), if the broker's
    /// event has not removed it already. Until then it is a member: a relay to
    /// it is delivered, and one that is refused is refused after the sender
    /// was told `peer-left` (both under the room's lock).
    fn leave_here(&self, id: PeerId, room_name: &str) {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else { return };
            if room.members.get(&id).is_some_and(Member::is_local) {
                room.members.shift_remove(&id);
                if !room.members.values().any(Member::is_local) {
                    self.metrics.rooms.decrement(1.0);
                }
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
    }

    /// Notes that a local peer's join to `room` is being decided by the broker,
    /// so that the room's events meanwhile are kept for [`Hub::admit`]. Paired
    /// with `admit`, or with [`Hub::abandon`] if the join fails.
    fn prepare(&self, room_name: &Arc<str>, flavor: Flavor) {
        let mut room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room::new(None, flavor));
        room.pending_joins += 1;
    }

    /// A prepared join did not happen.
    fn abandon(&self, room_name: &str) {
        let unused = {
            let Some(mut room) = self.rooms.get_mut(room_name) else { return };
            room.pending_joins = room.pending_joins.saturating_sub(1);
            if room.pending_joins == 0 {
                room.recent.clear();
                room.early.clear();
            }
            room.is_unused()
        };
        if unused {
            self.rooms.remove_if(room_name, |_, room| room.is_unused());
        }
    }

    /// Records a join the broker admitted as the room's event `seq`: the
    /// room's members on other nodes replace this node's mirror, the newcomer
    /// is queued its `joined`, and it is sent the room's events numbered after
    /// `seq` that were applied while the broker decided.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        member: Listed,
        outbox: &Arc<Outbox>,
        room_name: &Arc<str>,
        capacity: Option<u32>,
        seq: u64,
        members: Vec<Listed>,
        rid: Option<&RawValue>,
        newcomer: bool,
    ) {
        let id = member.id;
        let Some(mut room) = self.rooms.get_mut(room_name) else {
            return; // prepared, so there: a room is never dropped while a join is pending
        };
        room.capacity = capacity;
        if newcomer && room.flavor.tells_newcomer() {
            let others: Vec<PeerRef> = members
                .iter()
                .filter(|m| m.id != id)
                .map(|m| PeerRef { id: m.id.as_str(), user: user_of(&m.shown), meta: meta_of(&m.shown) })
                .collect();
            let joined = encode::joined(room_name, capacity, others, rid);
            // The newcomer's own queue: an overflow here closes it, nothing to undo.
            let _ = outbox.push(Message::Text(joined.into()));
            self.metrics.messages_out("joined", 1);
        }

        if !room.members.values().any(Member::is_local) {
            self.metrics.rooms.increment(1.0);
        }
        self.replace_mirror(&mut room, members);
        // Events newer than the snapshot that arrived while the broker decided:
        // they changed the room after the snapshot, and they are news to the newcomer.
        let recent = std::mem::take(&mut room.recent);
        // The room was closed after this join was numbered: the newcomer is out too.
        let mut closed = false;
        for event in &recent {
            if event.seq <= seq {
                continue;
            }
            if event.closed {
                room.members.retain(|_, m| m.is_local());
                closed = true;
                continue;
            }
            if let Some(to) = event.moved {
                if let Some(moved) = room.members.get_mut(&event.peer).filter(|m| !m.is_local() && to != self.node) {
                    moved.location = Location::Remote(to);
                }
                continue;
            }
            if event.left {
                if room.members.get(&event.peer).is_some_and(|m| !m.is_local()) {
                    room.members.shift_remove(&event.peer);
                }
            } else if let Some(member) = &event.joined {
                if !room.members.contains_key(&event.peer) {
                    room.members.insert(event.peer, member.clone());
                }
            }
            match &event.frame {
                Some(frame) if event.peer != id && outbox.push(Message::Text(frame.clone())).is_ok() => {
                    self.metrics.messages_out(if event.left { "peer-left" } else { "peer-joined" }, 1);
                }
                _ => {}
            }
        }
        // Relays sent to it since its `peer-joined` went out, after its `joined`.
        if !room.early.is_empty() {
            let mut early = std::mem::take(&mut room.early);
            early.retain(|(target, frame)| {
                if *target == id {
                    let _ = outbox.push(Message::Text(frame.clone()));
                }
                *target != id
            });
            room.early = early;
        }
        room.pending_joins = room.pending_joins.saturating_sub(1);
        if room.pending_joins > 0 {
            room.recent = recent;
        } else {
            room.early.clear();
        }
        if closed {
            outbox.remove_from(room_name.clone(), Message::Text(encode::room_closed(room_name).into()));
            if !room.members.values().any(Member::is_local) {
                self.metrics.rooms.decrement(1.0);
            }
            return;
        }
        room.members.insert(id, Member::local(outbox.clone(), member.shown, seq));
        room.notify_arrival();
    }

    /// A local peer was removed from `room` by the server (its connection has
    /// read the notice): the reason to hear the room that its join took is
    /// given back.
    pub fn removed(&self, room: Arc<str>) {
        self.broker.release(room);
    }

    /// Queues `frame` for every local member but `except` that is to hear event
    /// `seq` (see [`Member::listening`]); counts it as `kind` going out. Returns
    /// how many took it.
    fn fan_out(&self, room: &Room, except: Option<PeerId>, frame: &Utf8Bytes, kind: &str, seq: Option<u64>) -> usize {
        let mut delivered = 0;
        for (id, member) in &room.members {
            if Some(*id) == except {
                continue;
            }
            if let Some(outbox) = member.listening(seq) {
                if outbox.push(Message::Text(frame.clone())).is_ok() {
                    delivered += 1;
                }
            }
        }
        self.metrics.messages_out(kind, delivered as u64);
        delivered
    }
}

fn room_state(room_name: &str, room: &Room) -> Utf8Bytes {
    encode::room_state(room_name, room.peer_refs()).into()
}

#[cfg(test)]
mod tests;
