//! The life of one WebSocket, whatever the endpoint.
//!
//! One task per connection, and no split into reader and writer tasks: the task
//! waits on four things at once (shutdown or takeover, its outbox, the socket,
//! the keepalive timer) and handles whichever is ready. Waiting holds no
//! buffers (see [`crate::websocket`]), and a second task would cost about 3 KiB
//! per connection for nothing.
//!
//! An idle connection costs what its task's future costs, and a future is as
//! large as its largest state: so the setup is boxed and freed before the loop,
//! the `select!` only picks a `Step` and the work that may wait comes after it,
//! and every rare path (writes, pings, the close handshake) is boxed.
//!
//! Writes happen outside the `select!`, so a half-written frame is never dropped
//! by a cancelled branch; a client that stops reading blocks only its own task,
//! for at most `write-timeout`, while its outbox overflows and marks it a slow
//! consumer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::admission::ConnectionSlot;
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::rate_limit::{Limit, RateLimits, RateSpec};
use crate::sweep::Sweeper;
use crate::telemetry::metrics::{Endpoint, Metrics};
use crate::websocket::{Error, FrameError, Socket};

/// Work a handler must finish before the connection reads its next frame.
pub type Pending<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What an endpoint does with the frames its clients send.
///
/// Handlers are synchronous: they route frames into outboxes and return. Replies
/// to the client itself also go through its outbox, so they are ordered with
/// everything else it is sent. The rare message that needs a round trip (a join
/// decided by Redis) returns [`Pending`] work instead; the connection finishes it
/// before reading on, so a client's messages still take effect in order. Only
/// such a connection pays for the boxed future; an idle one holds none.
pub trait Handler {
    /// A text frame arrived.
    fn on_text(&mut self, text: Utf8Bytes) -> Option<Pending<'_>>;
    /// A binary frame arrived.
    fn on_binary(&mut self, data: Bytes);
    /// The connection is over; runs once, before the close frame is sent.
    fn on_close(&mut self, departure: Departure);
    /// A frame (its text, for a text frame) was dropped for breaking a rate
    /// limit. The default says nothing: plain endpoints have no way to.
    fn on_rate_limited(&mut self, _limit: Limit, _text: Option<&str>) {}
    /// The keepalive timer fired (about once per `ping-interval`): `false` ends
    /// the connection with close 1000 (a dialect whose clients must send their
    /// own heartbeats, PeerJS, drops the silent ones here).
    fn on_timer(&mut self) -> bool {
        true
    }
    /// The server removed the peer from `room` (the server API closed it); the
    /// client has been queued the frame that tells it. Endpoints that keep a
    /// list of their rooms drop it here.
    fn on_removed(&mut self, _room: &str) {}
}

/// How a connection ended, as far as its handler cares: whether the client
/// meant to go, and so whether its session may be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The client closed the connection (sent a close frame): it is done.
    Deliberate,
    /// The connection was lost (dropped without a close frame, no answer to
    /// pings, writes stuck): the client may come back.
    Lost,
    /// The server closed it for misbehaving (flooding, not reading, oversized
    /// or invalid frames): no way back.
    Expelled,
    /// The server is shutting down.
    Shutdown,
    /// A new connection resumed this session and took it over.
    TakenOver,
}

/// Timings every connection follows.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Ping a client that has sent nothing for this long.
    pub ping_interval: Duration,
    /// Drop it if it then sends nothing (a pong or anything else) for this long.
    pub ping_timeout: Duration,
    /// Drop a client that blocks a write for this long.
    pub write_timeout: Duration,
    /// The close code sent when the server shuts down: 1001 (going away) or
    /// 1012 (service restart: come back).
    pub shutdown_code: u16,
}

/// What every connection needs from the server it runs in: the narrow part of
/// the app a connection may touch.
pub struct Environment {
    /// Shutdown and the tracker shutdown waits on.
    pub lifecycle: Lifecycle,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Keepalive and write timings.
    pub timings: Timings,
    /// Messages and bytes per second per connection (0: no limit).
    pub rate_limits: RateSpec,
    /// Wakes connections whose keepalive timer is due.
    pub sweeper: Arc<Sweeper>,
}

/// Close code for a connection whose session another connection resumed.
pub const TAKEN_OVER: u16 = 4001;

