//! Scale-out: nodes share rooms through Redis.
//!
//! With `--redis`, the hub runs over a [`RedisBroker`]: Redis holds the truth
//! about rooms, and each node's hub keeps its own peers
//! plus a mirror of the others, for routing. It keeps the contract of
//! [`crate::broker`], like the in-memory default:
//!
//! * **Membership** lives in one Redis hash per room (member → record). Joins,
//!   leaves and the clean-up of dead nodes are Lua [`scripts`] that change the
//!   hash and publish the matching event on the room's channel in one atomic
//!   step, so a capacity of 2 holds across nodes and every node sees a room's
//!   events in the one order Redis gave them.
//! * **Events**: a node subscribes to the channel of every room it has peers in
//!   (or watches) and hands what arrives to the hub ([`RoomEvents::apply`]): that is where
//!   local peers get `peer-joined`/`peer-left`, from whichever node.
//! * **Relays** to a peer on another node go to that node's inbox channel;
//!   broadcasts go to the room's channel. Both leave through one publisher task
//!   and one connection, so a sender's messages stay in order. A relay that finds
//!   its target gone comes back as an error to the sender: never a silent drop.
//! * **Presence** ([`presence`]): each node beats a key with a TTL; the survivors
//!   remove a dead node's peers from its rooms (so the others see `peer-left`).
//!   When Redis comes back after an outage, or lost its data, the node writes its
//!   peers back and re-reads its rooms ([`RoomEvents::resync`]).
//!
//! While Redis is unreachable, peers on one node keep signaling each other;
//! whatever must cross nodes, and every `join`, is refused with `unavailable`.

pub mod fence;
pub mod holds;
pub mod keys;
pub mod link;
pub mod presence;
pub mod scripts;
pub mod sessions;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use redis::{PushInfo, PushKind, Value};
use serde_json::value::RawValue;
use switchboard_protocol::client::peek_rid;
use switchboard_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::broker::parking::{Adopted, Claim, Parked, SessionRecord};
use crate::broker::{
    meta_of, now_ms, shown, user_of, Broker, BrokerError, Command, Listed, NodeInfo, RoomDetail, RoomEvent, RoomEvents,
    RoomSummary, Undelivered, Vacated, Verdict,
};
use crate::peer_id::{NodeId, PeerId};
use crate::telemetry::metrics::Metrics;
use holds::Arrival;
use keys::{Channel, Keys};
use link::Link;
use wire::{InboxMessage, RoomMessage};

/// Relays and broadcasts waiting for the publisher; beyond this, senders are
/// told `unavailable` rather than the node buffering without bound.
const OUTGOING_QUEUE: usize = 65_536;
/// How long a stopping node that parked sessions keeps passing on the relays
/// that still reach it for them.
const PARKED_LINGER: Duration = Duration::from_millis(500);
/// How often a fence to a node that stopped hearing its inbox looks whether it has left.
const GONE_POLL: Duration = Duration::from_millis(10);
/// Most publishes sent to Redis in one pipeline.
const PUBLISH_BATCH: usize = 512;

/// How to reach Redis, and the limits the broker keeps.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` (or `rediss://`) URL; with `cluster`, one seed node of a Redis Cluster.
    pub url: String,
    /// Whether it is a Redis Cluster (sharded pub/sub).
    pub cluster: bool,
    /// Longest wait for any Redis command.
    pub timeout: Duration,
    /// How long a node's heartbeat lasts: the others reap it after this.
    pub node_ttl: Duration,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Most members in one room.
    pub max_peers_per_room: u32,
}

/// Work waiting for the publisher task, which does it in order.
enum Outgoing {
    /// A publish (a relay to a node, a broadcast, a notice).
    Publish {
        channel: String,
        payload: Vec<u8>,
        /// Who to tell if it cannot be published.
        origin: Option<Origin>,
        /// For a relay, or a notice about one: the node whose inbox it is for.
        /// If nobody hears that inbox (the node stopped or died) it is routed
        /// again by its addressee's session, or its sender is told: never
        /// dropped unheard.
        relay_to: Option<NodeId>,
    },
    /// A session's bookkeeping.
    Command(redis::Cmd),
    /// Everything queued before it has been sent: tell the caller.
    Done(oneshot::Sender<()>),
    /// A local peer leaves a room: after the relays it sent before, so that no
    /// node hears its `peer-left` before them.
    Leave(Arc<str>, PeerId, oneshot::Sender<Result<Vacated, BrokerError>>),
    /// A session to park; whether it was, to the caller.
    Park(Box<Parked>, oneshot::Sender<bool>),
    /// A relay for a parked peer.
    Push(Box<sessions::Push>, Option<Origin>),
}

struct Origin {
    sender: PeerId,
    rid: Option<Box<RawValue>>,
}

/// A server API command waiting for the other nodes' answers.
struct Asked {
    /// How many nodes were asked; `None` until every ask is published.
    expected: Option<usize>,
    /// How many answered that they do not have the peer.
    missing: usize,
    /// Whether one answered that it does.
    found: bool,
    /// Where the verdict goes.
    verdict: Option<oneshot::Sender<bool>>,
}

impl Asked {
    /// Sends the verdict once it is known.
    fn settle(&mut self) {
        let known = self.found || self.expected == Some(self.missing);
        if known {
            if let Some(verdict) = self.verdict.take() {
                let _ = verdict.send(self.found);
            }
        }
    }
}

/// The receiving ends of the broker's queues, for its tasks once it starts.
struct Wiring {
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    outgoing: mpsc::Receiver<Outgoing>,
}

/// The kind of the marker a stopping node puts behind the pushes Redis sent it,
/// to know when the receiver has handled them all.
const DRAINED: &str = "switchboard-drained";
/// The kind of the marker that tells the receiver a hold's fence lapsed (its
/// number in the data): released in order with the room's other messages.
const LAPSED: &str = "switchboard-lapsed";

