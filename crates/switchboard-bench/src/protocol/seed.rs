//! The adapter for the seeds' Node.js servers (bench/peers: `signaling.js`,
//! `broadcast.js`, `echo.js`), each its own process on its own port, each
//! accepting any path: the scenario's `--url` names the one it needs.
//!
//! - signaling: `welcome {id}` on connect, `join {room}` → `joined` to the
//!   joiner and `peer-joined {data: id}` to the room's others, `sdp` and
//!   `ice-candidate` with `target`, delivered with `from`; no `leave`, no
//!   room broadcast.
//! - broadcast: every frame to every other client of the same `?channel=`; the
//!   server knows no ids, so the sender writes its own (`from`) into the body.
//! - echo: `Server received: <text>`.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{json_string, push_broadcast_body, random_id, truncate, typed_relay};
use super::ws::{self, Encode, WsRx, WsTx};
use super::{BodyKind, Connection, Event, Features, Outgoing, Protocol, Purpose, Stamp, Target, Unsupported};

/// How long `connect` waits for `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// One of the seed servers.
#[derive(Debug, Clone)]
pub struct Seed {
    target: Target,
    read_buffer: usize,
}

impl Seed {
    pub fn new(target: Target, read_buffer: usize) -> Seed {
        Seed { target, read_buffer }
    }
}

impl Protocol for Seed {
    type Tx = WsTx<SeedEncode>;
    type Rx = WsRx;

    fn features(&self) -> Features {
        Features { membership_events: true, ..Features::default() }
    }

    async fn connect(&self) -> Result<Connection<Self>> {
        let encode = SeedEncode { me: String::new() };
        let (tx, mut rx) = ws::open(&self.target, "/ws", self.read_buffer, encode, decode).await?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, super::Rx::next(&mut rx))
            .await
            .map_err(|_| anyhow!("no `welcome` within {WELCOME_TIMEOUT:?} of connecting"))??;
        match first {
            Some(Event::Welcome { id }) if !id.is_empty() => Ok(Connection { id, tx, rx }),
            Some(other) => bail!("expected `welcome` as the first frame, got {other:?}"),
            None => bail!("the server closed the connection before `welcome`"),
        }
    }

    async fn connect_in(&self, room: &str, purpose: Purpose) -> Result<(Connection<Self>, u64)> {
        match purpose {
            Purpose::Signaling => super::connect_and_join(self, room).await,
            Purpose::Broadcast => {
                if !room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    bail!("room {room:?}: the load generator only makes URL-safe room names");
                }
                let me = random_id();
                let path = format!("/ws/broadcast?channel={room}");
                let encode = SeedEncode { me: me.clone() };
                let (tx, rx) = ws::open(&self.target, &path, self.read_buffer, encode, decode_broadcast).await?;
                Ok((Connection { id: me, tx, rx }, 0))
            }
        }
    }

    async fn connect_echo(&self) -> Result<Connection<Self>> {
        let encode = SeedEncode { me: String::new() };
        let (tx, rx) = ws::open(&self.target, "/ws/echo", self.read_buffer, encode, ws::decode_echo).await?;
        Ok(Connection { id: String::new(), tx, rx })
    }
}

/// The seeds' requests; `me` is the id a broadcast connection signs with.
pub struct SeedEncode {
    me: String,
}

impl Encode for SeedEncode {
    fn join(&self, room: &str) -> Result<String> {
        Ok(format!(r#"{{"type":"join","room":{}}}"#, json_string(room)))
    }

    fn leave(&self, _room: &str) -> Result<String> {
        Err(Unsupported("the seed signaling server has no leave").into())
    }

    fn relay(&self, to: &str, message: &Outgoing) -> Result<String> {
        let kind = match message.kind {
            BodyKind::Sdp | BodyKind::Signal => "sdp",
            BodyKind::Candidate => "ice-candidate",
        };
        Ok(typed_relay(kind, to, message))
    }

    fn broadcast(&self, _room: &str, message: &Outgoing) -> Result<String> {
        let mut frame = String::with_capacity(message.size + 64);
        frame.push_str(r#"{"from":"#);
        frame.push_str(&json_string(&self.me));
        frame.push(',');
        push_broadcast_body(&mut frame, message, "}");
        Ok(frame)
    }
}

/// The fields of a frame the load generator looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default)]
    from: Option<&'a str>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    st: Option<u64>,
}

impl Frame<'_> {
    fn stamp(&self) -> Option<Stamp> {
        match (self.seq, self.ts, self.st) {
            (Some(seq), Some(due_us), Some(sent_us)) => Some(Stamp { seq, due_us, sent_us }),
            _ => None,
        }
    }
}

/// Decodes one frame from the signaling server.
fn decode(text: &str) -> Event {
    let frame: Frame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => return Event::Other(format!("undecodable frame ({err}): {}", truncate(text))),
    };
    let data_id = || frame.data.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()).unwrap_or_default();
    match frame.kind.unwrap_or_default() {
        "welcome" => Event::Welcome { id: frame.id.unwrap_or_default().to_owned() },
        "joined" => Event::Joined { room: frame.room.clone().unwrap_or_default() },
        "peer-joined" => Event::PeerJoined { peer: data_id() },
        "peer-left" => Event::PeerLeft { peer: data_id() },
        "sdp" | "ice-candidate" => {
            Event::Relay { from: frame.from.unwrap_or_default().to_owned(), stamp: frame.stamp() }
        }
        _ => Event::Other(truncate(text)),
    }
}

/// Decodes one frame from the broadcast server: another client's body as it sent it.
fn decode_broadcast(text: &str) -> Event {
    match serde_json::from_str::<Frame>(text) {
        Ok(frame) => Event::Broadcast { from: frame.from.unwrap_or_default().to_owned(), stamp: frame.stamp() },
        Err(err) => Event::Other(format!("undecodable frame ({err}): {}", truncate(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_and_broadcasts_round_trip() {
        let stamp = Stamp { seq: 3, due_us: 10, sent_us: 12 };
        let encode = SeedEncode { me: "ME".into() };
        for kind in [BodyKind::Sdp, BodyKind::Candidate] {
            let frame = encode.relay("B", &Outgoing { kind, stamp, size: 1500 }).unwrap();
            // What the server does: parse, add `from`, stringify.
            let mut value: serde_json::Value = serde_json::from_str(&frame).unwrap();
            value["from"] = "A".into();
            let delivered = value.to_string();
            assert_eq!(decode(&delivered), Event::Relay { from: "A".into(), stamp: Some(stamp) }, "{delivered}");
        }
        let frame = encode.broadcast("r", &Outgoing { kind: BodyKind::Candidate, stamp, size: 200 }).unwrap();
        assert_eq!(decode_broadcast(&frame), Event::Broadcast { from: "ME".into(), stamp: Some(stamp) });
        assert_eq!(decode(r#"{"type":"welcome","id":"X"}"#), Event::Welcome { id: "X".into() });
        assert_eq!(decode(r#"{"type":"peer-joined","data":"P"}"#), Event::PeerJoined { peer: "P".into() });
        assert_eq!(decode(r#"{"type":"joined","room":"r"}"#), Event::Joined { room: "r".into() });
    }
}