impl Ending {
    fn departure(self) -> Departure {
        match self {
            Ending::ClientClosed => Departure::Deliberate,
            Ending::ClientGone | Ending::PingTimeout | Ending::WriteTimeout => Departure::Lost,
            Ending::ShuttingDown => Departure::Shutdown,
            Ending::TakenOver => Departure::TakenOver,
            Ending::SlowConsumer
            | Ending::Removed
            | Ending::TooBig
            | Ending::BadUtf8
            | Ending::ProtocolError
            | Ending::Flooding
            | Ending::Idle => Departure::Expelled,
        }
    }
}

/// How long to wait for a close handshake to finish before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection ended, and what close frame (if any) the client is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client sent a close frame: the reply is already queued, only a flush is owed.
    ClientClosed,
    /// The client vanished: nothing left to say.
    ClientGone,
    /// The server is shutting down: 1001.
    ShuttingDown,
    /// The outbox overflowed: 1008.
    SlowConsumer,
    /// No answer to a ping: the client is unreachable, so no close frame.
    PingTimeout,
    /// A write blocked for too long.
    WriteTimeout,
    /// A frame above the hard size limit: 1009.
    TooBig,
    /// Invalid UTF-8 in a text frame: 1007.
    BadUtf8,
    /// A WebSocket protocol violation: 1002.
    ProtocolError,
    /// Kept flooding past its rate limits: 1008.
    Flooding,
    /// Another connection resumed this session: 4001.
    TakenOver,
    /// The endpoint gave up on a client that kept quiet at its level: 1000.
    Idle,
    /// The server removed it (the server API): the code and reason its outbox holds.
    Removed,
}

impl Ending {
    fn close_frame(self, timings: &Timings) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Ending::ShuttingDown if timings.shutdown_code == close_code::RESTART => {
                (close_code::RESTART, "server restarting: reconnect")
            }
            Ending::ShuttingDown => (close_code::AWAY, "server shutting down"),
            Ending::SlowConsumer => (close_code::POLICY, "send queue overflow: client is not reading"),
            Ending::TooBig => (close_code::SIZE, "message too big"),
            Ending::BadUtf8 => (close_code::INVALID, "invalid UTF-8 in a text frame"),
            Ending::ProtocolError => (close_code::PROTOCOL, "protocol error"),
            Ending::Flooding => (close_code::POLICY, "rate limit exceeded"),
            Ending::TakenOver => (TAKEN_OVER, "session resumed on another connection"),
            Ending::Idle => (close_code::NORMAL, "no heartbeat"),
            Ending::ClientClosed
            | Ending::ClientGone
            | Ending::PingTimeout
            | Ending::WriteTimeout
            | Ending::Removed => return None,
        };
        Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })
    }
}

/// Tracks when the client was last heard from and when the next ping is due,
/// in milliseconds on the keepalive sweep's clock (`crate::sweep`). The timings
/// are passed in, not kept: every idle connection would hold a copy.
struct Keepalive {
    last_heard: u64,
    /// When the last unanswered ping went out; `NO_PING` if none did.
    ping_sent: u64,
}

const NO_PING: u64 = u64::MAX;

/// A duration in whole milliseconds.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

enum KeepaliveAction {
    Ping,
    Dead,
    Wait,
}

impl Keepalive {
    fn new(now: u64) -> Keepalive {
        Keepalive { last_heard: now, ping_sent: NO_PING }
    }

    fn heard(&mut self, now: u64) {
        self.last_heard = now;
        self.ping_sent = NO_PING;
    }

    /// How long the client has been silent.
    fn silent(&self, now: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(self.last_heard))
    }

    /// When the timer should next fire. Moves only when the timer fires, so an
    /// active connection does not reset a timer per message.
    fn deadline(&self, timings: &Timings) -> u64 {
        match self.ping_sent {
            NO_PING => self.last_heard.saturating_add(ms(timings.ping_interval)),
            sent => sent.saturating_add(ms(timings.ping_timeout)),
        }
    }

    fn on_timer(&mut self, now: u64, timings: &Timings) -> KeepaliveAction {
        match self.ping_sent {
            NO_PING if now >= self.last_heard.saturating_add(ms(timings.ping_interval)) => {
                self.ping_sent = now;
                KeepaliveAction::Ping
            }
            NO_PING => KeepaliveAction::Wait,
            sent if now >= sent.saturating_add(ms(timings.ping_timeout)) => KeepaliveAction::Dead,
            _ => KeepaliveAction::Wait,
        }
    }
}

