//! Heartbeats, dead-node clean-up, and recovery after a Redis outage.
//!
//! Every node beats five times per `node-ttl`: it refreshes its `alive` key
//! (which expires after `node-ttl`) and its entry in the set of nodes. On each
//! beat it also looks for nodes whose `alive` key has expired; one survivor
//! takes a short lock per dead node and runs the reap script on each room the
//! dead node had peers in, which removes them and publishes `peer-left`.
//!
//! A beat that fails marks the broker down. The first beat that gets through
//! afterwards re-registers the node: it subscribes its inbox (again), writes its
//! peers back into their rooms with the sync script (Redis may have restarted
//! empty, or this node may have been reaped while cut off), refreshes its mirror
//! of every room from the script's answer, and only then marks the broker up.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::{interval, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::{listed, scripts, wire, RedisBroker};
use crate::broker::{meta_of, user_of, BrokerError, Listed, RoomEvents};
use crate::peer_id::PeerId;

/// How long a survivor holds the lock on reaping one dead node.
const REAP_LOCK: Duration = Duration::from_secs(30);
/// How long this node passes on relays for a session it parked: longer than
/// any relay sent before the move can take to arrive.
const PARKED_HERE_FOR: Duration = Duration::from_secs(60);
/// Every this many beats, forget index entries for rooms this node has left.
const PRUNE_EVERY: u32 = 60;

/// Beats until the process ends.
pub async fn run(events: Arc<dyn RoomEvents>, broker: Arc<RedisBroker>) {
    let mut beats = interval(broker.node_ttl / 5);
    beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut inbox_subscribed = false;
    let mut count: u32 = 0;
    loop {
        beats.tick().await;
        count = count.wrapping_add(1);
        let result = async {
            let newly_registered = beat(&broker, &*events).await?;
            if !inbox_subscribed {
                let mut link = broker.link.clone();
                broker.call(link.subscribe(&broker.keys.inbox(broker.node))).await?;
                inbox_subscribed = true;
            }
            let has_dirty = !broker.lock_dirty().is_empty();
            if !broker.is_up() || newly_registered || has_dirty {
                resync(&events, &broker).await?;
                broker.mark_up();
            }
            reap_dead(&broker, &*events).await?;
            broker.expire_parked(&*events).await?;
            broker.parked_here.prune(PARKED_HERE_FOR);
            broker.holds.prune();
            if count % PRUNE_EVERY == 0 {
                prune_index(&broker).await?;
            }
            Ok::<_, BrokerError>(())
        }
        .await;
        if let Err(error) = result {
            debug!(%error, "heartbeat failed");
        }
    }
}