/// One node's link to the others, over Redis.
pub struct RedisBroker {
    node: NodeId,
    keys: Keys,
    link: Link,
    /// Rooms this node is subscribed to, with how many local members, observers
    /// and joins in flight need each. Held across the (un)subscribe round trip,
    /// so a subscription never races its own removal.
    interest: tokio::sync::Mutex<HashMap<Arc<str>, usize>>,
    outgoing: mpsc::Sender<Outgoing>,
    up: AtomicBool,
    /// Rooms whose Redis side may be stale: a leave failed while Redis was down.
    dirty: Mutex<HashSet<Arc<str>>>,
    timeout: Duration,
    node_ttl: Duration,
    max_peers_per_room: u32,
    metrics: Arc<Metrics>,
    /// Taken by [`Broker::start`].
    wiring: Mutex<Option<Wiring>>,
    /// The receiver's own queue, for the marker of [`RedisBroker::drain_received`].
    pushes_in: mpsc::UnboundedSender<PushInfo>,
    /// Wakes [`RedisBroker::drain_received`] once the receiver reaches its marker.
    drained: tokio::sync::Notify,
    /// Server API commands waiting for answers, by request id.
    asked: Mutex<HashMap<PeerId, Asked>>,
    /// Sessions this node parked lately: relays for them that still reach it are passed on.
    parked_here: sessions::ParkedHere,
    /// Peers that moved away from a node with relays from this one maybe in flight.
    fences: fence::Fences,
    /// Sessions claimed from a node that may still pass relays on to them:
    /// departures in their rooms wait behind those relays.
    holds: holds::Holds,
    /// The hub, once started (weak: the hub owns the broker).
    events: std::sync::OnceLock<std::sync::Weak<dyn RoomEvents>>,
    /// Itself, for the tasks its calls spawn.
    me: std::sync::Weak<RedisBroker>,
}

impl RedisBroker {
    /// Connects to Redis as a new node. A standalone Redis that is down now is
    /// retried in the background; the node starts, and refuses cross-node work
    /// with `unavailable` until Redis answers.
    pub async fn connect(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Arc<RedisBroker>, BrokerError> {
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let pushes_in = push_tx.clone();
        let link = Link::connect(&config.url, config.cluster, config.timeout, push_tx).await.map_err(failed)?;
        let (outgoing_tx, outgoing) = mpsc::channel(OUTGOING_QUEUE);
        let node = NodeId::random();
        info!(%node, cluster = config.cluster, "sharing rooms over Redis");
        metrics.broker_up.set(0.0);
        Ok(Arc::new_cyclic(|me| RedisBroker {
            me: me.clone(),
            node,
            keys: Keys::new(&config.prefix),
            link,
            interest: tokio::sync::Mutex::new(HashMap::new()),
            outgoing: outgoing_tx,
            up: AtomicBool::new(false),
            dirty: Mutex::new(HashSet::new()),
            timeout: config.timeout,
            node_ttl: config.node_ttl,
            max_peers_per_room: config.max_peers_per_room,
            metrics,
            wiring: Mutex::new(Some(Wiring { pushes, outgoing })),
            pushes_in,
            drained: tokio::sync::Notify::new(),
            asked: Mutex::new(HashMap::new()),
            parked_here: sessions::ParkedHere::default(),
            fences: fence::Fences::default(),
            holds: holds::Holds::default(),
            events: std::sync::OnceLock::new(),
        }))
    }

    /// Whether Redis is reachable and this node is registered with it.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn check_up(&self) -> Result<(), BrokerError> {
        if self.is_up() {
            Ok(())
        } else {
            Err(BrokerError::Down)
        }
    }

