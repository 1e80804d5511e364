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
//! The adapters: [`switchboard`] (Switchboard, and the bare-library echo server),
//! [`bare_relay`] (the bare-library relay, `switchboard-bench-bare-relay`),
//! [`seed`] (the seeds' Node.js servers in bench/peers), [`matchbox`]
//! (matchbox_server), [`peerjs`] (peerjs-server, and Switchboard's PeerJS dialect).
//! Each says in its [`Features`] what the server cannot do; a scenario that
//! needs it ends with [`Unsupported`], which the report shows as "n/a" with the
//! reason.
//! [`ws`] is the WebSocket plumbing they share, [`body`] the bodies they carry.

use std::future::Future;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use tokio::net::{TcpSocket, TcpStream};

pub mod bare_relay;
pub mod body;
pub mod matchbox;
pub mod peerjs;
pub mod seed;
pub mod switchboard;
pub mod ws;

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
pub struct Connection<P: Protocol> {
    pub id: PeerId,
    pub tx: P::Tx,
    pub rx: P::Rx,
}

/// What a server can do, and why not where it cannot.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// Peers with ids, in rooms, relaying to each other (idle, churn).
    pub signaling: Result<(), &'static str>,
    /// Two peers of a room relaying to each other (relay): everything with
    /// signaling, and the bare relay, which pairs connections without rooms.
    pub relay: Result<(), &'static str>,
    /// One message to every other member of a room (fanout).
    pub broadcast: Result<(), &'static str>,
    /// The seeds' echo (echo).
    pub echo: Result<(), &'static str>,
    /// A peer can leave a room and stay connected (churn's leave step).
    pub leave: bool,
    /// Members of a room are told when another peer joins (idle checks the count).
    pub membership_events: bool,
}

impl Default for Features {
    /// Everything but leave and membership events.
    fn default() -> Features {
        Features {
            signaling: Ok(()),
            relay: Ok(()),
            broadcast: Ok(()),
            echo: Ok(()),
            leave: false,
            membership_events: false,
        }
    }
}

/// A scenario the server cannot run, and why: reported as "n/a".
#[derive(Debug)]
pub struct Unsupported(pub &'static str);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not supported by this server: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// What a connection in a room is for: some servers (the seeds) broadcast on a
/// different endpoint than they relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Relaying to peers, and membership events.
    Signaling,
    /// Broadcasting to the room.
    Broadcast,
}

/// A server the load generator can drive.
pub trait Protocol: Clone + Send + Sync + 'static {
    type Tx: Tx;
    type Rx: Rx;

    /// What the server can do.
    fn features(&self) -> Features;

    /// Opens a signaling connection and waits until the server has said who it is.
    fn connect(&self) -> impl Future<Output = Result<Connection<Self>>> + Send;

    /// Opens a connection that is a member of `room`, and returns it with how
    /// many `peer-joined` arrived before the server confirmed the join. By
    /// default: [`Protocol::connect`], `join`, and reading until `joined`; servers
    /// that take the room in the URL do it their way.
    fn connect_in(
        &self,
        room: &str,
        _purpose: Purpose,
    ) -> impl Future<Output = Result<(Connection<Self>, u64)>> + Send {
        connect_and_join(self, room)
    }

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

/// [`Protocol::connect`], `join`, and reading until `joined`; returns the
/// connection and how many `peer-joined` came before `joined`.
pub async fn connect_and_join<P: Protocol>(protocol: &P, room: &str) -> Result<(Connection<P>, u64)> {
    let mut connection = protocol.connect().await?;
    connection.tx.join(room).await?;
    let early = await_joined(&mut connection.rx, room).await?;
    Ok((connection, early))
}

/// Reads until `joined` for `room`; returns how many `peer-joined` came first.
pub async fn await_joined<R: Rx>(rx: &mut R, room: &str) -> Result<u64> {
    let mut peer_joined = 0;
    loop {
        match rx.next().await? {
            Some(Event::Joined { room: joined }) if joined == room => return Ok(peer_joined),
            Some(Event::PeerJoined { .. }) => peer_joined += 1,
            Some(Event::PeerLeft { .. }) => {}
            Some(Event::Error { code, message }) => bail!("joining {room:?}: server error `{code}`: {message}"),
            Some(other) => bail!("joining {room:?}: expected `joined`, got {other:?}"),
            None => bail!("joining {room:?}: the server closed the connection"),
        }
    }
}

/// The error an [`Rx`] returns when the server dropped the connection without the
/// close frame it owes in reply to ours (RFC 6455, section 5.5.1): nothing was
/// lost, but the close handshake was not completed.
#[derive(Debug)]
pub struct UncleanClose;

impl std::fmt::Display for UncleanClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server dropped the connection without answering our close frame")
    }
}

impl std::error::Error for UncleanClose {}

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

/// Opens a TCP connection to `addr` from the same loopback address, choosing the
/// local port itself.
///
/// The kernel's own choice (`connect` without `bind`) searches the ephemeral
/// range for a free port, and once about half the range is in use to one
/// destination that search costs milliseconds of CPU per connection: beyond about
/// 10,000 connections the load generator would measure its own kernel instead of
/// the server. Walking the range with explicit binds costs one lookup per port.
/// Ports that are taken (by anyone) are skipped; after many misses in a row it
/// falls back to the kernel's choice.
pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static RANGE: LazyLock<(u32, u32)> = LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(|p| p.parse::<u32>());
                match (parts.next(), parts.next()) {
                    (Some(Ok(low)), Some(Ok(high))) if low <= high && high <= 65535 => Some((low, high)),
                    _ => None,
                }
            })
            .unwrap_or((32768, 60999))
    });
    let (low, high) = *RANGE;
    for _ in 0..64 {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % (high - low + 1);
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Lets a port whose last connection is in TIME_WAIT be used again.
        socket.set_reuseaddr(true)?;
        match socket.bind(SocketAddr::new(addr.ip(), port as u16)) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
        match socket.connect(addr).await {
            Err(err) if err.kind() == ErrorKind::AddrInUse || err.kind() == ErrorKind::AddrNotAvailable => continue,
            result => return result,
        }
    }
    TcpStream::connect(addr).await
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

    #[tokio::test]
    async fn connects_from_ports_of_its_choosing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let stream = connect_tcp(addr).await.unwrap();
            let (accepted, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, stream.local_addr().unwrap());
            assert!(peer.ip().is_loopback());
            ports.push(peer.port());
            drop(accepted);
        }
        ports.dedup();
        assert_eq!(ports.len(), 3);
    }
}
