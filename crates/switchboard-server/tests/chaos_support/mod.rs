//! Tools for the chaos and slow-consumer tests: a WebSocket client written by
//! hand on a raw TCP socket (so a test can send any bytes at all, cut a frame in
//! half, or read exactly what the server wrote), a pair of well-behaved witness
//! peers that check nothing leaked into their conversation, and small helpers
//! over the server's process and metrics.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::support::{self, Server};

/// How long any single expected event may take. Generous: the machine may be
/// busy; a test only fails on it when the event never comes.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;
/// The FIN bit, or'ed into a frame's first byte.
pub const FIN: u8 = 0x80;

/// The RFC 6455 example key and the accept value the server must answer with.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A client-to-server frame: `first` is the first byte (FIN, RSV bits, opcode);
/// the payload is masked, as a client must.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    push_len(&mut out, 0x80, payload.len() as u64);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The same frame without a mask, which a client must never send.
pub fn unmasked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_len(&mut out, 0, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn push_len(out: &mut Vec<u8>, mask_bit: u8, len: u64) {
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (`None` for an empty close payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> &str {
        assert_eq!(self.opcode, TEXT, "not a text frame: {self:?}");
        std::str::from_utf8(&self.payload).expect("the server's text is UTF-8")
    }
}

/// How reading from the server ended when no frame came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server closed the TCP connection (FIN).
    Eof,
    /// The connection was reset, or another socket error.
    Error(String),
}

/// A WebSocket client that writes and reads raw bytes.
pub struct RawWs {
    pub reader: FrameReader,
    pub writer: OwnedWriteHalf,
    /// The peer id from `welcome`, for `/ws` connections.
    pub id: String,
}

/// The reading half of a [`RawWs`]: frames as the server wrote them.
pub struct FrameReader {
    pub read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl RawWs {
    /// Opens a TCP connection and performs the upgrade handshake on `path`.
    pub async fn upgrade(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::upgrade_with(addr, path, &[]).await
    }

    /// Like [`RawWs::upgrade`], with `early` bytes (frames, say) sent in the
    /// same write as the handshake, before the server has answered it.
    pub async fn upgrade_with(addr: SocketAddr, path: &str, early: &[u8]) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(early);
        stream.write_all(&request).await.expect("write the handshake");
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = within(stream.read(&mut chunk)).await.expect("read the handshake response");
            assert!(n > 0, "the server closed during the handshake: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101 "), "no upgrade: {head}");
        assert!(head.contains(&format!("sec-websocket-accept: {}", ACCEPT.to_ascii_lowercase())), "{head}");
        buf.drain(..head_end);
        let (read, writer) = stream.into_split();
        RawWs { reader: FrameReader { read, buf }, writer, id: String::new() }
    }

    /// A signaling connection on `/ws`, past its `welcome`.
    pub async fn signaling(addr: SocketAddr) -> RawWs {
        let mut ws = RawWs::upgrade(addr, "/ws").await;
        let welcome = ws.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws.id = welcome["id"].as_str().expect("welcome id").to_owned();
        ws
    }

    /// Joins `room` and returns the `joined` reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send_text(&json!({"type": "join", "room": room}).to_string()).await;
        let joined = self.next_json().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        joined
    }

    /// Writes bytes as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        within(self.writer.write_all(bytes)).await.expect("write to the server");
    }

    /// Writes bytes, reporting failure instead of panicking (the server may have closed).
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Sends one complete, masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&frame(FIN | TEXT, text.as_bytes())).await;
    }

    pub async fn read_frame(&mut self) -> Result<Frame, End> {
        self.reader.read_frame().await
    }

    pub async fn next_json(&mut self) -> Value {
        self.reader.next_json().await
    }

    pub async fn expect_close(&mut self, code: u16) {
        self.reader.expect_close(code).await
    }

    pub async fn drain(&mut self) -> (Vec<String>, Option<u16>) {
        self.reader.drain().await
    }

    /// Checks the connection still answers: an application ping gets its pong.
    pub async fn assert_alive(&mut self, rid: &str) {
        self.send_text(&json!({"type": "ping", "rid": rid}).to_string()).await;
        assert_eq!(self.next_json().await, json!({"type": "pong", "rid": rid}));
    }
}