    /// Notes that Redis failed; cross-node work is refused until the next
    /// heartbeat gets through and this node has re-registered.
    pub fn mark_down(&self, error: &BrokerError) {
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(%error, "Redis broker unreachable: cross-node signaling suspended");
            self.metrics.broker_up.set(0.0);
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            info!("Redis broker reachable: cross-node signaling resumed");
            self.metrics.broker_up.set(1.0);
        }
    }

    /// Runs one Redis operation under the broker's timeout; a failure marks the broker down.
    async fn call<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BrokerError> {
        let (result, refused) = match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(value)) => return Ok(value),
            // A command Redis refused is this command's problem; anything else
            // means the connection is in doubt.
            Ok(Err(e)) => {
                let refused =
                    !(e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout());
                (failed(e), refused)
            }
            Err(_) => (BrokerError::Timeout, false),
        };
        self.metrics.broker_errors.increment(1);
        if !refused {
            self.mark_down(&result);
        }
        Err(result)
    }

    /// Subscribes to `room`'s events, if this node is not already, and counts
    /// one more reason to stay subscribed. Pair with [`Broker::release`].
    async fn subscribe_room(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        self.check_up()?;
        let mut interest = self.interest.lock().await;
        if let Some(count) = interest.get_mut(room) {
            *count += 1;
            return Ok(());
        }
        let mut link = self.link.clone();
        let channel = self.keys.room_channel(room);
        self.call(link.subscribe(&channel)).await?;
        interest.insert(room.clone(), 1);
        Ok(())
    }

    /// Drops one reason to stay subscribed to `room`; unsubscribes after the last.
    fn unsubscribe_room(&self, room: Arc<str>) {
        let Some(broker) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let mut interest = broker.interest.lock().await;
            let Some(count) = interest.get_mut(&room) else { return };
            *count -= 1;
            if *count > 0 {
                return;
            }
            interest.remove(&room);
            let mut link = broker.link.clone();
            // A failure leaves a subscription whose messages the hub ignores.
            let _ = broker.call(link.unsubscribe(&broker.keys.room_channel(&room))).await;
        });
    }

    /// Asks Redis to admit `member` to `room`, cluster-wide.
    async fn admit(
        &self,
        room: &str,
        member: &Listed,
        capacity: Option<u32>,
        seal: bool,
    ) -> Result<Verdict, BrokerError> {
        self.check_up()?;
        let record = wire::record_prefix(self.node, user_of(&member.shown), meta_of(&member.shown), member.joined);
        let mut link = self.link.clone();
        // Indexed before joining, so that if this node dies the survivors find
        // the room: a stale index entry costs a survivor one empty look.
        let mut index = redis::cmd("SADD");
        index.arg(self.keys.node_rooms(self.node.as_str())).arg(room);
        self.call(index.query_async::<()>(&mut link)).await?;
        let mut invocation = scripts::JOIN.key(self.keys.room(room));
        invocation
            .arg(member.id.as_str())
            .arg(record)
            .arg(capacity.map(|c| c.to_string()).unwrap_or_default())
            .arg(self.max_peers_per_room)
            .arg(self.keys.room_channel(room))
            .arg(link.publish_command())
            .arg(if seal { "1" } else { "" })
            .arg(now_ms());
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        match answer.as_slice() {
            [Value::BulkString(status), capacity, Value::Int(seq), Value::Array(fields), Value::Int(created)]
                if status == b"ok" =>
            {
                let capacity =
                    text(capacity).and_then(|c| c.parse::<u32>().ok()).map(|c| c.min(self.max_peers_per_room));
                let seq = u64::try_from(*seq).unwrap_or(0);
                Ok(Verdict::Admitted { capacity, seq, members: listed(fields), created: *created == 1 })
            }
            [Value::BulkString(status), Value::Int(limit)] if status == b"full" => {
                Ok(Verdict::Full(u32::try_from(*limit).unwrap_or(u32::MAX)))
            }
            [Value::BulkString(status)] if status == b"already" => Ok(Verdict::AlreadyJoined),
            _ => Err(BrokerError::Protocol),
        }
    }

    /// Removes `peer` from `room` in Redis, which tells every node. If Redis is
    /// unreachable the room is remembered and put right when it is back.
    async fn remove(&self, room: &Arc<str>, peer: PeerId) -> Vacated {
        let result = async {
            self.check_up()?;
            let (done, left) = oneshot::channel();
            self.send(Outgoing::Leave(room.clone(), peer, done))?;
            left.await.map_err(|_| BrokerError::Down)?
        }
        .await;
        match result {
            Ok(vacated) => vacated,
            Err(error) => {
                debug!(%error, %room, %peer, "leave not recorded in Redis; will resync");
                self.lock_dirty().insert(room.clone());
                Vacated::default()
            }
        }
    }

    /// Removes `peer` from `room` if its record points at `node`; returns what
    /// that did and the member it was.
    async fn remove_as(
        &self,
        room: &str,
        peer: PeerId,
        node: NodeId,
    ) -> Result<(Vacated, Option<Listed>), BrokerError> {
        let mut link = self.link.clone();
        let mut invocation = scripts::LEAVE.key(self.keys.room(room));
        invocation.arg(peer.as_str()).arg(node.as_str()).arg(self.keys.room_channel(room)).arg(link.publish_command());
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        let removed = answer.first().map_or(0, int);
        let member = answer.get(1).and_then(text).and_then(wire::parse_record).and_then(|r| member(peer, &r));
        Ok((Vacated { removed: removed > 0, emptied: removed == 2 }, member))
    }

    /// The members of `room` on every node.
    async fn list(&self, room: &str) -> Result<Vec<Listed>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let hash: Value = self.call(redis::cmd("HGETALL").arg(self.keys.room(room)).query_async(&mut link)).await?;
        Ok(listed(&fields(hash)))
    }

    fn enqueue(&self, channel: String, payload: Vec<u8>, origin: Option<Origin>) -> Result<(), BrokerError> {
        self.send(Outgoing::Publish { channel, payload, origin, relay_to: None })
    }

    /// Queues a notice about a relay for its sender's node; if that node no
    /// longer hears its inbox, it goes where the sender's session is.
    fn notify(&self, node: NodeId, notice: Vec<u8>) -> Result<(), BrokerError> {
        self.send(Outgoing::Publish {
            channel: self.keys.inbox(node),
            payload: notice,
            origin: None,
            relay_to: Some(node),
        })
    }

    /// Waits until the publisher has sent everything queued before this call
    /// (or the broker's timeout passes); whether it did.
    async fn sent(&self) -> bool {
        let (done, sent) = oneshot::channel();
        if self.send(Outgoing::Done(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(self.timeout, sent).await, Ok(Ok(())))
    }

    /// Waits until the receiver has handled every push Redis sent this node so
    /// far (up to the broker's timeout).
    async fn drain_received(&self) {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        let marker = PushInfo { kind: PushKind::Other(DRAINED.to_owned()), data: Vec::new() };
        if self.pushes_in.send(marker).is_ok() {
            let _ = tokio::time::timeout(self.timeout, drained).await;
        }
    }

    fn send(&self, outgoing: Outgoing) -> Result<(), BrokerError> {
        self.check_up()?;
        self.outgoing.try_send(outgoing).map_err(|_| BrokerError::Backlog)
    }

    /// Routes a relay for `target` to where it is: a node's inbox, or its
    /// parked queue. Held instead while `target` is fenced.
    fn route(
        &self,
        node: NodeId,
        target: PeerId,
        sender: PeerId,
        sender_node: NodeId,
        frame: &str,
    ) -> Result<(), BrokerError> {
        if self.fences.hold(target, sender, frame) {
            return Ok(());
        }
        self.route_now(node, target, sender, sender_node, frame)
    }

    fn route_now(
        &self,
        node: NodeId,
        target: PeerId,
        sender: PeerId,
        sender_node: NodeId,
        frame: &str,
    ) -> Result<(), BrokerError> {
        let origin =
            (sender_node == self.node).then(|| Origin { sender, rid: peek_rid(frame).map(RawValue::to_owned) });
        if node.is_parked() {
            let push = sessions::Push { target, sender, sender_node, frame: frame.to_owned(), notice: false };
            return self.send(Outgoing::Push(Box::new(push), origin));
        }
        let payload = wire::relay(target, sender, sender_node, frame);
        self.send(Outgoing::Publish { channel: self.keys.inbox(node), payload, origin, relay_to: Some(node) })
    }

    fn lock_dirty(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes this node from Redis on a clean shutdown: its peers leave their
    /// rooms (the others see `peer-left` at once, not after the TTL).
    async fn deregister(&self) {
        let node = self.node.as_str();
        // Relays sent here before their senders heard that this node parked
        // their targets are still passed on for a moment, and the senders'
        // fences answered behind them.
        if !self.parked_here.is_empty() {
            tokio::time::sleep(PARKED_LINGER).await;
        }
        // Then nobody hears this node's inbox: a relay sent to it from now on
        // finds no listener, and its sender's node routes it again by the
        // target's session. What arrived before is passed on, and everything
        // this node queued reaches Redis before it leaves.
        let mut link = self.link.clone();
        if let Err(error) = self.call(link.unsubscribe(&self.keys.inbox(self.node))).await {
            debug!(%error, "could not unsubscribe this node's inbox");
        }
        self.drain_received().await;
        if !self.sent().await {
            warn!("stopping with relays or parked sessions not yet written to Redis");
        }
        let result = async {
            let mut link = self.link.clone();
            let rooms: Vec<String> =
                self.call(redis::cmd("SMEMBERS").arg(self.keys.node_rooms(node)).query_async(&mut link)).await?;
            for room in &rooms {
                self.reap_room(room, node).await?;
            }
            let mut srem = redis::cmd("SREM");
            srem.arg(self.keys.nodes()).arg(node);
            let commands = vec![
                del(self.keys.node_rooms(node)),
                del(self.keys.alive(node)),
                del(self.keys.node_info(node)),
                del(self.keys.node_sessions(node)),
                srem,
            ];
            self.call(link.batch(commands)).await.map(drop)
        }
        .await;
        match result {
            Ok(()) => info!("left the Redis broker"),
            Err(error) => warn!(%error, "could not deregister from Redis; the others will reap this node"),
        }
    }

    /// Removes every member `node` has in `room`; returns them, and whether
    /// the room went with them.
    async fn reap_room(&self, room: &str, node: &str) -> Result<(Vec<Listed>, bool), BrokerError> {
        let mut link = self.link.clone();
        let mut invocation = scripts::REAP.key(self.keys.room(room));
        invocation.arg(node).arg(self.keys.room_channel(room)).arg(link.publish_command());
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        let emptied = matches!(answer.first(), Some(Value::Int(1)));
        Ok((listed(answer.get(1..).unwrap_or_default()), emptied))
    }

    /// Every node in the set of registered nodes (the dead ones too, until reaped).
    async fn registered_nodes(&self) -> Result<Vec<String>, BrokerError> {
        let mut link = self.link.clone();
        self.call(redis::cmd("SMEMBERS").arg(self.keys.nodes()).query_async(&mut link)).await
    }

    /// Every room with members: the union of the live nodes' room indexes,
    /// each checked against its hash (an index may name a room its node left).
    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let nodes = self.registered_nodes().await?;
        let indexes = nodes
            .iter()
            .map(|node| {
                let mut smembers = redis::cmd("SMEMBERS");
                smembers.arg(self.keys.node_rooms(node));
                smembers
            })
            .collect();
        let mut names: Vec<String> = self
            .call(link.batch(indexes))
            .await?
            .iter()
            .flat_map(|value| match value {
                Value::Array(names) | Value::Set(names) => names.iter().filter_map(text).map(str::to_owned).collect(),
                _ => Vec::new(),
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut rooms = Vec::with_capacity(names.len());
        for chunk in names.chunks(256) {
            let commands = chunk
                .iter()
                .flat_map(|name| {
                    let mut hlen = redis::cmd("HLEN");
                    hlen.arg(self.keys.room(name));
                    let mut hmget = redis::cmd("HMGET");
                    hmget.arg(self.keys.room(name)).arg(&BOOKKEEPING[..]);
                    [hlen, hmget]
                })
                .collect();
            let answers = self.call(link.batch(commands)).await?;
            for (name, pair) in chunk.iter().zip(answers.chunks_exact(2)) {
                if let Some(summary) = summary(name, &pair[0], &pair[1], self.max_peers_per_room) {
                    rooms.push(summary);
                }
            }
        }
        Ok(rooms)
    }

    /// One room and its members.
    async fn room_detail(&self, room: &str) -> Result<Option<RoomDetail>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(self.keys.room(room)).arg(&BOOKKEEPING[..]);
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(self.keys.room(room));
        let answers = self.call(link.batch(vec![hmget, hgetall])).await?;
        let [bookkeeping, hash] = answers.as_slice() else { return Err(BrokerError::Protocol) };
        let members = listed(&fields(hash.clone()));
        if members.is_empty() {
            return Ok(None);
        }
        let length = Value::Int(i64::try_from(members.len() + bookkeeping_count(bookkeeping)).unwrap_or(i64::MAX));
        let summary = summary(room, &length, bookkeeping, self.max_peers_per_room).ok_or(BrokerError::Protocol)?;
        Ok(Some(RoomDetail { summary, members }))
    }

    /// Closes a room cluster-wide.
    async fn close_room(&self, room: &str) -> Result<Vec<Listed>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let mut invocation = scripts::CLOSE.key(self.keys.room(room));
        invocation.arg(self.keys.room_channel(room)).arg(link.publish_command());
        let before: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        Ok(listed(&before))
    }

    /// Asks every other node to carry out a server API command; waits for
    /// the one that has the peer, or for all to say they do not.
    async fn ask(&self, peer: PeerId, command: &Command) -> Result<bool, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let nodes = self.registered_nodes().await?;
        let others: Vec<NodeId> = nodes.iter().filter_map(|n| NodeId::parse(n)).filter(|n| *n != self.node).collect();
        if others.is_empty() {
            return Ok(false);
        }
        let request = PeerId::random();
        let (verdict, answered) = oneshot::channel();
        let asked = Asked { expected: None, missing: 0, found: false, verdict: Some(verdict) };
        self.lock_asked().insert(request, asked);
        let payload = wire::command(peer, self.node, request, command);
        let publishes = others
            .iter()
            .map(|node| {
                let mut publish = redis::cmd(link.publish_command());
                publish.arg(self.keys.inbox(*node)).arg(&payload);
                publish
            })
            .collect();
        let published = self.call(link.batch(publishes)).await;
        let result = match published {
            Ok(receivers) => {
                // Each node hears its inbox once: the subscriber counts are the answers to expect.
                let expected = receivers.iter().map(|v| usize::try_from(int(v)).unwrap_or(0)).sum();
                if let Some(asked) = self.lock_asked().get_mut(&request) {
                    asked.expected = Some(expected);
                    asked.settle();
                }
                match tokio::time::timeout(self.timeout, answered).await {
                    Ok(Ok(found)) => Ok(found),
                    Ok(Err(_)) => Err(BrokerError::Protocol),
                    Err(_) => Err(BrokerError::Timeout),
                }
            }
            Err(error) => Err(error),
        };
        self.lock_asked().remove(&request);
        result
    }

    /// An answer from another node to one of this node's commands.
    fn answered(&self, request: PeerId, found: bool) {
        if let Some(asked) = self.lock_asked().get_mut(&request) {
            asked.found |= found;
            asked.missing += usize::from(!found);
            asked.settle();
        }
    }

    fn lock_asked(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Asked>> {
        self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session moved: relays this node sent to its old node may still be on
    /// their way, so later ones wait behind a fence (see [`fence`]).
    fn on_moved(&self, peer: PeerId, from: NodeId, to: NodeId) {
        if from.is_parked() || from == self.node || from == to {
            self.fences.moved(peer, to);
            return;
        }
        let id = self.fences.raise(peer, to);
        if self.enqueue(self.keys.inbox(from), wire::fence(peer, self.node, id), None).is_err() {
            self.lower_fence(peer, id);
            return;
        }
        // A node that does not answer is gone, with what it had not passed on.
        if let Some(broker) = self.me.upgrade() {
            let lapse = self.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(lapse).await;
                broker.lower_fence(peer, id);
            });
        }
    }

    /// A fence is passed: the relays it held go where the peer is now.
    fn lower_fence(&self, peer: PeerId, id: u64) {
        self.fences.lower(peer, id, |to, held| {
            for relay in held {
                if to == self.node {
                    if let Some(events) = self.events.get().and_then(std::sync::Weak::upgrade) {
                        let _ = events.deliver(peer, &relay.frame);
                    }
                } else if let Err(error) = self.route_now(to, peer, relay.sender, self.node, &relay.frame) {
                    debug!(%error, %peer, "a held relay could not be sent");
                }
            }
        });
    }

    /// Sends fence `number` to `node`, which may still pass relays on to a
    /// session claimed here; its answer (or its lapse) passes the fence in
    /// [`holds`]. A node that no longer hears its inbox is stopping, passing
    /// on what it heard before it leaves the node set, or dead: the fence then
    /// goes through this node's own inbox once it has left (or after the
    /// broker's timeout), behind anything it passed on.
    fn fence_passing(&self, node: NodeId, number: u64, peer: PeerId) {
        let Some(broker) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let fence = wire::fence(peer, broker.node, number);
            if broker.publish_now(broker.keys.inbox(node), &fence).await != Some(true) {
                broker.wait_gone(node).await;
                if broker.publish_now(broker.keys.inbox(broker.node), &fence).await != Some(true) {
                    broker.lapse(number);
                    return;
                }
            }
            tokio::time::sleep(broker.timeout).await;
            broker.lapse(number);
        });
    }

    /// Waits until `node` has passed on the relays it heard before this call
    /// (at most about twice the broker's timeout).
    async fn passed_on(&self, node: NodeId, peer: PeerId) {
        let number = self.fences.number();
        let waiting = self.holds.wait(number);
        self.fence_passing(node, number, peer);
        // The fence's task lapses it; this bound only covers a broker going away.
        let _ = tokio::time::timeout(self.timeout * 3, waiting).await;
    }

    /// Publishes one message now, outside the publisher; whether anyone heard it.
    async fn publish_now(&self, channel: String, payload: &[u8]) -> Option<bool> {
        let mut link = self.link.clone();
        let mut publish = redis::cmd(link.publish_command());
        publish.arg(channel).arg(payload);
        let replies = self.call(link.batch(vec![publish])).await.ok()?;
        Some(!matches!(replies.first(), Some(Value::Int(0))))
    }

    /// Waits (up to the broker's timeout) until `node` is no longer registered.
    async fn wait_gone(&self, node: NodeId) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while tokio::time::Instant::now() < deadline {
            match self.registered_nodes().await {
                Ok(nodes) if nodes.iter().any(|n| n == node.as_str()) => {}
                _ => return,
            }
            tokio::time::sleep(GONE_POLL).await;
        }
    }

    /// Fence `number` lapsed: the receiver passes it, in order with what it heard.
    fn lapse(&self, number: u64) {
        let data = vec![Value::Int(i64::try_from(number).unwrap_or(i64::MAX))];
        let _ = self.pushes_in.send(PushInfo { kind: PushKind::Other(LAPSED.to_owned()), data });
    }

    /// The other live nodes, from what each writes on its heartbeat.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let nodes = self.registered_nodes().await?;
        let others: Vec<&String> = nodes.iter().filter(|n| **n != self.node.as_str()).collect();
        let reads = others
            .iter()
            .map(|node| {
                let mut get = redis::cmd("GET");
                get.arg(self.keys.node_info(node));
                get
            })
            .collect();
        let answers = self.call(link.batch(reads)).await?;
        Ok(answers.iter().filter_map(|value| text(value).and_then(wire::parse_node_info)).collect())
    }
}

