//! The adapter for matchbox_server (crates.io `matchbox_server`, the signaling
//! server of the matchbox WebRTC library).
//!
//! Its protocol (`matchbox_protocol`, serde's externally tagged enums, JSON text
//! frames): a client connects to `/ROOM` and is in that room; the server sends
//! `{"IdAssigned":"UUID"}` first, `{"NewPeer":"UUID"}` to the room's earlier
//! members when a peer joins and `{"PeerLeft":"UUID"}` when one goes. A client
//! sends `{"Signal":{"receiver":"UUID","data":ANY}}`, delivered as
//! `{"Signal":{"sender":"UUID","data":ANY}}` (the server parses `data` into a
//! `serde_json::Value` and writes it again). `"KeepAlive"` does nothing. There is
//! no echo, no room broadcast, and no leaving a room but by disconnecting.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{json_string, push_body, truncate, BodyStamp};
use super::ws::{self, Encode, WsRx, WsTx};
use super::{BodyKind, Connection, Event, Features, Outgoing, Protocol, Purpose, Target, Unsupported};

/// How long `connect` waits for `IdAssigned`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// A matchbox_server.
#[derive(Debug, Clone)]
pub struct Matchbox {
    target: Target,
    read_buffer: usize,
}

impl Matchbox {
    pub fn new(target: Target, read_buffer: usize) -> Matchbox {
        Matchbox { target, read_buffer }
    }
}

impl Protocol for Matchbox {
    type Tx = WsTx<MatchboxEncode>;
    type Rx = WsRx;

    fn features(&self) -> Features {
        Features {
            broadcast: Err("matchbox_server has no room broadcast (a client sends one Signal per peer)"),
            echo: Err("matchbox_server has no echo endpoint"),
            membership_events: true,
            ..Features::default()
        }
    }

    /// A connection in the default room (`/`).
    async fn connect(&self) -> Result<Connection<Self>> {
        Ok(self.connect_in("", Purpose::Signaling).await?.0)
    }

    async fn connect_in(&self, room: &str, _purpose: Purpose) -> Result<(Connection<Self>, u64)> {
        if !room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            bail!("room {room:?}: the load generator only makes URL-safe room names");
        }
        let path = format!("/{room}");
        let (tx, mut rx) = ws::open(&self.target, &path, self.read_buffer, MatchboxEncode, decode).await?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, super::Rx::next(&mut rx))
            .await
            .map_err(|_| anyhow!("no `IdAssigned` within {WELCOME_TIMEOUT:?} of connecting"))??;
        match first {
            // Being connected to /ROOM is being in ROOM: there is no `joined`.
            Some(Event::Welcome { id }) if !id.is_empty() => Ok((Connection { id, tx, rx }, 0)),
            Some(other) => bail!("expected `IdAssigned` as the first frame, got {other:?}"),
            None => bail!("the server closed the connection before `IdAssigned`"),
        }
    }

    async fn connect_echo(&self) -> Result<Connection<Self>> {
        Err(Unsupported("matchbox_server has no echo endpoint").into())
    }
}

/// matchbox_server's requests.
pub struct MatchboxEncode;

impl Encode for MatchboxEncode {
    fn join(&self, _room: &str) -> Result<String> {
        Err(Unsupported("matchbox_server takes the room in the URL; a connection cannot join another").into())
    }

    fn leave(&self, _room: &str) -> Result<String> {
        Err(Unsupported("matchbox_server has no leave but disconnecting").into())
    }

    fn relay(&self, to: &str, message: &Outgoing) -> Result<String> {
        let kind = match message.kind {
            BodyKind::Sdp => "offer",
            BodyKind::Signal => "answer",
            BodyKind::Candidate => "candidate",
        };
        let mut frame = String::with_capacity(message.size + 96);
        frame.push_str(r#"{"Signal":{"receiver":"#);
        frame.push_str(&json_string(to));
        frame.push_str(r#","data":{"type":""#);
        frame.push_str(kind);
        frame.push_str(r#"","#);
        push_body(&mut frame, message, "}}}");
        Ok(frame)
    }

    fn broadcast(&self, _room: &str, _message: &Outgoing) -> Result<String> {
        Err(Unsupported("matchbox_server has no room broadcast").into())
    }
}

/// A server event; only the variant's name and id are read, `data` is kept raw.
#[derive(Deserialize)]
enum PeerEvent<'a> {
    IdAssigned(String),
    NewPeer(String),
    PeerLeft(String),
    Signal {
        sender: String,
        #[serde(borrow)]
        data: &'a RawValue,
    },
}

fn decode(text: &str) -> Event {
    match serde_json::from_str::<PeerEvent>(text) {
        Ok(PeerEvent::IdAssigned(id)) => Event::Welcome { id },
        Ok(PeerEvent::NewPeer(peer)) => Event::PeerJoined { peer },
        Ok(PeerEvent::PeerLeft(peer)) => Event::PeerLeft { peer },
        Ok(PeerEvent::Signal { sender, data }) => Event::Relay { from: sender, stamp: BodyStamp::of(data.get()) },
        Err(err) => Event::Other(format!("undecodable frame ({err}): {}", truncate(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Stamp;

    #[test]
    fn signals_round_trip_as_the_server_rewrites_them() {
        let stamp = Stamp { seq: 9, due_us: 5, sent_us: 6 };
        for kind in [BodyKind::Sdp, BodyKind::Signal, BodyKind::Candidate] {
            let frame = MatchboxEncode.relay("RECV", &Outgoing { kind, stamp, size: 1200 }).unwrap();
            let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
            assert_eq!(value["Signal"]["receiver"], "RECV");
            // The server's rewrite: receiver out, sender in, data re-serialised.
            let delivered = serde_json::json!({"Signal": {"sender": "SEND", "data": value["Signal"]["data"]}});
            assert_eq!(decode(&delivered.to_string()), Event::Relay { from: "SEND".into(), stamp: Some(stamp) });
        }
        assert_eq!(decode(r#"{"IdAssigned":"a-b"}"#), Event::Welcome { id: "a-b".into() });
        assert_eq!(decode(r#"{"NewPeer":"c"}"#), Event::PeerJoined { peer: "c".into() });
        assert_eq!(decode(r#"{"PeerLeft":"c"}"#), Event::PeerLeft { peer: "c".into() });
        assert!(matches!(decode(r#""KeepAlive""#), Event::Other(_)));
    }
}
