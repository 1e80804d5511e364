//! Resumable sessions kept in Redis (see [`crate::broker::parking`]), so that
//! a session lost on one node is resumed on any.
//!
//! A session's hash and its queue share the peer's hash tag, so each script
//! below runs on one slot. Its room records live under the rooms' own tags and
//! are moved with [`super::scripts::MOVE`], one room at a time. Every change to
//! a session goes through the node's one publisher (see `super::publish`), so
//! a node's writes for a session, and its relays to it, reach Redis in the
//! order it made them: a relay routed to a parked peer after its park is
//! queued after the frames the park took along.
//!
//! What a node does not write is what it loses if it dies (`kill -9`): the
//! frames still in its peers' send queues, and relays other nodes sent to it
//! that it had not yet delivered. Everything else (the session, its rooms, a
//! parked queue) is in Redis already.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, Value};
use tracing::{debug, info};

use super::{listed, text, RedisBroker};
use crate::broker::parking::{Adopted, Claim, Known, Parked, SessionRecord, Taken};
use crate::broker::{now_ms, BrokerError, Command, Listed, Vacated};
use crate::peer_id::{NodeId, PeerId};

/// How long a claim waits for a live session's node to park it.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How often a claim looks whether the session has been parked.
const HANDOVER_POLL: Duration = Duration::from_millis(10);
/// A parked session's hash outlives its deadline by this much, so the node
/// that expires it still finds the rooms it must leave.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);
/// Most parked sessions one heartbeat expires.
const EXPIRE_BATCH: usize = 64;

/// Parks a session. It is marked `parking` until its room records have moved
/// too (see [`RedisBroker::park_now`]): relays to it are queued from the
/// start, but a claim waits for the whole park, so that the park's last steps
/// never land after the claimer's.
///
/// A node parks only a session it still owns: one that another node took
/// meanwhile (as if this node were dead) is that node's, and the park is
/// dropped (returns 0) rather than undoing the claim.
///
/// KEYS: session, queue. ARGV: token, identity, rooms (JSON), most frames,
/// most bytes, hash lifetime (ms), deadline (ms since the epoch), the rooms'
/// members it knows (JSON), the parking node, then the frames, oldest first.
static PARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s, q = KEYS[1], KEYS[2]
local owner = redis.call('HGET', s, 'owner')
if owner and owner ~= ARGV[9] then return 0 end
redis.call('DEL', q)
redis.call('HSET', s, 'token', ARGV[1], 'identity', ARGV[2], 'rooms', ARGV[3], 'owner', '',
  'maxm', ARGV[4], 'maxb', ARGV[5], 'until', ARGV[7], 'known', ARGV[8], 'parking', '1', 'by', ARGV[9])
redis.call('HDEL', s, 'over')
local bytes = 0
for i = 10, #ARGV do
  redis.call('RPUSH', q, ARGV[i])
  bytes = bytes + #ARGV[i]
end
redis.call('HSET', s, 'bytes', bytes)
redis.call('PEXPIRE', s, ARGV[6])
if #ARGV >= 10 then redis.call('PEXPIRE', q, ARGV[6]) end
return 1
"#,
    )
});

/// Queues a relay for a parked peer, within its limits; or says where the
/// session went.
///
/// KEYS: session, queue. ARGV: the frame. Returns `{"ok"}`, `{"full"}`
/// (it did not fit: the session has lost a message), `{"gone"}` (no such
/// session) or `{"at", node}` (a node claimed it: send it there).
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s, q = KEYS[1], KEYS[2]
local owner = redis.call('HGET', s, 'owner')
if not owner then return {'gone'} end
if owner ~= '' then return {'at', owner} end
if redis.call('HGET', s, 'over') then return {'full'} end
local n = redis.call('LLEN', q)
local bytes = tonumber(redis.call('HGET', s, 'bytes') or '0')
if n + 1 > tonumber(redis.call('HGET', s, 'maxm')) or (n > 0 and bytes + #ARGV[1] > tonumber(redis.call('HGET', s, 'maxb'))) then
  redis.call('HSET', s, 'over', '1')
  redis.call('DEL', q)
  return {'full'}
end
redis.call('RPUSH', q, ARGV[1])
redis.call('HSET', s, 'bytes', bytes + #ARGV[1])
redis.call('PEXPIRE', q, redis.call('PTTL', s))
return {'ok'}
"#,
    )
});