/// The bookkeeping fields of a room's hash that are not members.
const BOOKKEEPING: [&str; 4] = ["\0seq", "\0cap", "\0seal", "\0born"];

/// How many of the bookkeeping fields an `HMGET` of [`BOOKKEEPING`] found.
fn bookkeeping_count(values: &Value) -> usize {
    match values {
        Value::Array(values) => values.iter().filter(|v| !matches!(v, Value::Nil)).count(),
        _ => 0,
    }
}

/// A room's summary from its `HLEN` and its bookkeeping fields; `None` if it has no members.
fn summary(name: &str, length: &Value, bookkeeping: &Value, max: u32) -> Option<RoomSummary> {
    let members = usize::try_from(int(length)).ok()?.checked_sub(bookkeeping_count(bookkeeping))?;
    if members == 0 {
        return None;
    }
    let field = |i: usize| match bookkeeping {
        Value::Array(values) => values.get(i).and_then(text),
        _ => None,
    };
    Some(RoomSummary {
        name: name.to_owned(),
        members,
        capacity: field(1).and_then(|c| c.parse::<u32>().ok()).map(|c| c.min(max)),
        created: field(3).and_then(|t| t.parse().ok()).unwrap_or(0),
    })
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// A hash as `HGETALL` answers it, as a flat list of fields and values.
fn fields(hash: Value) -> Vec<Value> {
    // RESP3 answers HGETALL with a map; scripts (and RESP2) with a flat array.
    match hash {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Array(fields) => fields,
        _ => Vec::new(),
    }
}

impl Broker for RedisBroker {
    fn node(&self) -> NodeId {
        self.node
    }

    /// Starts the broker's tasks: the publisher, the receiver of pushes, presence.
    fn start(self: Arc<Self>, events: Arc<dyn RoomEvents>) {
        let _ = self.events.set(Arc::downgrade(&events));
        let Some(wiring) = self.wiring.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            return;
        };
        tokio::spawn(publish(events.clone(), self.clone(), wiring.outgoing));
        tokio::spawn(receive(events.clone(), self.clone(), wiring.pushes));
        tokio::spawn(presence::run(events, self));
    }

    fn acquire<'a>(&'a self, room: &'a Arc<str>) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.subscribe_room(room).boxed()
    }

    fn release(&self, room: Arc<str>) {
        self.unsubscribe_room(room);
    }

    fn join<'a>(
        &'a self,
        room: &'a Arc<str>,
        member: &'a Listed,
        capacity: Option<u32>,
        seal: bool,
    ) -> BoxFuture<'a, Result<Verdict, BrokerError>> {
        self.admit(room, member, capacity, seal).boxed()
    }

    fn leave<'a>(&'a self, room: &'a Arc<str>, peer: PeerId) -> BoxFuture<'a, Vacated> {
        self.remove(room, peer).boxed()
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        self.list(room).boxed()
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, BrokerError>> {
        self.list_rooms().boxed()
    }

    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Option<RoomDetail>, BrokerError>> {
        self.room_detail(room).boxed()
    }

    fn close<'a>(&'a self, room: &'a Arc<str>) -> BoxFuture<'a, Result<Vec<Listed>, BrokerError>> {
        self.close_room(room).boxed()
    }

    fn command<'a>(&'a self, peer: PeerId, command: &'a Command) -> BoxFuture<'a, Result<bool, BrokerError>> {
        self.ask(peer, command).boxed()
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BrokerError>> {
        self.list_nodes().boxed()
    }

    fn forward(&self, node: NodeId, target: PeerId, sender: PeerId, frame: &str) -> Result<(), BrokerError> {
        self.route(node, target, sender, self.node, frame)
    }

    fn keeps_sessions(&self) -> bool {
        self.is_up()
    }

    fn open_session(&self, record: &SessionRecord) -> BoxFuture<'_, ()> {
        for command in self.open_commands(record) {
            let _ = self.send(Outgoing::Command(command));
        }
        async move {
            self.sent().await;
        }
        .boxed()
    }

    fn session_rooms(&self, peer: PeerId, rooms: &[Arc<str>]) {
        let _ = self.send(Outgoing::Command(self.rooms_command(peer, rooms)));
    }

    fn end_session(&self, peer: PeerId, token: PeerId) {
        for command in self.end_commands(peer, token) {
            let _ = self.send(Outgoing::Command(command));
        }
    }

    fn park(&self, parked: Parked) -> BoxFuture<'_, bool> {
        // From now on a relay for the peer that reaches this node is passed on
        // to its parked queue, behind the park (the hub no longer has the peer).
        self.parked_here.insert(parked.record.id);
        let (done, parked_now) = oneshot::channel();
        let queued = self.send(Outgoing::Park(Box::new(parked), done)).is_ok();
        async move { queued && parked_now.await.unwrap_or(false) }.boxed()
    }

    fn find_session(&self, token: PeerId) -> BoxFuture<'_, Result<Option<PeerId>, BrokerError>> {
        self.find(token).boxed()
    }

    fn claim(&self, token: PeerId, peer: PeerId) -> BoxFuture<'_, Result<Claim, BrokerError>> {
        self.claim_now(token, peer).boxed()
    }

    fn adopt<'a>(&'a self, room: &'a Arc<str>, peer: PeerId) -> BoxFuture<'a, Result<Option<Adopted>, BrokerError>> {
        self.adopt_record(room, peer).boxed()
    }

    fn evict(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<Vec<(Arc<str>, Listed, Vacated)>>, BrokerError>> {
        self.evict_now(peer).boxed()
    }

    fn broadcast(&self, room: &str, sender: PeerId, frame: &str) -> Result<(), BrokerError> {
        self.enqueue(self.keys.room_channel(room), wire::broadcast(self.node, sender, frame), None)
    }

    fn state(&self) -> Option<&'static str> {
        Some(if self.is_up() { "up" } else { "down" })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        self.deregister().boxed()
    }
}