/// A connection whose endpoint has finished setting it up, ready to run.
pub struct Connection<H> {
    /// Which endpoint it belongs to (for metrics).
    pub endpoint: Endpoint,
    /// The upgraded socket.
    pub socket: Socket,
    /// Its send queue.
    pub outbox: Arc<Outbox>,
    /// What its frames mean.
    pub handler: H,
    /// Its largest accepted frame, which the byte rate limit must admit.
    pub largest_frame: usize,
    /// Cancelled when a resumed session takes this connection over (close
    /// 4001); a child of the server's shutdown token.
    pub takeover: Option<CancellationToken>,
    /// Its place under the connection caps, held until it ends.
    pub slot: ConnectionSlot,
}

impl<H: Handler> Connection<H> {
    /// A connection that no session can take over (echo, broadcast).
    pub fn plain(
        endpoint: Endpoint,
        socket: Socket,
        outbox: Arc<Outbox>,
        handler: H,
        largest_frame: usize,
        slot: ConnectionSlot,
    ) -> Connection<H> {
        Connection { endpoint, socket, outbox, handler, largest_frame, takeover: None, slot }
    }

    /// Runs a connection that has nothing to set up, with [`serve`].
    pub fn serve_now(self, env: Arc<Environment>) -> impl Future<Output = ()> {
        serve(env, Box::pin(std::future::ready(Some(self))))
    }
}

/// Sets a connection up with `setup`, then runs it to its end: counted in the
/// connections gauge, tracked so that shutdown waits for it, and closed
/// politely where that makes sense.
///
/// One task runs the whole life of a connection, and its future is allocated
/// for the largest state it can be in. So the setup (authentication, resuming,
/// the welcome) comes boxed and is freed before the connection settles into
/// its loop, and rare work inside the loop is boxed too: an idle connection's
/// task holds only the loop's state.
pub async fn serve<H, F>(env: Arc<Environment>, setup: Pin<Box<F>>)
where
    H: Handler,
    F: Future<Output = Option<Connection<H>>> + ?Sized,
{
    let Some(Connection { endpoint, mut socket, outbox, mut handler, largest_frame, takeover, slot }) = setup.await
    else {
        return;
    };
    let _tracked = env.lifecycle.connections.token();
    env.metrics.connections(endpoint).increment(1.0);
    let mut limits = RateLimits::new(largest_frame);
    let metrics = &env.metrics;
    // One token ends the connection: the takeover switch (a child of the
    // shutdown token) or, for a connection that cannot be resumed, shutdown.
    let stop = takeover.unwrap_or_else(|| env.lifecycle.close_connections.clone());
    // Timings are read from `env` where needed, not copied into the future.
    // The timer is the sweep's: it wakes the outbox when `wake_at` comes.
    let sweeper = &env.sweeper;
    let registration = sweeper.register(&outbox);
    let mut keepalive = Keepalive::new(sweeper.now());
    outbox.set_wake_at(keepalive.deadline(&env.timings));

    let ending = loop {
        // The select only decides what to do; the doing (which may wait on a
        // write or on the hub) comes after it, so its state and the select's
        // share space in the connection's future instead of adding up.
        // A scope of its own: nothing of `step`, which may borrow the handler,
        // outlives it.
        {
            let step = tokio::select! {
                biased;
                () = stop.cancelled() => match env.lifecycle.close_connections.is_cancelled() {
                    true => Step::End(Ending::ShuttingDown),
                    false => Step::End(Ending::TakenOver),
                },
                () = outbox.ready() => Step::Write,
                inbound = socket.recv() => {
                    keepalive.heard(sweeper.now());
                    on_inbound(inbound, &mut handler, &mut limits, env.rate_limits, metrics)
                }
            };
            match step {
                Step::Continue => {}
                Step::End(ending) => break ending,
                Step::Finish(pending) => pending.await,
                Step::Write => {
                    // Boxed: a connection that is not writing holds none of its state.
                    if let Err(ending) = Box::pin(write_queued(&mut socket, &outbox, env.timings.write_timeout)).await {
                        break ending;
                    }
                }
                Step::Flush => {
                    if !matches!(Box::pin(timeout(env.timings.write_timeout, socket.flush())).await, Ok(Ok(()))) {
                        break Ending::WriteTimeout;
                    }
                }
            }
        }
        // Rate limiters made for this message are dropped once the client has
        // been quiet long enough for them to be as good as new: the timer comes back then.
        if limits.take_fresh() {
            if let Some(full) = limits.full_after(env.rate_limits) {
                let due = keepalive.last_heard.saturating_add(ms(full));
                if due < outbox.wake_at() {
                    outbox.set_wake_at(due);
                }
            }
        }
        // The timer: the sweep woke the outbox, or it came due while the loop was busy.
        if sweeper.now() >= outbox.wake_at() {
            if !handler.on_timer() {
                break Ending::Idle;
            }
            let now = sweeper.now();
            let limited = limits.relax(env.rate_limits, keepalive.silent(now));
            match keepalive.on_timer(now, &env.timings) {
                KeepaliveAction::Dead => break Ending::PingTimeout,
                KeepaliveAction::Ping => {
                    let ping = Box::pin(timeout(env.timings.write_timeout, socket.send(Message::Ping(Bytes::new()))));
                    if !matches!(ping.await, Ok(Ok(()))) {
                        break Ending::WriteTimeout;
                    }
                }
                KeepaliveAction::Wait => {}
            }
            let mut next = keepalive.deadline(&env.timings);
            if let (true, Some(full)) = (limited, limits.full_after(env.rate_limits)) {
                next = next.min(keepalive.last_heard.saturating_add(ms(full)));
            }
            outbox.set_wake_at(next);
        }
        // The server's decisions about this connection, read after the frames
        // queued before them were written (a flag check when there are none).
        if outbox.has_notices() {
            let (rooms, removal) = outbox.take_notices();
            rooms.iter().for_each(|room| handler.on_removed(room));
            if removal.is_some() {
                break Ending::Removed;
            }
        }
    };

    sweeper.unregister(registration);
    // Boxed: what the ending does (a close handshake, frames after the close
    // frame) holds its state apart, so the loop's future keeps one socket slot.
    Box::pin(finish(socket, ending, handler, limits, &outbox, &env)).await;
    env.metrics.connections(endpoint).decrement(1.0);
    drop(slot);
}

