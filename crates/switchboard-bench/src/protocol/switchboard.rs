//! The adapter for Switchboard itself (docs/protocol.md): JSON text frames on
//! `/ws`, the seeds' echo on `/ws/echo`.
//!
//! It bypasses `switchboard-client` for speed: frames are written with `write!`
//! into one string (no `serde_json::Value`), and read with a borrowing serde struct
//! that skips the padding without copying it. Bodies look like what a browser
//! sends: an `offer`/`signal` with an `sdp` string, or a `candidate` with an
//! RTCIceCandidateInit; the load generator's own fields (`seq`, `ts`: due time,
//! `st`: send time) ride along as extra fields, which the server delivers as
//! written.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_protocol::relay::RelayKind;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{BodyKind, Connection, Event, Outgoing, Protocol, Stamp, Target, UncleanClose};

type Ws = WebSocketStream<TcpStream>;

/// How long `connect` waits for `welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// A Switchboard server.
#[derive(Debug, Clone)]
pub struct Switchboard {
    target: Target,
    read_buffer: usize,
}

impl Switchboard {
    /// Talks to the server at `target`, with a WebSocket read buffer of
    /// `read_buffer` bytes per connection (tungstenite's default, 128 KiB, is
    /// zero-filled up front: 2 GB of client memory at 15,000 connections).
    pub fn new(target: Target, read_buffer: usize) -> Switchboard {
        Switchboard { target, read_buffer }
    }

    async fn open(&self, path: &str, echo: bool) -> Result<(SwitchboardTx, SwitchboardRx)> {
        let addr = self.target.addr;
        let stream = super::connect_tcp(addr).await.map_err(|err| explain_connect(err, addr))?;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(self.read_buffer);
        let url = format!("{}{path}", self.target.base_url);
        let (socket, _response) = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .map_err(|err| explain_handshake(err, &url))?;
        let (sink, stream) = socket.split();
        let closing = Arc::new(AtomicBool::new(false));
        Ok((SwitchboardTx { sink, closing: closing.clone() }, SwitchboardRx { stream, echo, closing }))
    }
}

impl Protocol for Switchboard {
    type Tx = SwitchboardTx;
    type Rx = SwitchboardRx;

    async fn connect(&self) -> Result<Connection<Self>> {
        let (tx, mut rx) = self.open("/ws", false).await?;
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
        let (tx, rx) = self.open("/ws/echo", true).await?;
        Ok(Connection { id: String::new(), tx, rx })
    }
}

fn explain_connect(err: std::io::Error, addr: std::net::SocketAddr) -> anyhow::Error {
    let hint = match err.raw_os_error() {
        Some(24) => "; the load generator ran out of file descriptors: raise `ulimit -n` or open fewer connections",
        Some(99) => "; out of local ports: too many connections in TIME_WAIT, lower the rate or wait a minute",
        Some(111) => "; is the server running?",
        _ => "",
    };
    anyhow!("cannot connect to {addr}: {err}{hint}")
}

fn explain_handshake(err: WsError, url: &str) -> anyhow::Error {
    match err {
        WsError::Http(response) => {
            let status = response.status();
            let hint = match status.as_u16() {
                429 => {
                    "; the server's per-IP connection cap is below this run's connection count \
                     (every connection comes from 127.0.0.1): start it with --max-connections-per-ip 20000"
                }
                503 => "; the server is full: raise its --max-connections",
                401 => "; the server requires a token (--auth required), which the load generator does not send",
                403 => "; the server refused the Origin or the token",
                _ => "",
            };
            anyhow!("the server refused the WebSocket upgrade at {url}: HTTP {status}{hint}")
        }
        other => anyhow!("WebSocket handshake with {url} failed: {other}"),
    }
}

/// The sending half of a Switchboard connection.
pub struct SwitchboardTx {
    sink: SplitSink<Ws, Message>,
    /// Set once this side has sent its close frame.
    closing: Arc<AtomicBool>,
}

