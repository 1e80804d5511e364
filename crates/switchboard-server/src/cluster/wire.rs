//! What nodes say to each other over pub/sub.
//!
//! Relays and broadcasts carry the client's frame as it will be delivered, after
//! a fixed-width header of peer ids: no JSON escaping on the hot path. Membership
//! events come from the Lua scripts as small JSON objects (see [`super::scripts`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::broker::{Command, NodeInfo};
use crate::outbox::Removal;
use crate::peer_id::{NodeId, PeerId, PEER_ID_LEN};

/// A message on a node's inbox channel.
#[derive(Debug, PartialEq, Eq)]
pub enum InboxMessage<'a> {
    /// Deliver `frame` to the local peer `target`; `sender` (on `sender_node`)
    /// is told if that is impossible.
    Relay { target: PeerId, sender: PeerId, sender_node: NodeId, frame: &'a str },
    /// A relay from local peer `to` could not be delivered to `target`: it is
    /// gone, or (`full`) its send queue overflowed. `rid` is the request id of
    /// the relay, as JSON, when it had one.
    Undeliverable { to: PeerId, target: PeerId, full: bool, rid: Option<&'a str> },
    /// The server API on `asker` asks: carry out `command` if `peer` is here,
    /// and answer request `request`.
    Command { peer: PeerId, asker: NodeId, request: PeerId, command: Command },
    /// The answer to request `request`: whether the peer was there.
    Answer { request: PeerId, found: bool },
    /// `asker` saw `peer` move away from this node: answer [`InboxMessage::Fenced`]
    /// once every relay it sent here before has been dealt with.
    Fence { peer: PeerId, asker: NodeId, fence: u64 },
    /// This node's fence `fence` for `peer` is passed.
    Fenced { peer: PeerId, fence: u64 },
}

/// A message on a room's channel.
#[derive(Debug)]
pub enum RoomMessage<'a> {
    /// A peer joined, with its record; `seq` numbers the room's events.
    /// `restored`: its node wrote it back after Redis lost it; it never left.
    Joined { seq: u64, peer: PeerId, record: Record<'a>, restored: bool },
    /// A peer left.
    Left { seq: u64, peer: PeerId },
    /// The room was closed.
    Closed { seq: u64 },
    /// A member's session moved from one node (or parking) to another.
    Moved { seq: u64, peer: PeerId, from: NodeId, to: NodeId },
    /// A room broadcast from `sender` on `node`, as delivered.
    Broadcast { node: NodeId, sender: PeerId, frame: &'a str },
}

/// A member as stored in a room's hash.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    /// The node it is connected to.
    #[serde(rename = "n")]
    pub node: &'a str,
    /// Its authenticated user.
    #[serde(rename = "u", borrow, default)]
    pub user: Option<Cow<'a, str>>,
    /// Its `meta`.
    #[serde(rename = "m", borrow, default)]
    pub meta: Option<&'a RawValue>,
    /// When it joined (ms since the epoch; 0 for records written before this was kept).
    #[serde(rename = "t", default)]
    pub joined: u64,
    /// Its join number in the room: the order `joined` lists members in.
    #[serde(rename = "o")]
    pub order: u64,
}

/// The record of a member, without the join number the script appends.
pub fn record_prefix(node: NodeId, user: Option<&str>, meta: Option<&RawValue>, joined: u64) -> String {
    let user = user.map_or_else(|| "null".to_owned(), |u| serde_json::Value::from(u).to_string());
    let meta = meta.map_or("null", RawValue::get);
    format!(r#"{{"n":"{node}","u":{user},"m":{meta},"t":{joined}"#)
}

/// Encodes a server API command for the node that may have `peer`.
pub fn command(peer: PeerId, asker: NodeId, request: PeerId, command: &Command) -> Vec<u8> {
    let tail = match command {
        Command::Send(frame) => format!("s{frame}"),
        Command::Remove(removal) => format!("x{:05}{}", removal.code, removal.reason.as_str()),
        Command::HandOver => "h".to_owned(),
    };
    header(b'c', &[peer.as_str(), asker.as_str(), request.as_str()], tail.len(), &tail)
}

/// What a node writes of itself on each heartbeat, for the server API.
#[derive(serde::Serialize, Deserialize)]
struct NodeRecord<'a> {
    id: &'a str,
    address: &'a str,
    version: &'a str,
    started: u64,
    connections: u64,
    rooms: u64,
    messages_in: u64,
}

/// Encodes a node's record.
pub fn node_info(info: &NodeInfo) -> String {
    let record = NodeRecord {
        id: info.id.as_str(),
        address: &info.address,
        version: &info.version,
        started: info.started,
        connections: info.connections,
        rooms: info.rooms,
        messages_in: info.messages_in,
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// Reads a node's record.
pub fn parse_node_info(text: &str) -> Option<NodeInfo> {
    let record: NodeRecord = serde_json::from_str(text).ok()?;
    Some(NodeInfo {
        id: NodeId::parse(record.id)?,
        address: record.address.to_owned(),
        version: record.version.to_owned(),
        started: record.started,
        connections: record.connections,
        rooms: record.rooms,
        messages_in: record.messages_in,
    })
}

/// Encodes the answer to a command.
pub fn answer(request: PeerId, found: bool) -> Vec<u8> {
    header(b'a', &[request.as_str()], 1, if found { "1" } else { "0" })
}

/// Encodes a fence for the node `peer` moved away from.
pub fn fence(peer: PeerId, asker: NodeId, fence: u64) -> Vec<u8> {
    let fence = fence.to_string();
    header(b'F', &[peer.as_str(), asker.as_str()], fence.len(), &fence)
}

/// Encodes the answer to a fence.
pub fn fenced(peer: PeerId, fence: u64) -> Vec<u8> {
    let fence = fence.to_string();
    header(b'K', &[peer.as_str()], fence.len(), &fence)
}

/// Encodes a relay for `target`'s node.
pub fn relay(target: PeerId, sender: PeerId, sender_node: NodeId, frame: &str) -> Vec<u8> {
    header(b'r', &[target.as_str(), sender.as_str(), sender_node.as_str()], frame.len(), frame)
}

/// Encodes an undeliverable notice for `to`'s node.
pub fn undeliverable(to: PeerId, target: PeerId, full: bool, rid: Option<&str>) -> Vec<u8> {
    header(if full { b'f' } else { b'u' }, &[to.as_str(), target.as_str()], rid.map_or(0, str::len), rid.unwrap_or(""))
}

/// Encodes a room broadcast.
pub fn broadcast(node: NodeId, sender: PeerId, frame: &str) -> Vec<u8> {
    header(b'b', &[node.as_str(), sender.as_str()], frame.len(), frame)
}

fn header(kind: u8, ids: &[&str], extra: usize, tail: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + ids.len() * PEER_ID_LEN + extra);
    out.push(kind);
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Reads an inbox message; `None` if it is not one (another version, corruption).
pub fn parse_inbox(payload: &[u8]) -> Option<InboxMessage<'_>> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        b'r' => {
            let (ids, frame) = ids::<3>(rest)?;
            let sender_node = NodeId::parse(ids[2].as_str())?;
            Some(InboxMessage::Relay { target: ids[0], sender: ids[1], sender_node, frame })
        }
        b'u' | b'f' => {
            let (ids, rid) = ids::<2>(rest)?;
            let rid = (!rid.is_empty()).then_some(rid);
            Some(InboxMessage::Undeliverable { to: ids[0], target: ids[1], full: kind == b'f', rid })
        }
        b'c' => {
            let (ids, tail) = ids::<3>(rest)?;
            let asker = NodeId::parse(ids[1].as_str())?;
            let command = match tail.split_at_checked(1)? {
                ("s", frame) => Command::Send(frame.to_owned()),
                ("h", "") => Command::HandOver,
                ("x", rest) => {
                    let (code, reason) = rest.split_at_checked(5)?;
                    Command::Remove(Removal { code: code.parse().ok()?, reason: reason.to_owned().into() })
                }
                _ => return None,
            };
            Some(InboxMessage::Command { peer: ids[0], asker, request: ids[2], command })
        }
        b'a' => {
            let (ids, found) = ids::<1>(rest)?;
            Some(InboxMessage::Answer { request: ids[0], found: found == "1" })
        }
        b'F' => {
            let (ids, fence) = ids::<2>(rest)?;
            let asker = NodeId::parse(ids[1].as_str())?;
            Some(InboxMessage::Fence { peer: ids[0], asker, fence: fence.parse().ok()? })
        }
        b'K' => {
            let (ids, fence) = ids::<1>(rest)?;
            Some(InboxMessage::Fenced { peer: ids[0], fence: fence.parse().ok()? })
        }
        _ => None,
    }
}