/// A Redis error, as the broker reports it.
fn failed(error: redis::RedisError) -> BrokerError {
    BrokerError::Failed(error.to_string())
}

/// Sends queued relays and broadcasts, in order, pipelined in batches; parks
/// and relays to parked peers cut a batch and are done on their own, in their place.
async fn publish(events: Arc<dyn RoomEvents>, broker: Arc<RedisBroker>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut run: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    let mut link = broker.link.clone();
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        for item in batch.drain(..) {
            match item {
                Outgoing::Park(parked, done) => {
                    flush(&*events, &broker, &mut link, &mut run).await;
                    let parked_now = broker.park_now(&parked).await;
                    if let Err(error) = &parked_now {
                        warn!(%error, peer = %parked.record.id, "could not park a session in Redis");
                    }
                    let _ = done.send(parked_now.is_ok());
                }
                Outgoing::Push(push, origin) => {
                    flush(&*events, &broker, &mut link, &mut run).await;
                    push_parked(&*events, &broker, &push, origin, None).await;
                }
                Outgoing::Done(done) => {
                    flush(&*events, &broker, &mut link, &mut run).await;
                    let _ = done.send(());
                }
                Outgoing::Leave(room, peer, done) => {
                    flush(&*events, &broker, &mut link, &mut run).await;
                    let _ = done.send(broker.remove_as(&room, peer, broker.node).await.map(|(vacated, _)| vacated));
                }
                other => run.push(other),
            }
        }
        flush(&*events, &broker, &mut link, &mut run).await;
    }
}