/// The end of a connection: the frames a stopping server still handles, the
/// handler's `on_close`, the ending's metric and the close handshake.
async fn finish<H: Handler>(
    socket: Socket,
    ending: Ending,
    mut handler: H,
    mut limits: RateLimits,
    outbox: &Outbox,
    env: &Environment,
) {
    let metrics = &env.metrics;
    // A client that is told the server is stopping may have sent frames before
    // it read the close frame: they are handled, not dropped, before the
    // session ends (what they reply is queued, and goes with the session when
    // it is handed over: a resumed client gets its acks on its next node).
    let mut socket = Some(socket);
    if ending == Ending::ShuttingDown {
        if let (Some(frame), Some(open)) = (ending.close_frame(&env.timings), socket.take()) {
            Box::pin(close_handling(open, frame, &mut handler, &mut limits, env)).await;
        }
    }
    handler.on_close(ending.departure());
    match ending {
        Ending::SlowConsumer => metrics.slow_consumers.increment(1),
        Ending::PingTimeout => metrics.ping_timeouts.increment(1),
        Ending::Flooding => metrics.rate_limit_closes.increment(1),
        _ => {}
    }
    debug!(?ending, "connection ended");
    let close_frame = match ending {
        Ending::Removed => {
            outbox.take_notices().1.map(|removal| CloseFrame { code: removal.code, reason: removal.reason })
        }
        _ => ending.close_frame(&env.timings),
    };
    match (socket, close_frame) {
        (Some(socket), Some(frame)) => {
            // A slow consumer reaches its close frame only after reading what is
            // already buffered for it: give that as long as any write may take.
            let patience = match ending {
                Ending::SlowConsumer => env.timings.write_timeout.max(CLOSE_GRACE),
                _ => CLOSE_GRACE,
            };
            Box::pin(close(socket, frame, patience)).await;
        }
        (Some(mut socket), None) if ending == Ending::ClientClosed => {
            // The socket queued the echo of the client's close frame when it read
            // it; flushing sends it, completing the handshake the client waits for.
            let _ = Box::pin(timeout(CLOSE_GRACE, socket.flush())).await;
        }
        _ => {}
    }
}