impl FrameReader {
    /// The next frame, or how the connection ended.
    pub async fn read_frame(&mut self) -> Result<Frame, End> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match within(self.read.read(&mut chunk)).await {
                Ok(0) => return Err(End::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) => return Err(End::Error(err.to_string())),
            }
        }
    }

    /// The next text frame as JSON; pings and pongs are skipped.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.read_frame().await {
                Ok(Frame { opcode: PING | PONG, .. }) => continue,
                Ok(frame) if frame.opcode == TEXT => {
                    return serde_json::from_str(frame.text()).expect("JSON from the server");
                }
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until a close frame and checks its code, failing if the
    /// connection ends without one or a text frame comes first.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            match self.read_frame().await {
                Ok(Frame { opcode: PING | PONG, .. }) => continue,
                Ok(frame) if frame.opcode == CLOSE => {
                    assert_eq!(frame.close_code(), Some(code), "close frame {frame:?}");
                    return;
                }
                other => panic!("expected close {code}, got {other:?}"),
            }
        }
    }

    /// Reads everything until the connection ends: the text frames, and the
    /// close frame's code if one came.
    pub async fn drain(&mut self) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match self.read_frame().await {
                Ok(frame) if frame.opcode == TEXT => texts.push(frame.text().to_owned()),
                Ok(frame) if frame.opcode == CLOSE => return (texts, frame.close_code()),
                Ok(_) => continue,
                Err(_) => return (texts, None),
            }
        }
    }
}

/// Parses one unmasked server frame from the start of `buf`: the frame and the
/// bytes it used, or `None` when more bytes are needed.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((Frame { fin: buf[0] & FIN != 0, opcode: buf[0] & 0x0f, payload }, at))
}

/// Awaits `future`, panicking if it takes longer than [`PATIENCE`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future).await.expect("timed out waiting for the server")
}

/// A signaling client with the patient timeout.
pub async fn client(server: &Server) -> Client {
    let mut client = within(server.client()).await;
    client.set_timeout(PATIENCE);
    client
}

/// The next message of a client, as JSON.
pub async fn recv_json(client: &mut Client) -> Value {
    let text = client.recv_text().await.unwrap_or_else(|err| panic!("{} expected a message: {err}", client.id()));
    serde_json::from_str(&text).expect("JSON from the server")
}

/// Two well-behaved peers in room `witness`, talking to each other. `check`
/// proves their conversation works and that nothing else reached them.
pub struct Witnesses {
    pub a: Client,
    pub b: Client,
    round: u64,
}

impl Witnesses {
    pub async fn join(server: &Server) -> Witnesses {
        let mut a = client(server).await;
        let mut b = client(server).await;
        a.join("witness").await.unwrap();
        b.join("witness").await.unwrap();
        assert_eq!(recv_json(&mut a).await, json!({"type": "peer-joined", "data": b.id(), "room": "witness"}));
        let mut witnesses = Witnesses { a, b, round: 0 };
        witnesses.check().await;
        witnesses
    }

    /// An offer one way, an answer the other, and a ping on each: every reply
    /// goes through the peer's own ordered queue, so anything unexpected sent
    /// to either of them would arrive before these and fail the check.
    pub async fn check(&mut self) {
        self.round += 1;
        let round = self.round;
        let offer = json!({"type": "offer", "target": self.b.id(), "sdp": format!("v=0 offer {round}")});
        self.a.send(&offer).await.unwrap();
        let mut expected = offer.clone();
        expected["from"] = json!(self.a.id());
        assert_eq!(recv_json(&mut self.b).await, expected, "witness b, round {round}");

        let answer = json!({"type": "answer", "target": self.a.id(), "sdp": format!("v=0 answer {round}")});
        self.b.send(&answer).await.unwrap();
        let mut expected = answer.clone();
        expected["from"] = json!(self.b.id());
        assert_eq!(recv_json(&mut self.a).await, expected, "witness a, round {round}");

        for witness in [&mut self.a, &mut self.b] {
            witness.send(&json!({"type": "ping", "rid": round})).await.unwrap();
            assert_eq!(recv_json(witness).await, json!({"type": "pong", "rid": round}));
        }
    }
}

/// The server's resident set size, in bytes (from /proc/PID/status).
pub fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

/// The server's open file descriptors.
pub fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("read /proc fd").count()
}

/// Polls until `probe` returns `expected` (up to [`PATIENCE`]); returns the last value.
pub async fn eventually<T, F, Fut>(what: &str, expected: T, mut probe: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = probe().await;
        if value == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what} is {value:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a metric until it equals `expected`.
pub async fn wait_metric(server: &Server, name: &str, expected: f64) {
    eventually(name, expected, || server.metric(name)).await;
}

/// `GET /healthz` answers 200.
pub async fn assert_healthy(server: &Server) {
    let (status, _) = within(support::http_get(server.addr, "/healthz")).await;
    assert_eq!(status, 200);
}