/// Sends a run of publishes and commands in one pipeline.
async fn flush(events: &dyn RoomEvents, broker: &RedisBroker, link: &mut Link, run: &mut Vec<Outgoing>) {
    if run.is_empty() {
        return;
    }
    let command = link.publish_command();
    let commands = run
        .iter()
        .filter_map(|item| match item {
            Outgoing::Publish { channel, payload, .. } => {
                let mut publish = redis::cmd(command);
                publish.arg(channel).arg(payload);
                Some(publish)
            }
            Outgoing::Command(command) => Some(command.clone()),
            _ => None,
        })
        .collect();
    match broker.call(link.batch(commands)).await {
        Ok(replies) => {
            broker.metrics.broker_published.increment(run.len() as u64);
            // A relay nobody heard: its node stopped or died. Routed again, in order.
            // One reply per item of the run, in order.
            for (item, reply) in run.iter_mut().zip(replies.iter()) {
                if let Outgoing::Publish { payload, origin, relay_to: Some(node), .. } = item {
                    if matches!(reply, Value::Int(0)) {
                        reroute(events, broker, *node, payload, origin.take()).await;
                    }
                }
            }
        }
        Err(error) => {
            debug!(%error, lost = run.len(), "publish failed; telling the senders");
            for item in run.iter() {
                if let Outgoing::Publish { origin: Some(origin), .. } = item {
                    let message = "the Redis broker is unreachable; the message was not delivered";
                    events.tell_error(origin.sender, ErrorCode::Unavailable, message, origin.rid.as_deref());
                }
            }
        }
    }
    run.clear();
}