/// Claims a session for a node.
///
/// KEYS: session, queue. ARGV: token, the claiming node, a (dead) owner the
/// caller takes it from anyway ("" for none), now (ms), "1" to take a session
/// whose park never finished (its node died parking it). Returns
/// `{"unknown"}`, `{"live", owner}` (a node holds it), `{"parking"}`, or
/// `{"ok", identity, rooms, over, owner it had ("" if parked), known members,
/// the node that parked it, frames...}`.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s, q = KEYS[1], KEYS[2]
if redis.call('HGET', s, 'token') ~= ARGV[1] then return {'unknown'} end
local owner = redis.call('HGET', s, 'owner')
if owner ~= '' and owner ~= ARGV[3] then return {'live', owner} end
if owner == '' and ARGV[5] ~= '1' and redis.call('HGET', s, 'parking') then return {'parking'} end
if owner == '' and tonumber(redis.call('HGET', s, 'until') or '0') < tonumber(ARGV[4]) then return {'unknown'} end
local answer = {'ok', redis.call('HGET', s, 'identity'), redis.call('HGET', s, 'rooms'), redis.call('HGET', s, 'over') or '', owner,
  redis.call('HGET', s, 'known') or '[]', redis.call('HGET', s, 'by') or ''}
for _, frame in ipairs(redis.call('LRANGE', q, 0, -1)) do table.insert(answer, frame) end
redis.call('DEL', q)
redis.call('HSET', s, 'owner', ARGV[2], 'token', '', 'bytes', 0)
redis.call('HDEL', s, 'over', 'until', 'maxm', 'maxb', 'known', 'parking', 'by')
redis.call('PERSIST', s)
return answer
"#,
    )
});

/// Ends a session held by `owner` ("": a parked one), taking it out of Redis.
///
/// KEYS: session, queue. ARGV: owner, and for a parked one the time (ms) its
/// deadline must have passed ("" for now). Returns `{}` if it is not so, else
/// `{token, rooms}`.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s, q = KEYS[1], KEYS[2]
if redis.call('HGET', s, 'owner') ~= ARGV[1] then return {} end
if ARGV[2] ~= '' and tonumber(redis.call('HGET', s, 'until') or '0') > tonumber(ARGV[2]) then return {} end
local answer = {redis.call('HGET', s, 'token'), redis.call('HGET', s, 'rooms')}
redis.call('DEL', s, q)
return answer
"#,
    )
});

/// What the broker remembers of the sessions this node parked, for relays
/// that reach it after (sent before their senders heard of the move).
#[derive(Default)]
pub struct ParkedHere {
    peers: std::sync::Mutex<std::collections::HashMap<PeerId, std::time::Instant>>,
}

impl ParkedHere {
    /// Notes that this node is parking `peer`.
    pub fn insert(&self, peer: PeerId) {
        self.lock().insert(peer, std::time::Instant::now());
    }

