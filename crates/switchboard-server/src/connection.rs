//! The life of one WebSocket, whatever the endpoint.
//!
//! One task per connection, and no split into reader and writer tasks: the task
//! waits on four things at once (shutdown, its outbox, the socket, the keepalive
//! timer) and handles whichever is ready. Waiting holds no buffers, and a second
//! task would cost about 3 KiB per connection for nothing.
//!
//! Writes happen outside the `select!`, so a half-written frame is never dropped
//! by a cancelled branch; a client that stops reading blocks only its own task,
//! for at most `write-timeout`, while its outbox overflows and marks it a slow
//! consumer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::app::App;
use crate::outbox::Outbox;
use crate::rate_limit::{Limit, RateLimits};
use crate::telemetry::metrics::{Endpoint, Metrics};

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

/// Close code for a connection whose session another connection resumed.
pub const TAKEN_OVER: u16 = 4001;

impl Ending {
    fn departure(self) -> Departure {
        match self {
            Ending::ClientClosed => Departure::Deliberate,
            Ending::ClientGone | Ending::PingTimeout | Ending::WriteTimeout => Departure::Lost,
            Ending::ShuttingDown => Departure::Shutdown,
            Ending::TakenOver => Departure::TakenOver,
            Ending::SlowConsumer | Ending::TooBig | Ending::BadUtf8 | Ending::ProtocolError | Ending::Flooding => {
                Departure::Expelled
            }
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
            Ending::ClientClosed | Ending::ClientGone | Ending::PingTimeout | Ending::WriteTimeout => return None,
        };
        Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })
    }
}

/// Tracks when the client was last heard from and when the next ping is due.
struct Keepalive {
    timings: Timings,
    last_heard: Instant,
    ping_sent: Option<Instant>,
}

enum KeepaliveAction {
    Ping,
    Dead,
    Wait,
}

impl Keepalive {
    fn new(timings: Timings) -> Keepalive {
        Keepalive { timings, last_heard: Instant::now(), ping_sent: None }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// When the timer should next fire. Moves only when the timer fires, so an
    /// active connection does not reset a timer per message.
    fn deadline(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.timings.ping_timeout,
            None => self.last_heard + self.timings.ping_interval,
        }
    }

    fn on_timer(&mut self) -> KeepaliveAction {
        let now = Instant::now();
        match self.ping_sent {
            Some(sent) if now >= sent + self.timings.ping_timeout => KeepaliveAction::Dead,
            Some(_) => KeepaliveAction::Wait,
            None if now >= self.last_heard + self.timings.ping_interval => {
                self.ping_sent = Some(now);
                KeepaliveAction::Ping
            }
            None => KeepaliveAction::Wait,
        }
    }
}

/// Runs one connection of `endpoint` to its end: counted in the connections
/// gauge, and tracked so that shutdown waits for it. Cancelling `takeover`
/// (for a session another connection resumes) ends it with close 4001.
pub async fn run(
    app: &App,
    endpoint: Endpoint,
    socket: WebSocket,
    outbox: Arc<Outbox>,
    handler: impl Handler,
    largest_frame: usize,
    takeover: Option<CancellationToken>,
) {
    let _tracked = app.lifecycle.connections.token();
    let gauge = app.metrics.connections(endpoint);
    gauge.increment(1.0);
    let shutdown = app.lifecycle.close_connections.clone();
    let limits = app.rate_limits(largest_frame);
    drive(socket, outbox, handler, app.timings(), &limits, shutdown, takeover, &app.metrics).await;
    gauge.decrement(1.0);
}