/// A relay (or a notice about one) published to `node`'s inbox that nobody
/// heard: routed by its addressee's session instead (parked, or claimed by
/// another node), or a relay's sender is told the target is gone.
async fn reroute(events: &dyn RoomEvents, broker: &RedisBroker, node: NodeId, payload: &[u8], origin: Option<Origin>) {
    let push = match wire::parse_inbox(payload) {
        Some(InboxMessage::Relay { target, sender, sender_node, frame }) => {
            sessions::Push { target, sender, sender_node, frame: frame.to_owned(), notice: false }
        }
        Some(InboxMessage::Undeliverable { to, target, full, rid }) => notice(broker.node, to, target, full, rid),
        _ => return,
    };
    debug!(peer = %push.target, %node, "a message found nobody at its node; routing it by its addressee's session");
    push_parked(events, broker, &push, origin, Some(node)).await;
}

/// The `error` a sender is sent about its relay to `target`, as a push for its parked session.
fn notice(here: NodeId, to: PeerId, target: PeerId, full: bool, rid: Option<&str>) -> sessions::Push {
    let (code, message) = undelivered(target, full);
    let rid = rid.and_then(|rid| serde_json::from_str::<&RawValue>(rid).ok());
    let frame = switchboard_protocol::server::encode::error(code, &message, rid);
    sessions::Push { target: to, sender: to, sender_node: here, frame, notice: true }
}

/// Queues a relay in a parked peer's queue, or sends it on to the node that
/// claimed the peer meanwhile, before anything this node sends later. A
/// session owned by `unheard` (a node that did not hear its inbox) is as gone.
async fn push_parked(
    events: &dyn RoomEvents,
    broker: &RedisBroker,
    push: &sessions::Push,
    origin: Option<Origin>,
    unheard: Option<NodeId>,
) {
    let verdict = broker.push_now(push).await;
    let full = match verdict {
        Ok(Ok(None)) => return,
        Ok(Ok(Some(node))) if Some(node) == unheard => false,
        Ok(Ok(Some(node))) if node == broker.node => {
            if let Err(error) = events.deliver(push.target, &push.frame) {
                error == Undelivered::Full
            } else {
                return;
            }
        }
        Ok(Ok(Some(node))) => {
            let payload = wire::relay(push.target, push.sender, push.sender_node, &push.frame);
            let mut link = broker.link.clone();
            let mut publish = redis::cmd(link.publish_command());
            publish.arg(broker.keys.inbox(node)).arg(payload);
            match broker.call(link.batch(vec![publish])).await {
                Ok(replies) if !matches!(replies.first(), Some(Value::Int(0))) => return,
                _ => false,
            }
        }
        Ok(Err(full)) => full,
        Err(_) => false,
    };
    if push.notice {
        return; // about a relay of a peer that is gone too
    }
    let rid = peek_rid(&push.frame);
    match origin {
        Some(origin) => {
            let (code, message) = undelivered(push.target, full);
            events.tell_error(origin.sender, code, &message, origin.rid.as_deref());
        }
        None => {
            let notice = wire::undeliverable(push.sender, push.target, full, rid.map(RawValue::get));
            let _ = broker.notify(push.sender_node, notice);
        }
    }
}

/// What a sender is told about a relay that did not reach `target`.
fn undelivered(target: PeerId, full: bool) -> (ErrorCode, String) {
    if full {
        (ErrorCode::DeliveryFailed, format!("peer `{target}` is not reading its messages and is being disconnected"))
    } else {
        (ErrorCode::UnknownTarget, format!("peer `{target}` left before the message reached it"))
    }
}