    /// Whether this node parked nobody lately.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Whether `peer` was parked by this node lately.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.lock().contains_key(&peer)
    }

    /// Forgets sessions parked longer ago than any relay can be in flight.
    pub fn prune(&self, older_than: Duration) {
        self.lock().retain(|_, at| at.elapsed() < older_than);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PeerId, std::time::Instant>> {
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A relay for a parked peer, waiting in the publisher's queue.
pub struct Push {
    pub target: PeerId,
    pub sender: PeerId,
    pub sender_node: NodeId,
    pub frame: String,
    /// A notice for the target (an `error` about its own relay), not a relay:
    /// if it cannot be queued nobody is told.
    pub notice: bool,
}

fn rooms_json(rooms: &[Arc<str>]) -> String {
    let names: Vec<&str> = rooms.iter().map(|r| &**r).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_rooms(json: &str) -> Vec<Arc<str>> {
    serde_json::from_str::<Vec<String>>(json).unwrap_or_default().into_iter().map(Arc::from).collect()
}

fn known_json(known: &Known) -> String {
    let rooms: Vec<(&str, Vec<&str>)> =
        known.iter().map(|(room, peers)| (&**room, peers.iter().map(PeerId::as_str).collect())).collect();
    serde_json::to_string(&rooms).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_known(json: &str) -> Known {
    serde_json::from_str::<Vec<(String, Vec<String>)>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|(room, peers)| (Arc::from(room), peers.iter().filter_map(|p| PeerId::parse(p)).collect()))
        .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBroker {
    /// The commands that record a live session (queued behind the node's relays).
    pub(super) fn open_commands(&self, record: &SessionRecord) -> Vec<redis::Cmd> {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.session(record.id))
            .arg("token")
            .arg(record.token.as_str())
            .arg("owner")
            .arg(self.node.as_str())
            .arg("identity")
            .arg(&record.identity)
            .arg("rooms")
            .arg(rooms_json(&record.rooms));
        let mut persist = redis::cmd("PERSIST");
        persist.arg(self.keys.session(record.id));
        let mut resume = redis::cmd("SET");
        resume.arg(self.keys.resume(record.token)).arg(record.id.as_str());
        let mut index = redis::cmd("SADD");
        index.arg(self.keys.node_sessions(self.node.as_str())).arg(record.id.as_str());
        vec![hset, persist, resume, index]
    }

    /// The command that records a live session's rooms.
    pub(super) fn rooms_command(&self, peer: PeerId, rooms: &[Arc<str>]) -> redis::Cmd {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.session(peer)).arg("rooms").arg(rooms_json(rooms));
        hset
    }

    /// The commands that forget a session that ended.
    pub(super) fn end_commands(&self, peer: PeerId, token: PeerId) -> Vec<redis::Cmd> {
        let mut del = redis::cmd("DEL");
        del.arg(self.keys.session(peer)).arg(self.keys.queue(peer));
        let mut resume = redis::cmd("DEL");
        resume.arg(self.keys.resume(token));
        let mut index = redis::cmd("SREM");
        index.arg(self.keys.node_sessions(self.node.as_str())).arg(peer.as_str());
        vec![del, resume, index]
    }

    /// Parks a session, from the publisher (in order with this node's relays):
    /// its state and frames, then its room records, one room at a time.
    pub(super) async fn park_now(&self, parked: &Parked) -> Result<(), BrokerError> {
        let record = &parked.record;
        let peer = record.id;
        let lifetime = parked.grace + EXPIRY_MARGIN;
        let deadline = now_ms().saturating_add(millis(parked.grace));
        let mut link = self.link.clone();
        let mut invocation = PARK.key(self.keys.session(peer));
        invocation
            .key(self.keys.queue(peer))
            .arg(record.token.as_str())
            .arg(&record.identity)
            .arg(rooms_json(&record.rooms))
            .arg(parked.messages)
            .arg(parked.bytes)
            .arg(millis(lifetime))
            .arg(deadline)
            .arg(known_json(&parked.known))
            .arg(self.node.as_str());
        for frame in &parked.frames {
            invocation.arg(frame);
        }
        if self.call(invocation.invoke_async::<i64>(&mut link)).await? == 0 {
            debug!(%peer, "not parked: another node has taken the session");
            return Ok(());
        }
        let mut resume = redis::cmd("SET");
        resume.arg(self.keys.resume(record.token)).arg(peer.as_str()).arg("PX").arg(millis(lifetime));
        let mut expiry = redis::cmd("ZADD");
        expiry.arg(self.keys.parked()).arg(deadline).arg(peer.as_str());
        let mut index = redis::cmd("SREM");
        index.arg(self.keys.node_sessions(self.node.as_str())).arg(peer.as_str());
        self.call(link.batch(vec![resume, expiry, index])).await?;
        for room in &record.rooms {
            self.move_record(room, peer, NodeId::parked()).await?;
        }
        // Parked: a claim may take it now (unless one took it already, forced).
        let mut parked_now = redis::cmd("HDEL");
        parked_now.arg(self.keys.session(peer)).arg("parking");
        self.call(parked_now.query_async::<()>(&mut link)).await?;
        debug!(%peer, rooms = record.rooms.len(), frames = parked.frames.len(), "session parked in Redis");
        Ok(())
    }

    /// Moves `peer`'s record in `room` to `to`; `None` if it is not a member.
    async fn move_record(&self, room: &str, peer: PeerId, to: NodeId) -> Result<Option<Adopted>, BrokerError> {
        let mut link = self.link.clone();
        let mut invocation = super::scripts::MOVE.key(self.keys.room(room));
        invocation.arg(peer.as_str()).arg(to.as_str()).arg(self.keys.room_channel(room)).arg(link.publish_command());
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        match answer.as_slice() {
            [Value::BulkString(status), capacity, Value::Int(seq), Value::Array(fields)] if status == b"ok" => {
                let capacity =
                    text(capacity).and_then(|c| c.parse::<u32>().ok()).map(|c| c.min(self.max_peers_per_room));
                let seq = u64::try_from(*seq).unwrap_or(0);
                Ok(Some(Adopted { seq, capacity, members: listed(fields) }))
            }
            [Value::BulkString(status)] if status == b"gone" => Ok(None),
            _ => Err(BrokerError::Protocol),
        }
    }

    /// Moves a claimed session's record in `room` to this node. A session
    /// claimed from a node that may still pass relays on to it waits for
    /// them here: a departure this move found (told as `peer-left` after the
    /// relays already delivered, see `Hub::adopt`) comes after the departed
    /// peer's relays (see [`super::holds`]).
    pub(super) async fn adopt_record(&self, room: &str, peer: PeerId) -> Result<Option<Adopted>, BrokerError> {
        self.check_up()?;
        let adopted = self.move_record(room, peer, self.node).await?;
        if let Some(from) = self.holds.claimed_from(peer) {
            self.passed_on(from, peer).await;
        }
        Ok(adopted)
    }

    /// Queues a relay for a parked peer, from the publisher. Returns the
    /// script's verdict: `Ok(None)` queued, `Ok(Some(node))` claimed by that node.
    pub(super) async fn push_now(&self, push: &Push) -> Result<Result<Option<NodeId>, bool>, BrokerError> {
        let mut link = self.link.clone();
        let mut invocation = PUSH.key(self.keys.session(push.target));
        invocation.key(self.keys.queue(push.target)).arg(&push.frame);
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        Ok(match answer.as_slice() {
            [status] if text(status) == Some("ok") => Ok(None),
            [status] if text(status) == Some("full") => Err(true),
            [status, node] if text(status) == Some("at") => match text(node).and_then(NodeId::parse) {
                Some(node) => Ok(Some(node)),
                None => Err(false),
            },
            _ => Err(false),
        })
    }

    /// The peer a resume token resumes.
    pub(super) async fn find(&self, token: PeerId) -> Result<Option<PeerId>, BrokerError> {
        self.check_up()?;
        let mut link = self.link.clone();
        let peer: Option<String> =
            self.call(redis::cmd("GET").arg(self.keys.resume(token)).query_async(&mut link)).await?;
        Ok(peer.as_deref().and_then(PeerId::parse))
    }

    /// Takes a session for this node: parked, handed over by its live node,
    /// or left by a dead one.
    pub(super) async fn claim_now(&self, token: PeerId, peer: PeerId) -> Result<Claim, BrokerError> {
        self.check_up()?;
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        let mut take_from = String::new();
        let mut asked = false;
        loop {
            let late = tokio::time::Instant::now() >= deadline;
            let mut link = self.link.clone();
            let mut invocation = CLAIM.key(self.keys.session(peer));
            invocation
                .key(self.keys.queue(peer))
                .arg(token.as_str())
                .arg(self.node.as_str())
                .arg(&take_from)
                .arg(now_ms())
                .arg(if late { "1" } else { "" });
            let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
            match answer.as_slice() {
                [status, identity, rooms, over, owner, known, by, frames @ ..] if text(status) == Some("ok") => {
                    let rooms = parse_rooms(text(rooms).unwrap_or("[]"));
                    let owner = text(owner).unwrap_or_default().to_owned();
                    // Parked by another node, which passes on relays that still reach it:
                    // departures in its rooms wait behind them for a while.
                    if let Some(by) = text(by).and_then(NodeId::parse).filter(|by| owner.is_empty() && *by != self.node)
                    {
                        self.holds.claimed(peer, by, &rooms, self.timeout);
                    }
                    self.after_claim(token, peer, &owner).await;
                    let frames = frames.iter().filter_map(text).map(str::to_owned).collect();
                    let record =
                        SessionRecord { id: peer, token, identity: text(identity).unwrap_or("{}").to_owned(), rooms };
                    let overflowed = text(over).is_some_and(|o| !o.is_empty());
                    let known = parse_known(text(known).unwrap_or("[]"));
                    return Ok(Claim::Taken(Taken { record, frames, overflowed, known }));
                }
                [status, owner] if text(status) == Some("live") => {
                    let owner = text(owner).unwrap_or_default().to_owned();
                    // This node's own live session was switched off by the local claim
                    // (`resume::Sessions::claim`), and its park is on its way.
                    if !asked && owner != self.node.as_str() {
                        asked = true;
                        // The node holding it switches its connection off and parks it; a
                        // node that does not answer is dead, and its session is taken as it is.
                        if !self.ask(peer, &Command::HandOver).await.unwrap_or(false) {
                            info!(%peer, node = %owner, "resuming a session whose node is gone");
                            take_from = owner;
                        }
                        continue;
                    }
                    if late {
                        take_from = owner;
                        continue;
                    }
                    tokio::time::sleep(HANDOVER_POLL).await;
                }
                // Its node is writing the park; a node that dies doing so is
                // not waited for past the handover's time.
                [status] if text(status) == Some("parking") => tokio::time::sleep(HANDOVER_POLL).await,
                _ => return Ok(Claim::Unknown),
            }
        }
    }

    /// The bookkeeping after a claim: the spent token, the expiry list, the indexes.
    async fn after_claim(&self, token: PeerId, peer: PeerId, owner: &str) {
        let mut link = self.link.clone();
        let mut resume = redis::cmd("DEL");
        resume.arg(self.keys.resume(token));
        let mut expiry = redis::cmd("ZREM");
        expiry.arg(self.keys.parked()).arg(peer.as_str());
        let mut index = redis::cmd("SADD");
        index.arg(self.keys.node_sessions(self.node.as_str())).arg(peer.as_str());
        let mut commands = vec![resume, expiry, index];
        if !owner.is_empty() {
            let mut old = redis::cmd("SREM");
            old.arg(self.keys.node_sessions(owner)).arg(peer.as_str());
            commands.push(old);
        }
        if let Err(error) = self.call(link.batch(commands)).await {
            debug!(%error, %peer, "bookkeeping after a claim failed");
        }
    }

    /// Takes a session held by `owner` ("" for parked, whose deadline must have
    /// passed `due` unless it is `None`) out of Redis, and its records out of
    /// their rooms. Returns what it left.
    async fn take(
        &self,
        peer: PeerId,
        owner: &str,
        due: Option<u64>,
    ) -> Result<Option<Vec<(Arc<str>, Listed, Vacated)>>, BrokerError> {
        let mut link = self.link.clone();
        let mut invocation = TAKE.key(self.keys.session(peer));
        invocation.key(self.keys.queue(peer)).arg(owner).arg(due.map(|d| d.to_string()).unwrap_or_default());
        let answer: Vec<Value> = self.call(invocation.invoke_async(&mut link)).await?;
        let [token, rooms] = answer.as_slice() else { return Ok(None) };
        let mut forget = Vec::new();
        if let Some(token) = text(token).and_then(PeerId::parse) {
            let mut resume = redis::cmd("DEL");
            resume.arg(self.keys.resume(token));
            forget.push(resume);
        }
        let mut expiry = redis::cmd("ZREM");
        expiry.arg(self.keys.parked()).arg(peer.as_str());
        forget.push(expiry);
        self.call(link.batch(forget)).await?;
        let record_node = if owner.is_empty() { NodeId::parked() } else { NodeId::parse(owner).unwrap_or(self.node) };
        let mut left = Vec::new();
        for room in parse_rooms(text(rooms).unwrap_or("[]")) {
            let (vacated, member) = self.remove_as(&room, peer, record_node).await?;
            if let Some(member) = member {
                left.push((room, member, vacated));
            }
        }
        Ok(Some(left))
    }

    /// Ends a parked session now (the server API removed it).
    pub(super) async fn evict_now(
        &self,
        peer: PeerId,
    ) -> Result<Option<Vec<(Arc<str>, Listed, Vacated)>>, BrokerError> {
        self.check_up()?;
        self.take(peer, "", None).await
    }

    /// Ends the parked sessions whose grace period is over, whichever node
    /// parked them: each is taken by one node, which tells its rooms.
    pub(super) async fn expire_parked(&self, events: &dyn crate::broker::RoomEvents) -> Result<(), BrokerError> {
        let mut link = self.link.clone();
        let now = now_ms();
        let mut due = redis::cmd("ZRANGEBYSCORE");
        due.arg(self.keys.parked()).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(EXPIRE_BATCH);
        let peers: Vec<String> = self.call(due.query_async(&mut link)).await?;
        for peer in peers.iter().filter_map(|p| PeerId::parse(p)) {
            match self.take(peer, "", Some(now)).await? {
                Some(left) => {
                    debug!(%peer, rooms = left.len(), "parked session expired");
                    self.metrics.resume_expired.increment(1);
                    for (room, member, vacated) in left {
                        events.expired(&room, member, vacated.emptied);
                    }
                }
                None => {
                    // Claimed, or another node expired it: only its entry is left.
                    let mut expiry = redis::cmd("ZREM");
                    expiry.arg(self.keys.parked()).arg(peer.as_str());
                    self.call(expiry.query_async::<()>(&mut link)).await?;
                }
            }
        }
        Ok(())
    }

    /// Forgets the live sessions of a node that died, and takes them out of
    /// their rooms: their clients start new sessions. Done before the node's
    /// other peers are reaped, so that once a room hears `peer-left` for one
    /// of them its token resumes nothing. Returns how many, and what they left.
    #[allow(clippy::type_complexity)]
    pub(super) async fn drop_sessions_of(
        &self,
        node: &str,
    ) -> Result<(usize, Vec<(Arc<str>, Listed, Vacated)>), BrokerError> {
        let mut link = self.link.clone();
        let peers: Vec<String> =
            self.call(redis::cmd("SMEMBERS").arg(self.keys.node_sessions(node)).query_async(&mut link)).await?;
        let mut dropped = 0;
        let mut left = Vec::new();
        for peer in peers.iter().filter_map(|p| PeerId::parse(p)) {
            if let Some(rooms) = self.take(peer, node, None).await? {
                dropped += 1;
                left.extend(rooms);
            }
        }
        let mut forget = redis::cmd("DEL");
        forget.arg(self.keys.node_sessions(node));
        self.call(forget.query_async::<()>(&mut link)).await?;
        Ok((dropped, left))
    }
}