/// Reads a room channel message; `None` if it is not one.
pub fn parse_room(payload: &[u8]) -> Option<RoomMessage<'_>> {
    if payload.first() == Some(&b'b') {
        let (ids, frame) = ids::<2>(&payload[1..])?;
        return Some(RoomMessage::Broadcast { node: NodeId::parse(ids[0].as_str())?, sender: ids[1], frame });
    }
    #[derive(Deserialize)]
    struct Event<'a> {
        k: &'a str,
        s: u64,
        #[serde(default)]
        p: &'a str,
        #[serde(borrow, default)]
        d: Option<&'a RawValue>,
        #[serde(default)]
        f: &'a str,
        #[serde(default)]
        n: &'a str,
    }
    let event: Event = serde_json::from_slice(payload).ok()?;
    if event.k == "c" {
        return Some(RoomMessage::Closed { seq: event.s });
    }
    let peer = PeerId::parse(event.p)?;
    if event.k == "m" {
        let (from, to) = (NodeId::parse(event.f)?, NodeId::parse(event.n)?);
        return Some(RoomMessage::Moved { seq: event.s, peer, from, to });
    }
    match (event.k, event.d) {
        (kind @ ("j" | "r"), Some(record)) => {
            let record = parse_record(record.get())?;
            Some(RoomMessage::Joined { seq: event.s, peer, record, restored: kind == "r" })
        }
        ("l", _) => Some(RoomMessage::Left { seq: event.s, peer }),
        _ => None,
    }
}

