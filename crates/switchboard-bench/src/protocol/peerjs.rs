//! The adapter for peerjs-server (npm `peer`), started by bench/peers/peerjs.js.
//!
//! Its protocol: a client picks its own id and token and connects to
//! `/peerjs?key=peerjs&id=ID&token=TOKEN`; the server answers `{"type":"OPEN"}`
//! (or `ID-TAKEN` / `ERROR` and closes). A client sends
//! `{"type":"OFFER"|"ANSWER"|"CANDIDATE","dst":ID,"payload":ANY}`; the server
//! parses it, sets `src` and sends `{"type","src","dst","payload"}` to `dst`
//! (queued for a while if `dst` is not connected). `HEARTBEAT` keeps a client
//! alive. There are no rooms: no membership events, no broadcast, no leave, and
//! no echo.
//!
//! The same adapter drives Switchboard's PeerJS dialect (`/peerjs` on the
//! `switchboard` binary), which answers the same frames; it checks ids as the
//! `peerjs` client does, so the ids here are letters and digits only.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{json_string, push_body, random_id, truncate, BodyStamp};
use super::ws::{self, Encode, WsRx, WsTx};
use super::{BodyKind, Connection, Event, Features, Outgoing, Protocol, Purpose, Target, Unsupported};

/// How long `connect` waits for `OPEN`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// The key bench/peers/peerjs.js starts the server with (peerjs-server's default).
const KEY: &str = "peerjs";

/// A peerjs-server.
#[derive(Debug, Clone)]
pub struct PeerJs {
    target: Target,
    read_buffer: usize,
}

impl PeerJs {
    pub fn new(target: Target, read_buffer: usize) -> PeerJs {
        PeerJs { target, read_buffer }
    }
}

impl Protocol for PeerJs {
    type Tx = WsTx<PeerJsEncode>;
    type Rx = WsRx;

    fn features(&self) -> Features {
        Features {
            broadcast: Err("the PeerJS protocol has no rooms, so no room broadcast"),
            echo: Err("the PeerJS protocol has no echo endpoint"),
            ..Features::default()
        }
    }

    async fn connect(&self) -> Result<Connection<Self>> {
        let id = peer_id();
        let token = random_id();
        let path = format!("/peerjs?key={KEY}&id={id}&token={token}");
        let (tx, mut rx) = ws::open(&self.target, &path, self.read_buffer, PeerJsEncode, decode).await?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, super::Rx::next(&mut rx))
            .await
            .map_err(|_| anyhow!("no `OPEN` within {WELCOME_TIMEOUT:?} of connecting"))??;
        match first {
            Some(Event::Welcome { .. }) => Ok(Connection { id, tx, rx }),
            Some(other) => bail!("expected `OPEN` as the first frame, got {other:?}"),
            None => bail!("the server closed the connection before `OPEN`"),
        }
    }

    /// peerjs-server has no rooms: a connected peer is reachable by every other.
    async fn connect_in(&self, _room: &str, _purpose: Purpose) -> Result<(Connection<Self>, u64)> {
        Ok((self.connect().await?, 0))
    }

    async fn connect_echo(&self) -> Result<Connection<Self>> {
        Err(Unsupported("the PeerJS protocol has no echo endpoint").into())
    }
}

/// 22 random letters and digits: an id both servers take. The `peerjs` client
/// (and Switchboard's dialect) accept only `^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$`,
/// which [`random_id`]'s `-` and `_` break at the ends or side by side.
fn peer_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..22).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// peerjs-server's requests.
pub struct PeerJsEncode;

impl Encode for PeerJsEncode {
    fn join(&self, _room: &str) -> Result<String> {
        Err(Unsupported("the PeerJS protocol has no rooms").into())
    }

    fn leave(&self, _room: &str) -> Result<String> {
        Err(Unsupported("the PeerJS protocol has no rooms").into())
    }

    /// What the PeerJS client sends: an OFFER/ANSWER payload carries `sdp`, a
    /// CANDIDATE payload a `candidate`, beside the connection's type and id.
    fn relay(&self, to: &str, message: &Outgoing) -> Result<String> {
        let kind = match message.kind {
            BodyKind::Sdp => "OFFER",
            BodyKind::Signal => "ANSWER",
            BodyKind::Candidate => "CANDIDATE",
        };
        let mut frame = String::with_capacity(message.size + 128);
        frame.push_str(r#"{"type":""#);
        frame.push_str(kind);
        frame.push_str(r#"","dst":"#);
        frame.push_str(&json_string(to));
        frame.push_str(r#","payload":{"type":"data","connectionId":"dc_bench","#);
        push_body(&mut frame, message, "}}");
        Ok(frame)
    }

    fn broadcast(&self, _room: &str, _message: &Outgoing) -> Result<String> {
        Err(Unsupported("the PeerJS protocol has no room broadcast").into())
    }
}

/// A server message; `payload` is kept raw.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    src: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

fn decode(text: &str) -> Event {
    let message: Message = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(err) => return Event::Other(format!("undecodable frame ({err}): {}", truncate(text))),
    };
    match message.kind {
        "OPEN" => Event::Welcome { id: String::new() },
        "OFFER" | "ANSWER" | "CANDIDATE" => Event::Relay {
            from: message.src.unwrap_or_default(),
            stamp: message.payload.and_then(|raw| BodyStamp::of(raw.get())),
        },
        "ERROR" | "ID-TAKEN" => Event::Error { code: message.kind.to_owned(), message: truncate(text) },
        _ => Event::Other(truncate(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Stamp;

    #[test]
    fn messages_round_trip_as_the_server_rewrites_them() {
        let stamp = Stamp { seq: 1, due_us: 2, sent_us: 3 };
        for kind in [BodyKind::Sdp, BodyKind::Signal, BodyKind::Candidate] {
            let frame = PeerJsEncode.relay("DST", &Outgoing { kind, stamp, size: 900 }).unwrap();
            let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
            let delivered =
                serde_json::json!({"type": value["type"], "src": "SRC", "dst": "DST", "payload": value["payload"]});
            assert_eq!(decode(&delivered.to_string()), Event::Relay { from: "SRC".into(), stamp: Some(stamp) });
        }
        assert_eq!(decode(r#"{"type":"OPEN"}"#), Event::Welcome { id: String::new() });
        assert!(matches!(decode(r#"{"type":"ERROR","payload":{"msg":"x"}}"#), Event::Error { .. }));
    }

    #[test]
    fn ids_are_ones_the_peerjs_client_and_switchboard_accept() {
        for _ in 0..2000 {
            let id = peer_id();
            assert_eq!(id.len(), 22);
            assert!(switchboard_protocol::compat::peerjs::valid_id(&id), "{id:?}");
        }
    }
}
