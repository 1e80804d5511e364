//! The adapter for Switchboard itself (docs/protocol.md): JSON text frames on
//! `/ws`, the seeds' echo on `/ws/echo`. Also the bare-library echo server
//! (`switchboard-bench-bare-echo`), which speaks only the echo.
//!
//! It bypasses `switchboard-client` for speed: frames are written with `write!`
//! into one string (no `serde_json::Value`), and read with a borrowing serde struct
//! that skips the padding without copying it. Bodies look like what a browser
//! sends: an `offer`/`signal` with an `sdp` string, or a `candidate` with an
//! RTCIceCandidateInit; the load generator's own fields (`seq`, `ts`: due time,
//! `st`: send time) ride along as extra fields, which the server delivers as
//! written.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_protocol::relay::RelayKind;

use super::body::{json_string, push_broadcast_body, truncate, typed_relay, BodyStamp};
use super::ws::{self, Encode, WsRx, WsTx};
use super::{BodyKind, Connection, Event, Features, Outgoing, Protocol, Stamp, Target};

/// How long `connect` waits for `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// A Switchboard server, or (with `bare`) the bare-library echo server.
#[derive(Debug, Clone)]
pub struct Switchboard {
    /// One node, or several nodes sharing rooms over Redis: connections go to
    /// them in turn, so with `--ramp-concurrency 1` the two peers of a relay
    /// pair always land on different nodes.
    targets: Vec<Target>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    read_buffer: usize,
    bare: bool,
}

impl Switchboard {
    /// Talks to the server at `target`, with a WebSocket read buffer of
    /// `read_buffer` bytes per connection (tungstenite's default, 128 KiB, is
    /// zero-filled up front: 2 GB of client memory at 15,000 connections).
    pub fn new(target: Target, read_buffer: usize) -> Switchboard {
        Switchboard::nodes(vec![target], read_buffer)
    }

    /// Several nodes of one cluster, used in turn.
    pub fn nodes(targets: Vec<Target>, read_buffer: usize) -> Switchboard {
        Switchboard { targets, next: Default::default(), read_buffer, bare: false }
    }

    /// The bare echo server: only `/ws/echo` (any path, in fact).
    pub fn bare(target: Target, read_buffer: usize) -> Switchboard {
        Switchboard { bare: true, ..Switchboard::new(target, read_buffer) }
    }

    /// The node the next connection goes to.
    fn target(&self) -> &Target {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.targets[turn % self.targets.len()]
    }
}

impl Protocol for Switchboard {
    type Tx = WsTx<SwitchboardEncode>;
    type Rx = WsRx;

    fn features(&self) -> Features {
        if self.bare {
            const WHY: &str = "a bare WebSocket echo server: no peers, rooms or relay";
            Features { signaling: Err(WHY), relay: Err(WHY), broadcast: Err(WHY), ..Features::default() }
        } else {
            Features { leave: true, membership_events: true, ..Features::default() }
        }
    }

    async fn connect(&self) -> Result<Connection<Self>> {
        let (tx, mut rx) = ws::open(self.target(), "/ws", self.read_buffer, SwitchboardEncode, decode).await?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, super::Rx::next(&mut rx))
            .await
            .map_err(|_| anyhow!("no `welcome` within {WELCOME_TIMEOUT:?} of connecting"))??;
        let id = match first {
            Some(Event::Welcome { id }) => id,
            Some(other) => bail!("expected `welcome` as the first frame, got {other:?}"),
            None => bail!("the server closed the connection before `welcome`"),
        };
        if id.len() != 22 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            bail!("`welcome` carries a malformed peer id {id:?} (expected 22 URL-safe characters)");
        }
        Ok(Connection { id, tx, rx })
    }

    async fn connect_echo(&self) -> Result<Connection<Self>> {
        let (tx, rx) =
            ws::open(self.target(), "/ws/echo", self.read_buffer, SwitchboardEncode, ws::decode_echo).await?;
        Ok(Connection { id: String::new(), tx, rx })
    }
}

/// Switchboard's requests.
pub struct SwitchboardEncode;