/// Refreshes this node's registration, and what the server API shows of it.
/// Returns whether the node was missing from the set of nodes: reaped by the
/// others, or Redis lost its data.
async fn beat(broker: &RedisBroker, events: &dyn RoomEvents) -> Result<bool, BrokerError> {
    let node = broker.node.as_str();
    let mut link = broker.link.clone();
    let ttl_ms = u64::try_from(broker.node_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut alive = redis::cmd("SET");
    alive.arg(broker.keys.alive(node)).arg(1).arg("PX").arg(ttl_ms);
    let mut register = redis::cmd("SADD");
    register.arg(broker.keys.nodes()).arg(node);
    let mut info = redis::cmd("SET");
    info.arg(broker.keys.node_info(node)).arg(wire::node_info(&events.node_info())).arg("PX").arg(ttl_ms);
    let answers = broker.call(link.batch(vec![alive, register, info])).await?;
    Ok(matches!(answers.get(1), Some(Value::Int(1))))
}

/// Writes this node's peers back into their rooms and re-reads each room.
async fn resync(events: &Arc<dyn RoomEvents>, broker: &Arc<RedisBroker>) -> Result<(), BrokerError> {
    let node = broker.node.as_str();
    let mut rooms = events.local_members();
    let dirty: Vec<Arc<str>> = broker.lock_dirty().iter().cloned().collect();
    for room in dirty {
        if !rooms.iter().any(|(name, _)| *name == room) {
            rooms.push((room, Vec::new()));
        }
    }
    let mut link = broker.link.clone();
    for (room, members) in &rooms {
        if !members.is_empty() {
            let mut index = redis::cmd("SADD");
            index.arg(broker.keys.node_rooms(node)).arg(&**room);
            broker.call(index.query_async::<()>(&mut link)).await?;
        }
        let mut invocation = scripts::SYNC.key(broker.keys.room(room));
        invocation.arg(node).arg(broker.keys.room_channel(room)).arg(link.publish_command());
        for member in members {
            invocation.arg(member.id.as_str()).arg(record(broker, member));
        }
        let (seq, fields): (u64, Vec<Value>) = broker.call(invocation.invoke_async(&mut link)).await?;
        let missing = events.resync(room, seq, listed(&fields));
        broker.lock_dirty().remove(room);
        if !missing.is_empty() {
            tokio::spawn(confirm_gone(events.clone(), broker.clone(), room.clone(), missing));
        }
    }
    if !rooms.is_empty() {
        info!(rooms = rooms.len(), "re-registered this node's peers with Redis");
    }
    broker.metrics.broker_resyncs.increment(1);
    Ok(())
}

/// Members a resync did not find may only be waiting for their own node to write
/// them back: give every node a heartbeat period to do so, then drop (and
/// announce) those still missing.
async fn confirm_gone(events: Arc<dyn RoomEvents>, broker: Arc<RedisBroker>, room: Arc<str>, missing: Vec<PeerId>) {
    tokio::time::sleep(broker.node_ttl).await;
    match broker.list(&room).await {
        Ok(listed) => {
            let gone: Vec<PeerId> = missing.into_iter().filter(|id| !listed.iter().any(|m| m.id == *id)).collect();
            events.forget(&room, &gone);
        }
        Err(error) => debug!(%error, %room, "could not confirm departures; the next resync will"),
    }
}

/// Removes the peers of every node whose heartbeat has expired.
async fn reap_dead(broker: &RedisBroker, events: &dyn RoomEvents) -> Result<(), BrokerError> {
    let mut link = broker.link.clone();
    let nodes = broker.registered_nodes().await?;
    let others: Vec<&String> = nodes.iter().filter(|n| **n != broker.node.as_str()).collect();
    if others.is_empty() {
        return Ok(());
    }
    let checks = others
        .iter()
        .map(|node| {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(broker.keys.alive(node));
            exists
        })
        .collect();
    let alive: Vec<bool> = broker.call(link.batch(checks)).await?.iter().map(|v| !matches!(v, Value::Int(0))).collect();
    for (node, _) in others.into_iter().zip(alive).filter(|(_, alive)| !alive) {
        let lock_ms = u64::try_from(REAP_LOCK.as_millis()).unwrap_or(u64::MAX);
        let mut lock = redis::cmd("SET");
        lock.arg(broker.keys.reaper(node)).arg(broker.node.as_str()).arg("NX").arg("PX").arg(lock_ms);
        let taken: Option<String> = broker.call(lock.query_async(&mut link)).await?;
        if taken.is_none() {
            continue; // another survivor is on it
        }
        // Its resumable sessions first: once a room hears one of them left, its token resumes nothing.
        let (sessions, left) = broker.drop_sessions_of(node).await?;
        if sessions > 0 {
            info!(%node, sessions, "dropped the resumable sessions of a dead node");
        }
        let mut removed = left.len();
        for (room, member, vacated) in left {
            events.reaped(&room, vec![member], vacated.emptied);
        }
        let rooms: Vec<String> =
            broker.call(redis::cmd("SMEMBERS").arg(broker.keys.node_rooms(node)).query_async(&mut link)).await?;
        for room in &rooms {
            let (members, emptied) = broker.reap_room(room, node).await?;
            removed += members.len();
            events.reaped(room, members, emptied);
        }
        let mut forget = redis::cmd("DEL");
        forget.arg(broker.keys.node_rooms(node));
        let mut unregister = redis::cmd("SREM");
        unregister.arg(broker.keys.nodes()).arg(node.as_str());
        let mut info = redis::cmd("DEL");
        info.arg(broker.keys.node_info(node));
        broker.call(link.batch(vec![forget, unregister, info])).await?;
        broker.metrics.broker_reaped_peers.increment(removed as u64);
        warn!(%node, rooms = rooms.len(), peers = removed, "node stopped beating; removed its peers from their rooms");
    }
    Ok(())
}

/// Forgets index entries for rooms this node no longer has peers in. A join in
/// flight holds the room's interest, so its entry is kept; one that starts while
/// this runs is written back by the final `SADD`.
async fn prune_index(broker: &RedisBroker) -> Result<(), BrokerError> {
    let node = broker.node.as_str();
    let mut link = broker.link.clone();
    let indexed: Vec<String> =
        broker.call(redis::cmd("SMEMBERS").arg(broker.keys.node_rooms(node)).query_async(&mut link)).await?;
    let in_use = |room: &str, interest: &std::collections::HashMap<Arc<str>, usize>| {
        interest.contains_key(room) || broker.lock_dirty().contains(room)
    };
    let stale: Vec<String> = {
        let interest = broker.interest.lock().await;
        indexed.into_iter().filter(|room| !in_use(room, &interest)).collect()
    };
    if stale.is_empty() {
        return Ok(());
    }
    let mut srem = redis::cmd("SREM");
    srem.arg(broker.keys.node_rooms(node)).arg(&stale);
    broker.call(srem.query_async::<()>(&mut link)).await?;
    let current: Vec<String> = broker.interest.lock().await.keys().map(|room| room.to_string()).collect();
    if !current.is_empty() {
        let mut sadd = redis::cmd("SADD");
        sadd.arg(broker.keys.node_rooms(node)).arg(&current);
        broker.call(sadd.query_async::<()>(&mut link)).await?;
    }
    Ok(())
}

/// A local member's record, without the join number the script appends.
fn record(broker: &RedisBroker, member: &Listed) -> String {
    wire::record_prefix(broker.node, user_of(&member.shown), meta_of(&member.shown), member.joined)
}