/// Runs one connection until it ends, then closes it politely where that makes sense.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    mut socket: WebSocket,
    outbox: Arc<Outbox>,
    mut handler: impl Handler,
    timings: Timings,
    limits: &RateLimits,
    shutdown: CancellationToken,
    takeover: Option<CancellationToken>,
    metrics: &Metrics,
) {
    let taken_over = async {
        match &takeover {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(taken_over);
    let mut keepalive = Keepalive::new(timings);
    let timer = sleep_until(keepalive.deadline());
    tokio::pin!(timer);

    let ending = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ending::ShuttingDown,
            () = &mut taken_over => break Ending::TakenOver,
            () = outbox.ready() => {
                if let Err(ending) = write_queued(&mut socket, &outbox, timings.write_timeout).await {
                    break ending;
                }
            }
            inbound = socket.recv() => {
                keepalive.heard();
                let size = match &inbound {
                    Some(Ok(Message::Text(text))) => Some(text.len()),
                    Some(Ok(Message::Binary(data))) => Some(data.len()),
                    _ => None,
                };
                if let Some(Err(limit)) = size.map(|size| limits.check(size)) {
                    metrics.rate_limited(limit);
                    let text = match &inbound {
                        Some(Ok(Message::Text(text))) => Some(text.as_str()),
                        _ => None,
                    };
                    handler.on_rate_limited(limit, text);
                    if limits.strike() {
                        break Ending::Flooding;
                    }
                    continue;
                }
                match inbound {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(pending) = handler.on_text(text) {
                            pending.await;
                        }
                    }
                    Some(Ok(Message::Binary(data))) => handler.on_binary(data),
                    // tungstenite answers pings itself; a pong only proves liveness.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => break Ending::ClientClosed,
                    None => break Ending::ClientGone,
                    Some(Err(err)) => break classify(err),
                }
            }
            () = &mut timer => {
                match keepalive.on_timer() {
                    KeepaliveAction::Dead => break Ending::PingTimeout,
                    KeepaliveAction::Ping => {
                        let ping = timeout(timings.write_timeout, socket.send(Message::Ping(Bytes::new()))).await;
                        if !matches!(ping, Ok(Ok(()))) {
                            break Ending::WriteTimeout;
                        }
                    }
                    KeepaliveAction::Wait => {}
                }
                timer.as_mut().reset(keepalive.deadline());
            }
        }
    };

    handler.on_close(ending.departure());
    match ending {
        Ending::SlowConsumer => metrics.slow_consumers.increment(1),
        Ending::PingTimeout => metrics.ping_timeouts.increment(1),
        Ending::Flooding => metrics.rate_limit_closes.increment(1),
        _ => {}
    }
    debug!(?ending, "connection ended");
    if let Some(frame) = ending.close_frame(&timings) {
        // A slow consumer reaches its close frame only after reading what is
        // already buffered for it: give that as long as any write may take.
        let patience = match ending {
            Ending::SlowConsumer => timings.write_timeout.max(CLOSE_GRACE),
            _ => CLOSE_GRACE,
        };
        close(socket, frame, patience).await;
    } else if ending == Ending::ClientClosed {
        // tungstenite queued the echo of the client's close frame when it read
        // it; flushing sends it, completing the handshake the client waits for.
        let _ = timeout(CLOSE_GRACE, socket.flush()).await;
    }
}

/// Writes everything queued in the outbox, flushing after each batch, until it
/// is empty. A writer blocked on a client that does not read gives up as soon
/// as the queue overflows, rather than waiting out `write-timeout`.
async fn write_queued(socket: &mut WebSocket, outbox: &Outbox, write_timeout: Duration) -> Result<(), Ending> {
    loop {
        let batch = outbox.take().map_err(|_| Ending::SlowConsumer)?;
        if batch.is_empty() {
            return Ok(());
        }
        let write = async {
            for frame in batch {
                socket.feed(frame).await?;
            }
            socket.flush().await
        };
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
async fn close(mut socket: WebSocket, frame: CloseFrame, patience: Duration) {
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

fn classify(err: axum::Error) -> Ending {
    use tungstenite::Error;
    let inner = err.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => Ending::TooBig,
        Some(Error::Utf8(_)) => Ending::BadUtf8,
        // A TCP connection that ends without a close frame is a lost client,
        // not a misbehaving one.
        Some(Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => Ending::ClientGone,
        Some(Error::Protocol(_)) => Ending::ProtocolError,
        _ => Ending::ClientGone,
    }
}
