//! The WebSocket layer: upgrade, frames, and the per-connection socket.
//!
//! Why not a WebSocket stream from a library? Memory. A library stream owns a
//! read buffer for the whole life of the connection (tungstenite: 128 KiB by
//! default, 4 KiB at the least we could configure), and most signaling
//! connections spend their life idle. Measured at 15,000 joined peers, that
//! buffer was a third of the server's memory per connection. Here an idle
//! connection holds its stream and nothing else: reads go through one scratch
//! buffer per worker thread (see [`socket`]).
//!
//! What is not ours: frame headers are parsed and formatted by tungstenite's
//! [`FrameHeader`](tungstenite::protocol::frame::FrameHeader), close codes
//! checked by its `CloseCode`, and messages are axum's [`Message`] type.
//!
//! - [`upgrade`]: the HTTP/1.1 handshake, as an axum extractor.
//! - [`codec`]: bytes to messages and back, with the rules RFC 6455 sets a server.
//! - [`socket`]: reads, writes and the closing handshake over a stream.
//!
//! [`Message`]: axum::extract::ws::Message

pub mod codec;
pub mod socket;
pub mod upgrade;

pub use codec::FrameError;
pub use socket::{Error, WebSocket};
pub use upgrade::{UpgradeRejection, UpgradedStream, WebSocketUpgrade};

/// The socket every endpoint works with.
pub type Socket = WebSocket<UpgradedStream>;
