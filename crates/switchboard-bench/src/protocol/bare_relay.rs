//! The adapter for the bare-library relay (`switchboard-bench-bare-relay`,
//! src/bin/bare_relay.rs): the limit a relay built on Switchboard's WebSocket
//! stack can reach, with no JSON, rooms or checks on the server.
//!
//! The server groups connections by URL path: every connection to `/KEY` is a
//! member of group KEY, and each frame a member sends goes, as it is, to every
//! other member. A relay pair is a group of two (`/relay-N`); a fan-out room is a
//! group of K (`/fanout-N`). The server assigns no ids and adds nothing to a
//! frame, so the load generator picks each connection's id itself and writes it
//! into every frame as `from`, in the shape Switchboard delivers
//! (`{"from":ID,"type":KIND,"target":TO,...}` for a relay,
//! `{"type":"broadcast","from":ID,"data":{...}}` for a broadcast): the frames
//! are the size of Switchboard's deliveries, and the receiver still checks that
//! each came from the one peer it expects, once and in order.
//!
//! It has no join, leave, membership events or echo: only relay and fanout run.

use anyhow::{bail, Result};

use super::body::{json_string, push_body, push_broadcast_body, random_id};
use super::switchboard::decode;
use super::ws::{self, Encode, WsRx, WsTx};
use super::{BodyKind, Connection, Features, Outgoing, Protocol, Purpose, Target, Unsupported};

const WHY: &str = "the bare relay pairs connections by URL: no peer ids, rooms, membership or echo";

/// The bare relay server at one address.
#[derive(Debug, Clone)]
pub struct BareRelay {
    target: Target,
    read_buffer: usize,
}

impl BareRelay {
    pub fn new(target: Target, read_buffer: usize) -> BareRelay {
        BareRelay { target, read_buffer }
    }
}

impl Protocol for BareRelay {
    type Tx = WsTx<BareRelayEncode>;
    type Rx = WsRx;

    fn features(&self) -> Features {
        Features { signaling: Err(WHY), echo: Err(WHY), ..Features::default() }
    }

    async fn connect(&self) -> Result<Connection<Self>> {
        Err(Unsupported(WHY).into())
    }

    /// Connects to `/ROOM`: the group of every connection to the same path.
    async fn connect_in(&self, room: &str, _purpose: Purpose) -> Result<(Connection<Self>, u64)> {
        if !room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            bail!("room {room:?}: the load generator only makes URL-safe room names");
        }
        let me = random_id();
        let encode = BareRelayEncode { from: json_string(&me) };
        let (tx, rx) = ws::open(&self.target, &format!("/{room}"), self.read_buffer, encode, decode).await?;
        Ok((Connection { id: me, tx, rx }, 0))
    }

    async fn connect_echo(&self) -> Result<Connection<Self>> {
        Err(Unsupported(WHY).into())
    }
}

/// Frames in the shape Switchboard delivers them, signed by the sender (`from`
/// is this connection's id, as a JSON string).
pub struct BareRelayEncode {
    from: String,
}

impl Encode for BareRelayEncode {
    fn join(&self, _room: &str) -> Result<String> {
        Err(Unsupported(WHY).into())
    }

    fn leave(&self, _room: &str) -> Result<String> {
        Err(Unsupported(WHY).into())
    }

    fn relay(&self, to: &str, message: &Outgoing) -> Result<String> {
        let kind = match message.kind {
            BodyKind::Sdp => "offer",
            BodyKind::Signal => "signal",
            BodyKind::Candidate => "candidate",
        };
        let mut frame = String::with_capacity(message.size + 96);
        frame.push_str(r#"{"from":"#);
        frame.push_str(&self.from);
        frame.push_str(r#","type":""#);
        frame.push_str(kind);
        frame.push_str(r#"","target":"#);
        frame.push_str(&json_string(to));
        frame.push(',');
        push_body(&mut frame, message, "}");
        Ok(frame)
    }

    fn broadcast(&self, room: &str, message: &Outgoing) -> Result<String> {
        let mut frame = String::with_capacity(message.size + 96);
        frame.push_str(r#"{"type":"broadcast","from":"#);
        frame.push_str(&self.from);
        frame.push_str(r#","room":"#);
        frame.push_str(&json_string(room));
        frame.push_str(r#","data":{"#);
        push_broadcast_body(&mut frame, message, "}}");
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Event, Stamp};

    #[test]
    fn frames_carry_the_sender_and_the_stamp() {
        let stamp = Stamp { seq: 4, due_us: 100, sent_us: 130 };
        let encode = BareRelayEncode { from: json_string("ME") };
        for kind in [BodyKind::Sdp, BodyKind::Signal, BodyKind::Candidate] {
            // What the bare relay delivers is what was sent.
            let frame = encode.relay("YOU", &Outgoing { kind, stamp, size: 1200 }).unwrap();
            assert_eq!(decode(&frame), Event::Relay { from: "ME".into(), stamp: Some(stamp) }, "{frame}");
        }
        let frame = encode.broadcast("fanout-1", &Outgoing { kind: BodyKind::Candidate, stamp, size: 300 }).unwrap();
        assert_eq!(decode(&frame), Event::Broadcast { from: "ME".into(), stamp: Some(stamp) }, "{frame}");
        assert!(encode.join("r").is_err());
    }
}
