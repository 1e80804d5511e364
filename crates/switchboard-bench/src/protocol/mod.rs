//! The small interface every scenario talks through, so that one load generator
//! can drive different signaling servers.
//!
//! A server is a [`Protocol`]: it opens connections. A [`Connection`] is split
//! into a [`Tx`] half (join, leave, relay to a peer, broadcast to a room, echo) and
//! an [`Rx`] half that yields [`Event`]s, so a scenario can send from one task
//! while another receives. Scenarios describe what to send as an [`Outgoing`]
//! (a size class, a sequence number and timestamps); the adapter decides how that
//! looks on its wire and turns what comes back into an [`Event`], handing the
//! stamp back to the scenario.
//!
//! Only the Switchboard adapter exists ([`switchboard`]). An adapter for another
//! server (matchbox_server, peerjs-server, the Node seed server) implements the
//! same three traits in its own module; a server that lacks a feature (say, room
//! broadcast) returns an error from that method and the scenarios that need it
//! fail with that message.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

pub mod switchboard;

/// A peer id, as the server assigned it.
pub type PeerId = String;

/// The measurement fields a scenario puts in every relayed or broadcast body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sender's sequence number on this stream, from 0.
    pub seq: u64,
    /// When the message was due, in [`crate::stats::Clock`] microseconds. Latency
    /// is measured from here, so an open-loop sender that falls behind its
    /// timetable is charged for it (no coordinated omission).
    pub due_us: u64,
    /// When it was actually written to the socket. Equal to `due_us` in closed loop.
    pub sent_us: u64,
}

/// The size class of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A session description (the adapter may send it as an offer or answer).
    Sdp,
    /// An application-defined message carrying a session description.
    Signal,
    /// A trickled ICE candidate.
    Candidate,
}

/// One message a scenario wants sent.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    pub kind: BodyKind,
    pub stamp: Stamp,
    /// Roughly how many bytes the whole frame should take; adapters pad to it.
    pub size: usize,
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection's own peer id (adapters consume it in `connect`).
    Welcome { id: PeerId },
    /// This connection entered `room`.
    Joined { room: String },
    /// Another peer entered a room this connection is in.
    PeerJoined { peer: PeerId },
    /// Another peer left a room this connection is in.
    PeerLeft { peer: PeerId },
    /// This connection left the rooms it asked to leave.
    Left { rooms: Vec<String> },
    /// A message another peer addressed to this one; `stamp` is `None` when the body
    /// carried none (not sent by this load generator).
    Relay { from: PeerId, stamp: Option<Stamp> },
    /// A message another peer broadcast to a room this connection is in.
    Broadcast { from: PeerId, stamp: Option<Stamp> },
    /// An echo server's reply, with any server-added decoration removed.
    Echo(String),
    /// The server refused something.
    Error { code: String, message: String },
    /// Anything else, described.
    Other(String),
}

/// An open connection: its peer id (empty on endpoints without one) and its halves.
pub struct Connection<P: Protocol + ?Sized> {
    pub id: PeerId,
    pub tx: P::Tx,
    pub rx: P::Rx,
}

/// A server the load generator can drive.
pub trait Protocol: Clone + Send + Sync + 'static {
    type Tx: Tx;
    type Rx: Rx;

    /// Opens a signaling connection and waits until the server has said who it is.
    fn connect(&self) -> impl Future<Output = Result<Connection<Self>>> + Send;

    /// Opens a connection to the server's echo endpoint.
    fn connect_echo(&self) -> impl Future<Output = Result<Connection<Self>>> + Send;
}

/// The sending half of a connection.
///
/// `relay`, `broadcast` and `echo` may buffer; `flush` writes everything buffered.
/// `join` and `leave` flush.
pub trait Tx: Send + 'static {
    fn join(&mut self, room: &str) -> impl Future<Output = Result<()>> + Send;
    fn leave(&mut self, room: &str) -> impl Future<Output = Result<()>> + Send;
    fn relay(&mut self, to: &str, message: &Outgoing) -> impl Future<Output = Result<()>> + Send;
    fn broadcast(&mut self, room: &str, message: &Outgoing) -> impl Future<Output = Result<()>> + Send;
    fn echo(&mut self, text: &str) -> impl Future<Output = Result<()>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Starts a clean close; the `Rx` half then ends with `Ok(None)`.
    fn close(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// The receiving half of a connection.
pub trait Rx: Send + 'static {
    /// The next event; `Ok(None)` once the connection closed cleanly; an error
    /// when it failed or the server closed it with an error code.
    ///
    /// Cancel-safe: dropping the future before it completes loses no event.
    fn next(&mut self) -> impl Future<Output = Result<Option<Event>>> + Send;
}

/// Where the server under test listens: a loopback address and the base URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// `ws://HOST:PORT`, without a trailing slash; adapters append their paths.
    pub base_url: String,
    /// The resolved address, always a loopback one.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `ws://HOST:PORT[/]`. Refuses anything that is not on this machine's
    /// loopback interface: the load generator never sends traffic elsewhere.
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url.strip_prefix("ws://").with_context(|| {
            format!("--url must start with ws:// (got {url:?}); wss:// is not supported by the load generator")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') {
            bail!("--url is the server's base URL (ws://127.0.0.1:PORT); the scenario appends the path (got {url:?})");
        }
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .with_context(|| format!("--url {url:?}: expected ws://127.0.0.1:PORT"))?
            .collect();
        let Some(addr) = addrs.iter().copied().find(|addr| addr.ip().is_loopback()) else {
            bail!("--url {url:?} is not a loopback address: the load generator only targets 127.0.0.1");
        };
        if let Some(other) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
            bail!("--url {url:?} also resolves to {other}, which is not loopback; use ws://127.0.0.1:PORT");
        }
        Ok(Target { base_url: format!("ws://{authority}"), addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_only() {
        let target = Target::parse("ws://127.0.0.1:18500/").unwrap();
        assert_eq!(target.base_url, "ws://127.0.0.1:18500");
        assert_eq!(target.addr, "127.0.0.1:18500".parse().unwrap());
        assert!(Target::parse("ws://10.0.0.1:80").is_err());
        assert!(Target::parse("ws://192.168.1.2:80").is_err());
        assert!(Target::parse("http://127.0.0.1:80").is_err());
        assert!(Target::parse("ws://127.0.0.1:80/ws").is_err());
    }
}
