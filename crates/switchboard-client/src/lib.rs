//! An async Rust client for Switchboard's signaling endpoint (`/ws`).
//!
//! Used by the integration tests and the load generator; small enough to read in
//! one sitting. It speaks the protocol through `switchboard-protocol`, so a
//! change to the wire format shows up here as a compile error or a failing test.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use serde_json::json;
//! let mut alice = switchboard_client::Client::connect("ws://127.0.0.1:8080/ws").await?;
//! let mut bob = switchboard_client::Client::connect("ws://127.0.0.1:8080/ws").await?;
//! alice.join("call").await?;
//! bob.join("call").await?;
//! alice.send(&json!({"type": "offer", "target": bob.id(), "sdp": "v=0"})).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_protocol::server::{PeerInfo, ServerMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use switchboard_protocol as protocol;

/// The WebSocket stream type under the client.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long [`Client::recv`] waits before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent a frame this client cannot decode.
    #[error("undecodable frame {frame:?}: {source}")]
    Decode { frame: String, source: serde_json::Error },
    /// Nothing arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The server closed the connection.
    #[error("connection closed: {0:?}")]
    Closed(Option<CloseFrame>),
    /// The server sent something other than what the call expected.
    #[error("unexpected message: {0:?}")]
    Unexpected(Box<ServerMessage>),
}

/// One signaling connection.
pub struct Client {
    socket: Socket,
    id: String,
    resume: Option<String>,
    resumed: bool,
    rooms: Vec<String>,
    timeout: Duration,
}

impl Client {
    /// Connects and reads the `welcome`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (socket, _response) = tokio_tungstenite::connect_async(url).await?;
        let mut client = Client {
            socket,
            id: String::new(),
            resume: None,
            resumed: false,
            rooms: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        };
        match client.recv().await? {
            ServerMessage::Welcome { id, resume, resumed, rooms, .. } => {
                client.id = id;
                client.resume = resume;
                client.resumed = resumed.unwrap_or(false);
                client.rooms = rooms;
            }
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
        Ok(client)
    }

    /// Connects as a session that can be resumed (`?resume`), or resumes the
    /// session of `token`; see [`Client::resume_token`] and [`Client::resumed`].
    pub async fn connect_resumable(base_url: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let separator = if base_url.contains('?') { '&' } else { '?' };
        Client::connect(&format!("{base_url}{separator}resume={}", token.unwrap_or(""))).await
    }

    /// This peer's id, from `welcome`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token that resumes this session after a dropped connection.
    pub fn resume_token(&self) -> Option<&str> {
        self.resume.as_deref()
    }

    /// Whether this connection resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The rooms a resumed session is in, from `welcome`.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// Changes how long `recv` waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        self.send_text(&message.to_string()).await
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        Ok(self.socket.send(Message::text(text)).await?)
    }

    /// The next text frame, raw. Pings and pongs are skipped (and pings answered).
    pub async fn recv_text(&mut self) -> Result<String, ClientError> {
        let next = async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                    Some(Ok(Message::Close(frame))) => return Err(ClientError::Closed(frame)),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Err(err.into()),
                    None => return Err(ClientError::Closed(None)),
                }
            }
        };
        tokio::time::timeout(self.timeout, next).await.map_err(|_| ClientError::Timeout)?
    }

    /// The next message, decoded.
    pub async fn recv(&mut self) -> Result<ServerMessage, ClientError> {
        let frame = self.recv_text().await?;
        ServerMessage::decode(&frame).map_err(|source| ClientError::Decode { frame, source })
    }

    /// Joins `room` and returns the peers already there.
    pub async fn join(&mut self, room: &str) -> Result<Vec<PeerInfo>, ClientError> {
        self.join_with(json!({"type": "join", "room": room})).await
    }

    /// Sends a `join` message as given and waits for `joined`.
    pub async fn join_with(&mut self, message: Value) -> Result<Vec<PeerInfo>, ClientError> {
        self.send(&message).await?;
        match self.recv().await? {
            ServerMessage::Joined { peers, .. } => Ok(peers),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends a relay message of `kind` to `target`, with extra fields from `body`.
    pub async fn relay(&mut self, kind: &str, target: &str, body: Value) -> Result<(), ClientError> {
        let mut message = match body {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        message.insert("type".into(), kind.into());
        message.insert("target".into(), target.into());
        self.send(&Value::Object(message)).await
    }

    /// Closes the connection with a normal close frame.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.socket.close(None).await?;
        Ok(())
    }

    /// The underlying socket, for tests that need raw frames.
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }
}
