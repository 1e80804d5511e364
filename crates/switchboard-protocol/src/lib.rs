//! The Switchboard signaling protocol, shared by the server and every Rust client.
//!
//! Everything on `/ws` is a JSON text frame carrying a `"type"` field. This crate
//! owns the shape of those frames so the server and the clients cannot drift apart:
//!
//! * [`client`]: what a client sends. [`client::decode`] validates a frame in one
//!   pass and borrows from it, so the server can route a 5 KB SDP offer without
//!   copying or re-serialising its body.
//! * [`server`]: what the server sends. Borrowing encoders for the server's hot
//!   path, and an owned [`server::ServerMessage`] that clients decode into.
//! * [`error`]: the stable, kebab-case error codes a client can switch on.
//! * [`relay`]: the message types that are forwarded peer to peer (`sdp`,
//!   `ice-candidate`, `offer`, ...), and the splice that stamps `from` on them.
//!
//! The human-readable specification is `docs/protocol.md`; the tests in this crate
//! pin the examples given there.

pub mod client;
pub mod compat;
pub mod error;
pub mod relay;
pub mod server;

pub use client::{decode, ClientMessage, DecodeError, Request};
pub use error::ErrorCode;
pub use relay::RelayKind;
pub use server::ServerMessage;

/// The room a `join` without a `room` field enters: the seeds' single shared room.
pub const DEFAULT_ROOM: &str = "default";