/// Applies what arrives on subscribed channels.
async fn receive(events: Arc<dyn RoomEvents>, broker: Arc<RedisBroker>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let [channel, payload] = push.data.as_slice() {
                    if let (Some(channel), Value::BulkString(payload)) = (text(channel), payload) {
                        broker.metrics.broker_received.increment(1);
                        on_message(&*events, &broker, channel, payload);
                    }
                }
            }
            PushKind::Disconnection => broker.mark_down(&BrokerError::Down),
            PushKind::Other(kind) if kind == DRAINED => broker.drained.notify_waiters(),
            PushKind::Other(kind) if kind == LAPSED => {
                if let Some(Value::Int(number)) = push.data.first() {
                    let number = u64::try_from(*number).unwrap_or_default();
                    broker.holds.passed(number, |room, held| replay(&*events, &broker, room, held));
                }
            }
            _ => {}
        }
    }
}

fn on_message(events: &dyn RoomEvents, broker: &RedisBroker, channel: &str, payload: &[u8]) {
    match broker.keys.parse_channel(channel) {
        Some(Channel::Room(room)) => match wire::parse_room(payload).and_then(room_event) {
            Some(event) => {
                if let RoomEvent::Moved { peer, from, to, .. } = event {
                    broker.on_moved(peer, from, to);
                }
                let departed = match event {
                    RoomEvent::Left { peer, .. } => Some(peer),
                    _ => None,
                };
                match broker.holds.arrived(room, departed, payload, || broker.fences.number()) {
                    Arrival::Apply => events.apply(room, event),
                    Arrival::Queued => {}
                    Arrival::Fence(fences) => {
                        let peer = departed.unwrap_or_else(PeerId::random);
                        for (node, number) in fences {
                            broker.fence_passing(node, number, peer);
                        }
                    }
                }
            }
            None => warn!(%room, "unreadable room event from Redis"),
        },
        Some(Channel::Inbox) => match wire::parse_inbox(payload) {
            Some(InboxMessage::Relay { target, sender, sender_node, frame }) => {
                if let Err(error) = events.deliver(target, frame) {
                    // Sent before its sender heard that this node parked the peer: passed on.
                    if error == Undelivered::Gone && broker.parked_here.contains(target) {
                        let _ = broker.route_now(NodeId::parked(), target, sender, sender_node, frame);
                        return;
                    }
                    let full = error == Undelivered::Full;
                    let notice = wire::undeliverable(sender, target, full, peek_rid(frame).map(RawValue::get));
                    let _ = broker.notify(sender_node, notice);
                }
            }
            Some(InboxMessage::Undeliverable { to, target, full, rid }) => {
                let (code, message) = undelivered(target, full);
                let parsed = rid.and_then(|rid| serde_json::from_str::<&RawValue>(rid).ok());
                // A sender this node parked lately hears of it where it resumes.
                if !events.tell_error(to, code, &message, parsed) && broker.parked_here.contains(to) {
                    let _ = broker.send(Outgoing::Push(Box::new(notice(broker.node, to, target, full, rid)), None));
                }
            }
            Some(InboxMessage::Fence { peer, asker, fence }) => {
                // Behind whatever this node passed on for the relays before the fence.
                let _ = broker.enqueue(broker.keys.inbox(asker), wire::fenced(peer, fence), None);
            }
            Some(InboxMessage::Fenced { peer, fence }) => {
                if !broker.holds.passed(fence, |room, held| replay(events, broker, room, held)) {
                    broker.lower_fence(peer, fence);
                }
            }
            Some(InboxMessage::Command { peer, asker, request, command }) => {
                // A session this node has parked (or is parking: its park may still
                // be queued) is being handed over already: the claimer waits for the
                // park rather than taking it as a dead node's.
                let found = events.command(peer, &command)
                    || (command == Command::HandOver && broker.parked_here.contains(peer));
                let _ = broker.enqueue(broker.keys.inbox(asker), wire::answer(request, found), None);
            }
            Some(InboxMessage::Answer { request, found }) => broker.answered(request, found),
            None => warn!("unreadable inbox message from Redis"),
        },
        None => {}
    }
}

/// Applies a room's held messages, in order, once their fences are passed.
fn replay(events: &dyn RoomEvents, broker: &RedisBroker, room: &str, held: Vec<Vec<u8>>) {
    for payload in held {
        if let Some(event) = wire::parse_room(&payload).and_then(room_event) {
            events.apply(room, event);
        }
    }
    debug!(%room, node = %broker.node, "a room's held events are released");
}

/// A room message from Redis as the hub's event; `None` if its record is unreadable.
fn room_event(message: RoomMessage<'_>) -> Option<RoomEvent<'_>> {
    Some(match message {
        RoomMessage::Joined { seq, peer, record, restored } => {
            RoomEvent::Joined { seq, member: member(peer, &record)?, restored }
        }
        RoomMessage::Left { seq, peer } => RoomEvent::Left { seq, peer },
        RoomMessage::Closed { seq } => RoomEvent::Closed { seq },
        RoomMessage::Moved { seq, peer, from, to } => RoomEvent::Moved { seq, peer, from, to },
        RoomMessage::Broadcast { node, sender, frame } => RoomEvent::Broadcast { node, sender, frame },
    })
}

/// A member from its record.
fn member(id: PeerId, record: &wire::Record<'_>) -> Option<Listed> {
    let user = record.user.as_deref().map(Arc::from);
    let meta = record.meta.map(RawValue::to_owned);
    Some(Listed { id, node: NodeId::parse(record.node)?, shown: shown(user, meta), joined: record.joined })
}

/// Reads a room's hash (as `HGETALL` returns it) into members, oldest first.
fn listed(fields: &[Value]) -> Vec<Listed> {
    let mut members: Vec<(u64, Listed)> = fields
        .chunks_exact(2)
        .filter_map(|pair| {
            let id = PeerId::parse(text(&pair[0])?)?;
            let record = wire::parse_record(text(&pair[1])?)?;
            Some((record.order, member(id, &record)?))
        })
        .collect();
    members.sort_by_key(|(order, _)| *order);
    members.into_iter().map(|(_, listed)| listed).collect()
}

fn del(key: String) -> redis::Cmd {
    let mut del = redis::cmd("DEL");
    del.arg(key);
    del
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}