/// What the connection loop does next.
enum Step<'h> {
    /// Nothing: wait again.
    Continue,
    /// Stop, for this reason.
    End(Ending),
    /// Finish what the handler started before reading on.
    Finish(Pending<'h>),
    /// Write what the outbox holds.
    Write,
    /// Send what the socket queued (a pong).
    Flush,
}

/// Hands one inbound frame (or the end of the stream) to the handler, after
/// the rate limits.
fn on_inbound<'h, H: Handler>(
    inbound: Option<Result<Message, Error>>,
    handler: &'h mut H,
    limits: &mut RateLimits,
    spec: RateSpec,
    metrics: &Metrics,
) -> Step<'h> {
    let size = match &inbound {
        Some(Ok(Message::Text(text))) => Some(text.len()),
        Some(Ok(Message::Binary(data))) => Some(data.len()),
        _ => None,
    };
    if let Some(Err(limit)) = size.map(|size| limits.check(spec, size)) {
        metrics.rate_limited(limit);
        let text = match &inbound {
            Some(Ok(Message::Text(text))) => Some(text.as_str()),
            _ => None,
        };
        handler.on_rate_limited(limit, text);
        return match limits.strike() {
            true => Step::End(Ending::Flooding),
            false => Step::Continue,
        };
    }
    match inbound {
        Some(Ok(Message::Text(text))) => handler.on_text(text).map_or(Step::Continue, Step::Finish),
        Some(Ok(Message::Binary(data))) => {
            handler.on_binary(data);
            Step::Continue
        }
        // The socket queued the pong: send it now. A pong only proves liveness.
        Some(Ok(Message::Ping(_))) => Step::Flush,
        Some(Ok(Message::Pong(_))) => Step::Continue,
        Some(Ok(Message::Close(_))) => Step::End(Ending::ClientClosed),
        None => Step::End(Ending::ClientGone),
        Some(Err(err)) => Step::End(classify(err)),
    }
}

/// Writes everything queued in the outbox, flushing after each batch, until it
/// is empty. A writer blocked on a client that does not read gives up as soon
/// as the queue overflows, rather than waiting out `write-timeout`.
async fn write_queued(socket: &mut Socket, outbox: &Outbox, write_timeout: Duration) -> Result<(), Ending> {
    loop {
        let batch = outbox.take().map_err(|_| Ending::SlowConsumer)?;
        if batch.is_empty() {
            return Ok(());
        }
        for frame in &batch {
            socket.feed(frame).map_err(|_| Ending::ClientGone)?;
        }
        drop(batch);
        let write = socket.flush();
        // Watching for overflow consumes wake-ups meant for the main loop; the
        // `take` at the top of this loop picks up whatever they announced.
        let overflow = async {
            while !outbox.is_overflowed() {
                outbox.ready().await;
            }
        };
        tokio::select! {
            written = timeout(write_timeout, write) => match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Ending::ClientGone),
                Err(_) => return Err(Ending::WriteTimeout),
            },
            () = overflow => return Err(Ending::SlowConsumer),
        }
    }
}

/// Sends a close frame and waits for the client's answer, for `patience` in all.
async fn close(mut socket: Socket, frame: CloseFrame, patience: Duration) {
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(patience, handshake).await;
}

/// Sends a close frame and, until the client's answer (for [`CLOSE_GRACE`] in
/// all), hands the frames that still arrive to the handler: the client sent
/// them before it read the close frame. Nothing more is written but the close.
async fn close_handling<H: Handler>(
    mut socket: Socket,
    frame: CloseFrame,
    handler: &mut H,
    limits: &mut RateLimits,
    env: &Environment,
) {
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        loop {
            match on_inbound(socket.recv().await, handler, limits, env.rate_limits, &env.metrics) {
                Step::Finish(pending) => pending.await,
                Step::Continue | Step::Write | Step::Flush => {}
                Step::End(_) => break,
            }
        }
    };
    let _ = timeout(CLOSE_GRACE, handshake).await;
}

fn classify(err: Error) -> Ending {
    match err {
        Error::Frame(FrameError::TooBig) => Ending::TooBig,
        Error::Frame(FrameError::BadUtf8) => Ending::BadUtf8,
        Error::Frame(FrameError::Protocol(_)) => Ending::ProtocolError,
        // A stream that fails is a lost client, not a misbehaving one.
        Error::Io(_) | Error::Closed => Ending::ClientGone,
    }
}

