//! The WebSocket plumbing every adapter shares: opening a connection on
//! loopback (with the load generator's own port choice and a small read buffer),
//! a sending half that writes what the adapter's [`Encode`] makes of each
//! request, and a receiving half that turns each text frame into an [`Event`]
//! with the adapter's decoder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::body::truncate;
use super::{Event, Outgoing, Target, UncleanClose};

type Ws = WebSocketStream<TcpStream>;

/// Turns one text frame from the server into an event.
pub type Decode = fn(&str) -> Event;

/// How an adapter writes requests. Each connection's sending half owns one, so
/// it can carry per-connection state (say, the peer's own id).
pub trait Encode: Send + 'static {
    fn join(&self, room: &str) -> Result<String>;
    fn leave(&self, room: &str) -> Result<String>;
    fn relay(&self, to: &str, message: &Outgoing) -> Result<String>;
    fn broadcast(&self, room: &str, message: &Outgoing) -> Result<String>;
}

/// Opens a WebSocket to `target` at `path` (with any query), reading frames with
/// `decode`. `encode` writes the requests sent on it.
pub async fn open<E: Encode>(
    target: &Target,
    path: &str,
    read_buffer: usize,
    encode: E,
    decode: Decode,
) -> Result<(WsTx<E>, WsRx)> {
    let addr = target.addr;
    let stream = super::connect_tcp(addr).await.map_err(|err| explain_connect(err, addr))?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let url = format!("{}{path}", target.base_url);
    let (socket, _response) = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
        .await
        .map_err(|err| explain_handshake(err, &url))?;
    let (sink, stream) = socket.split();
    let closing = Arc::new(AtomicBool::new(false));
    Ok((WsTx { sink, closing: closing.clone(), encode }, WsRx { stream, decode, closing }))
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

/// The sending half of a connection.
pub struct WsTx<E> {
    sink: SplitSink<Ws, Message>,
    /// Set once this side has sent its close frame.
    closing: Arc<AtomicBool>,
    pub encode: E,
}

impl<E: Encode> WsTx<E> {
    async fn feed(&mut self, text: String) -> Result<()> {
        self.sink.feed(Message::text(text)).await.context("sending")
    }

    async fn send(&mut self, text: String) -> Result<()> {
        self.sink.send(Message::text(text)).await.context("sending")
    }
}

impl<E: Encode> super::Tx for WsTx<E> {
    async fn join(&mut self, room: &str) -> Result<()> {
        let frame = self.encode.join(room)?;
        self.send(frame).await
    }

    async fn leave(&mut self, room: &str) -> Result<()> {
        let frame = self.encode.leave(room)?;
        self.send(frame).await
    }

    async fn relay(&mut self, to: &str, message: &Outgoing) -> Result<()> {
        let frame = self.encode.relay(to, message)?;
        self.feed(frame).await
    }

    async fn broadcast(&mut self, room: &str, message: &Outgoing) -> Result<()> {
        let frame = self.encode.broadcast(room, message)?;
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

/// The receiving half of a connection.
pub struct WsRx {
    stream: SplitStream<Ws>,
    decode: Decode,
    closing: Arc<AtomicBool>,
}

impl super::Rx for WsRx {
    async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            let Some(message) = self.stream.next().await else { return Ok(None) };
            return match message {
                Ok(Message::Text(text)) => Ok(Some((self.decode)(&text))),
                Ok(Message::Binary(bytes)) => match std::str::from_utf8(&bytes) {
                    // The seeds' broadcast server sends what it got as it got it (ws
                    // hands Node a Buffer, which it sends back as binary).
                    Ok(text) => Ok(Some((self.decode)(text))),
                    Err(_) => Ok(Some(Event::Other(format!("a binary frame of {} bytes", bytes.len())))),
                },
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

/// The seeds' echo prefix.
pub const ECHO_PREFIX: &str = "Server received: ";

/// Decodes one frame from an echo endpoint: `Server received: <text>` gives `<text>`.
pub fn decode_echo(text: &str) -> Event {
    match text.strip_prefix(ECHO_PREFIX) {
        Some(echoed) => Event::Echo(echoed.to_owned()),
        None => Event::Other(format!("an echo without the `{ECHO_PREFIX}` prefix: {}", truncate(text))),
    }
}