/// Reads a member record.
pub fn parse_record(text: &str) -> Option<Record<'_>> {
    serde_json::from_str(text).ok()
}

fn ids<const N: usize>(bytes: &[u8]) -> Option<([PeerId; N], &str)> {
    let mut ids = [PeerId::random(); N];
    let mut rest = bytes;
    for id in &mut ids {
        let (head, tail) = rest.split_at_checked(PEER_ID_LEN)?;
        *id = PeerId::parse(std::str::from_utf8(head).ok()?)?;
        rest = tail;
    }
    Some((ids, std::str::from_utf8(rest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_notices_and_broadcasts_round_trip() {
        let (a, b, n) = (PeerId::random(), PeerId::random(), NodeId::random());
        let frame = r#"{"type":"offer","target":"x","from":"y","sdp":"v=0\r\n"}"#;
        assert_eq!(
            parse_inbox(&relay(a, b, n, frame)),
            Some(InboxMessage::Relay { target: a, sender: b, sender_node: n, frame })
        );
        assert_eq!(
            parse_inbox(&undeliverable(a, b, true, Some("7"))),
            Some(InboxMessage::Undeliverable { to: a, target: b, full: true, rid: Some("7") })
        );
        assert_eq!(
            parse_inbox(&undeliverable(a, b, false, None)),
            Some(InboxMessage::Undeliverable { to: a, target: b, full: false, rid: None })
        );
        assert!(matches!(
            parse_room(&broadcast(n, a, frame)),
            Some(RoomMessage::Broadcast { node, sender, frame: f }) if node == n && sender == a && f == frame
        ));
        let request = PeerId::random();
        let removal = Removal { code: 4003, reason: "bye".into() };
        for command in [Command::Send(frame.to_owned()), Command::Remove(removal), Command::HandOver] {
            assert_eq!(
                parse_inbox(&super::command(a, n, request, &command)),
                Some(InboxMessage::Command { peer: a, asker: n, request, command })
            );
        }
        assert_eq!(parse_inbox(&answer(request, true)), Some(InboxMessage::Answer { request, found: true }));
        assert_eq!(parse_inbox(&answer(request, false)), Some(InboxMessage::Answer { request, found: false }));
        assert_eq!(parse_inbox(&fence(a, n, 42)), Some(InboxMessage::Fence { peer: a, asker: n, fence: 42 }));
        assert_eq!(parse_inbox(&fenced(a, 42)), Some(InboxMessage::Fenced { peer: a, fence: 42 }));
        assert_eq!(parse_inbox(b"r-short"), None);
        assert_eq!(parse_inbox(b""), None);
    }

    #[test]
    fn script_events_parse() {
        let peer = PeerId::random();
        let node = NodeId::random();
        let record = format!("{},\"o\":3}}", record_prefix(node, Some("al\"ice"), None, 17));
        let joined = format!(r#"{{"k":"j","s":4,"p":"{peer}","d":{record}}}"#);
        match parse_room(joined.as_bytes()) {
            Some(RoomMessage::Joined { seq: 4, peer: p, record, restored: false }) => {
                assert_eq!(p, peer);
                assert_eq!(record.node, node.as_str());
                assert_eq!(record.user.as_deref(), Some("al\"ice"));
                assert_eq!(record.order, 3);
                assert_eq!(record.joined, 17);
            }
            other => panic!("{other:?}"),
        }
        let left = format!(r#"{{"k":"l","s":5,"p":"{peer}"}}"#);
        assert!(matches!(parse_room(left.as_bytes()), Some(RoomMessage::Left { seq: 5, peer: p }) if p == peer));
        assert!(parse_room(b"{\"k\":\"x\",\"s\":1,\"p\":\"y\"}").is_none());
        assert!(matches!(parse_room(br#"{"k":"c","s":9}"#), Some(RoomMessage::Closed { seq: 9 })));
        let moved = format!(r#"{{"k":"m","s":6,"p":"{peer}","f":"{node}","n":"{}"}}"#, NodeId::parked());
        assert!(matches!(
            parse_room(moved.as_bytes()),
            Some(RoomMessage::Moved { seq: 6, peer: p, from, to }) if p == peer && from == node && to.is_parked()
        ));
    }
}