/// The size of the connection task's future for a handler, setup aside (it
/// is boxed): what an idle connection of that endpoint costs, mostly. Each
/// endpoint's tests keep theirs within 1 KiB.
#[cfg(test)]
pub(crate) fn idle_future_size<H: Handler>() -> usize {
    let env = Arc::new(Environment {
        lifecycle: Lifecycle::default(),
        metrics: Arc::new(Metrics::install()),
        timings: Timings {
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            shutdown_code: close_code::AWAY,
        },
        rate_limits: RateSpec { messages: 100, bytes: 1 << 20 },
        sweeper: Arc::new(Sweeper::default()),
    });
    let setup = Box::pin(std::future::pending::<Option<Connection<H>>>());
    std::mem::size_of_val(&serve(env, setup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(shutdown_code: u16) -> Timings {
        Timings {
            ping_interval: Duration::from_millis(30),
            ping_timeout: Duration::from_millis(20),
            write_timeout: Duration::from_secs(1),
            shutdown_code,
        }
    }

    #[test]
    fn keepalive_pings_after_silence_and_gives_up_after_the_timeout() {
        let timings = timings(close_code::AWAY);
        let mut keepalive = Keepalive::new(1000);
        assert!(matches!(keepalive.on_timer(1000, &timings), KeepaliveAction::Wait), "not silent long enough");
        assert_eq!(keepalive.deadline(&timings), 1030);
        assert!(matches!(keepalive.on_timer(1030, &timings), KeepaliveAction::Ping));
        assert_eq!(keepalive.deadline(&timings), 1050, "the ping timeout runs from the ping");
        assert!(matches!(keepalive.on_timer(1040, &timings), KeepaliveAction::Wait), "still within the timeout");
        assert!(matches!(keepalive.on_timer(1050, &timings), KeepaliveAction::Dead));
        // Anything heard resets it.
        keepalive.heard(1050);
        assert!(matches!(keepalive.on_timer(1060, &timings), KeepaliveAction::Wait));
        assert_eq!(keepalive.silent(1060), Duration::from_millis(10));
    }

    #[test]
    fn each_ending_has_its_close_code_and_departure() {
        let away = timings(close_code::AWAY);
        let restart = timings(close_code::RESTART);
        let code = |ending: Ending, timings: &Timings| ending.close_frame(timings).map(|frame| frame.code);
        assert_eq!(code(Ending::ShuttingDown, &away), Some(close_code::AWAY));
        assert_eq!(code(Ending::ShuttingDown, &restart), Some(close_code::RESTART));
        assert_eq!(code(Ending::SlowConsumer, &away), Some(close_code::POLICY));
        assert_eq!(code(Ending::Flooding, &away), Some(close_code::POLICY));
        assert_eq!(code(Ending::TooBig, &away), Some(close_code::SIZE));
        assert_eq!(code(Ending::BadUtf8, &away), Some(close_code::INVALID));
        assert_eq!(code(Ending::ProtocolError, &away), Some(close_code::PROTOCOL));
        assert_eq!(code(Ending::TakenOver, &away), Some(TAKEN_OVER));
        for silent in [Ending::ClientClosed, Ending::ClientGone, Ending::PingTimeout, Ending::WriteTimeout] {
            assert_eq!(code(silent, &away), None, "{silent:?} sends no close frame");
        }
        // Only a lost connection (or a takeover) may be resumed.
        assert_eq!(Ending::ClientGone.departure(), Departure::Lost);
        assert_eq!(Ending::PingTimeout.departure(), Departure::Lost);
        assert_eq!(Ending::ClientClosed.departure(), Departure::Deliberate);
        assert_eq!(Ending::SlowConsumer.departure(), Departure::Expelled);
        assert_eq!(Ending::TakenOver.departure(), Departure::TakenOver);
        assert_eq!(Ending::ShuttingDown.departure(), Departure::Shutdown);
        assert_eq!(Ending::Removed.departure(), Departure::Expelled, "a removed session cannot be resumed");
    }

    #[test]
    fn socket_errors_are_classified_by_who_is_at_fault() {
        assert_eq!(classify(Error::Frame(FrameError::TooBig)), Ending::TooBig);
        assert_eq!(classify(Error::Frame(FrameError::BadUtf8)), Ending::BadUtf8);
        assert_eq!(classify(Error::Closed), Ending::ClientGone);
        assert_eq!(classify(Error::Io(std::io::Error::other("reset"))), Ending::ClientGone);
    }
}