impl Encode for SwitchboardEncode {
    fn join(&self, room: &str) -> Result<String> {
        Ok(format!(r#"{{"type":"join","room":{}}}"#, json_string(room)))
    }

    fn leave(&self, room: &str) -> Result<String> {
        Ok(format!(r#"{{"type":"leave","room":{}}}"#, json_string(room)))
    }

    fn relay(&self, to: &str, message: &Outgoing) -> Result<String> {
        let kind = match message.kind {
            BodyKind::Sdp => "offer",
            BodyKind::Signal => "signal",
            BodyKind::Candidate => "candidate",
        };
        Ok(typed_relay(kind, to, message))
    }

    fn broadcast(&self, room: &str, message: &Outgoing) -> Result<String> {
        let mut frame = String::with_capacity(message.size + 64);
        frame.push_str(r#"{"type":"broadcast","room":"#);
        frame.push_str(&json_string(room));
        frame.push_str(r#","data":{"#);
        push_broadcast_body(&mut frame, message, "}}");
        Ok(frame)
    }
}

/// The fields of a server frame the load generator looks at; everything else
/// (the padding, above all) is skipped without being copied.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default)]
    from: Option<&'a str>,
    #[serde(default)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    st: Option<u64>,
    #[serde(default)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<Cow<'a, str>>,
}

/// Decodes one frame from `/ws`.
pub fn decode(text: &str) -> Event {
    let frame: Frame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => return Event::Other(format!("undecodable frame ({err}): {}", truncate(text))),
    };
    let stamp = match (frame.seq, frame.ts, frame.st) {
        (Some(seq), Some(due_us), Some(sent_us)) => Some(Stamp { seq, due_us, sent_us }),
        _ => None,
    };
    let from = || frame.from.unwrap_or_default().to_owned();
    let data_id = || frame.data.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()).unwrap_or_default();
    match frame.kind {
        "welcome" => Event::Welcome { id: frame.id.unwrap_or_default().to_owned() },
        "joined" => Event::Joined { room: frame.room.unwrap_or_default().into_owned() },
        "peer-joined" => Event::PeerJoined { peer: data_id() },
        "peer-left" => Event::PeerLeft { peer: data_id() },
        "left" => Event::Left { rooms: frame.rooms.unwrap_or_default() },
        "broadcast" => Event::Broadcast { from: from(), stamp: frame.data.and_then(|raw| BodyStamp::of(raw.get())) },
        "error" => Event::Error {
            code: frame.code.unwrap_or_default().into_owned(),
            message: frame.message.unwrap_or_default().into_owned(),
        },
        kind if RelayKind::from_wire(kind).is_some() => Event::Relay { from: from(), stamp },
        _ => Event::Other(truncate(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ws::decode_echo;

    fn stamp() -> Stamp {
        Stamp { seq: 7, due_us: 1000, sent_us: 1200 }
    }

    #[test]
    fn decodes_relays_and_broadcasts_with_their_stamps() {
        let relay = r#"{"from":"AAAAAAAAAAAAAAAAAAAAAA","type":"offer","target":"B","seq":7,"ts":1000,"st":1200,"sdp":"v=0\r\n"}"#;
        assert_eq!(decode(relay), Event::Relay { from: "AAAAAAAAAAAAAAAAAAAAAA".into(), stamp: Some(stamp()) });
        let broadcast = r#"{"type":"broadcast","from":"A","room":"r","data":{"seq":7,"ts":1000,"st":1200,"pad":"x"}}"#;
        assert_eq!(decode(broadcast), Event::Broadcast { from: "A".into(), stamp: Some(stamp()) });
        assert_eq!(decode(r#"{"type":"peer-joined","data":"P","room":"r"}"#), Event::PeerJoined { peer: "P".into() });
        assert_eq!(
            decode(r#"{"type":"error","code":"rate-limited","message":"too \"fast\""}"#),
            Event::Error { code: "rate-limited".into(), message: "too \"fast\"".into() }
        );
        assert_eq!(decode(r#"{"type":"left","rooms":["a"]}"#), Event::Left { rooms: vec!["a".into()] });
        assert!(matches!(decode("nope"), Event::Other(_)));
        assert_eq!(decode_echo("Server received: hi"), Event::Echo("hi".into()));
        assert!(matches!(decode_echo("hi"), Event::Other(_)));
    }

    #[test]
    fn requests_round_trip_through_the_decoder() {
        let message = Outgoing { kind: BodyKind::Candidate, stamp: stamp(), size: 200 };
        let relay = SwitchboardEncode.relay("B", &message).unwrap();
        let relayed = relay.replacen('{', r#"{"from":"A","#, 1);
        assert_eq!(decode(&relayed), Event::Relay { from: "A".into(), stamp: Some(stamp()) });
        let broadcast = SwitchboardEncode.broadcast("r", &message).unwrap();
        let delivered = broadcast.replacen('{', r#"{"from":"A","#, 1);
        assert_eq!(decode(&delivered), Event::Broadcast { from: "A".into(), stamp: Some(stamp()) });
    }
}