impl SwitchboardTx {
    async fn feed(&mut self, text: String) -> Result<()> {
        self.sink.feed(Message::text(text)).await.context("sending")
    }

    async fn send(&mut self, text: String) -> Result<()> {
        self.sink.send(Message::text(text)).await.context("sending")
    }
}

impl super::Tx for SwitchboardTx {
    async fn join(&mut self, room: &str) -> Result<()> {
        self.send(format!(r#"{{"type":"join","room":{}}}"#, json_string(room))).await
    }

    async fn leave(&mut self, room: &str) -> Result<()> {
        self.send(format!(r#"{{"type":"leave","room":{}}}"#, json_string(room))).await
    }

    async fn relay(&mut self, to: &str, message: &Outgoing) -> Result<()> {
        let kind = match message.kind {
            BodyKind::Sdp => "offer",
            BodyKind::Signal => "signal",
            BodyKind::Candidate => "candidate",
        };
        let Stamp { seq, due_us, sent_us } = message.stamp;
        let mut frame = String::with_capacity(message.size + 64);
        let _ = write!(
            frame,
            r#"{{"type":"{kind}","target":{},"seq":{seq},"ts":{due_us},"st":{sent_us},"#,
            json_string(to)
        );
        match message.kind {
            BodyKind::Sdp | BodyKind::Signal => {
                const TAIL: &str = r#"","sdpType":"offer"}"#;
                frame.push_str(r#""sdp":""#);
                frame.push_str(sdp_pad(message.size.saturating_sub(frame.len() + TAIL.len())));
                frame.push_str(TAIL);
            }
            BodyKind::Candidate => {
                const HEAD: &str = r#""candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 "#;
                const TAIL: &str = r#" typ host generation 0","sdpMid":"0","sdpMLineIndex":0}}"#;
                frame.push_str(HEAD);
                frame.push_str(digit_pad(message.size.saturating_sub(frame.len() + TAIL.len()).max(4)));
                frame.push_str(TAIL);
            }
        }
        self.feed(frame).await
    }

    async fn broadcast(&mut self, room: &str, message: &Outgoing) -> Result<()> {
        let Stamp { seq, due_us, sent_us } = message.stamp;
        let mut frame = String::with_capacity(message.size + 64);
        let _ = write!(
            frame,
            r#"{{"type":"broadcast","room":{},"data":{{"seq":{seq},"ts":{due_us},"st":{sent_us},"pad":""#,
            json_string(room)
        );
        const TAIL: &str = r#""}}"#;
        frame.push_str(sdp_pad(message.size.saturating_sub(frame.len() + TAIL.len())));
        frame.push_str(TAIL);
        self.feed(frame).await
    }

    async fn echo(&mut self, text: &str) -> Result<()> {
        self.feed(text.to_owned()).await
    }

    async fn flush(&mut self) -> Result<()> {
        self.sink.flush().await.context("sending")
    }

    async fn close(&mut self) -> Result<()> {
        self.closing.store(true, Ordering::Relaxed);
        match self.sink.close().await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(()),
            Err(err) => Err(err).context("closing"),
        }
    }
}

/// The receiving half of a Switchboard connection.
pub struct SwitchboardRx {
    stream: SplitStream<Ws>,
    echo: bool,
    closing: Arc<AtomicBool>,
}

impl super::Rx for SwitchboardRx {
    async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            let Some(message) = self.stream.next().await else { return Ok(None) };
            return match message {
                Ok(Message::Text(text)) => Ok(Some(if self.echo { decode_echo(&text) } else { decode(&text) })),
                Ok(Message::Binary(bytes)) => {
                    Ok(Some(Event::Other(format!("a binary frame of {} bytes", bytes.len()))))
                }
                Ok(Message::Close(None)) => Ok(None),
                Ok(Message::Close(Some(frame))) if frame.code == CloseCode::Normal => Ok(None),
                Ok(Message::Close(Some(frame))) => Err(anyhow!(
                    "the server closed the connection: {} {:?}",
                    u16::from(frame.code),
                    frame.reason.as_str()
                )),
                Ok(_) => continue,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(None),
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
                    if self.closing.load(Ordering::Relaxed) =>
                {
                    Err(UncleanClose.into())
                }
                Err(err) => Err(anyhow!("connection failed: {err}")),
            };
        }
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

/// The load generator's fields inside a broadcast's `data`.
#[derive(Deserialize)]
struct DataStamp {
    seq: u64,
    ts: u64,
    st: u64,
}

/// Decodes one frame from `/ws`.
fn decode(text: &str) -> Event {
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
        "broadcast" => {
            let stamp = frame.data.and_then(|raw| serde_json::from_str::<DataStamp>(raw.get()).ok()).map(|d| Stamp {
                seq: d.seq,
                due_us: d.ts,
                sent_us: d.st,
            });
            Event::Broadcast { from: from(), stamp }
        }
        "error" => Event::Error {
            code: frame.code.unwrap_or_default().into_owned(),
            message: frame.message.unwrap_or_default().into_owned(),
        },
        kind if RelayKind::from_wire(kind).is_some() => Event::Relay { from: from(), stamp },
        _ => Event::Other(truncate(text)),
    }
}

/// The seeds' echo prefix.
const ECHO_PREFIX: &str = "Server received: ";

/// Decodes one frame from `/ws/echo`: `Server received: <text>` gives `<text>`.
fn decode_echo(text: &str) -> Event {
    match text.strip_prefix(ECHO_PREFIX) {
        Some(echoed) => Event::Echo(echoed.to_owned()),
        None => Event::Other(format!("an echo without the `{ECHO_PREFIX}` prefix: {}", truncate(text))),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

/// SDP-looking padding: real lines, with `\r\n` escaped as JSON writes them.
static SDP_PAD: LazyLock<String> = LazyLock::new(|| {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0 1\\r\\na=extmap-allow-mixed\\r\\na=msid-semantic: WMS stream\\r\\n",
    );
    let mut line = 0;
    while sdp.len() < 70_000 {
        let _ = write!(
            sdp,
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\\r\\nc=IN IP4 0.0.0.0\\r\\n\
             a=rtcp:9 IN IP4 0.0.0.0\\r\\na=ice-ufrag:EsAw{line:04}\\r\\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\\r\\n\
             a=fingerprint:sha-256 0D:34:A4:9B:29:B7:4A:35:B7:9F:C3:2C:AD:3E:7C:E5:2D:30:A2:3B:65:1D:8C:5F:6E:6B:6C:9A:A4:CC:E5:{:02X}\\r\\n\
             a=setup:actpass\\r\\na=mid:{line}\\r\\na=sendrecv\\r\\na=rtcp-mux\\r\\na=rtpmap:111 opus/48000/2\\r\\n\
             a=fmtp:111 minptime=10;useinbandfec=1\\r\\na=ssrc:{} cname:benchbenchbench{line}\\r\\n",
            line % 256,
            3_000_000_000u64 + line as u64 * 7919,
        );
        line += 1;
    }
    sdp
});

/// At most `len` bytes of SDP padding, never cut inside an escape.
fn sdp_pad(len: usize) -> &'static str {
    let pad = &SDP_PAD[..len.min(SDP_PAD.len())];
    pad.trim_end_matches('\\')
}

/// `len` digits (at most 64 KiB), for a candidate's port-and-more field.
fn digit_pad(len: usize) -> &'static str {
    static DIGITS: LazyLock<String> = LazyLock::new(|| "5000012345".repeat(6554));
    &DIGITS[..len.min(DIGITS.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn padding_never_breaks_json() {
        for len in 0..600 {
            let text = format!("\"{}\"", sdp_pad(len));
            let value: String = serde_json::from_str(&text).unwrap_or_else(|e| panic!("len {len}: {e}"));
            assert!(value.len() <= len);
        }
        assert!(sdp_pad(4096).len() >= 4095);
    }
}
