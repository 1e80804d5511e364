//! Prometheus metrics.
//!
//! Handles for every series are registered once, up front, and kept in
//! [`Metrics`]: the hot path increments an atomic instead of hashing a name and
//! labels per message. Label values are only ever from fixed sets (message types,
//! error codes, endpoints), never client-controlled strings, so a client cannot
//! blow up the number of series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use switchboard_protocol::ErrorCode;

/// The WebSocket endpoints, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`
    Signaling,
    /// `/ws/echo`
    Echo,
    /// `/ws/broadcast`
    Broadcast,
    /// The PeerJS dialect (`/peerjs`).
    Peerjs,
    /// The y-webrtc dialect (`/y-webrtc`).
    YWebrtc,
    /// The matchbox dialect (`/matchbox/{room}`).
    Matchbox,
}

impl Endpoint {
    const ALL: [Endpoint; 6] = [
        Endpoint::Signaling,
        Endpoint::Echo,
        Endpoint::Broadcast,
        Endpoint::Peerjs,
        Endpoint::YWebrtc,
        Endpoint::Matchbox,
    ];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Signaling => "signaling",
            Endpoint::Echo => "echo",
            Endpoint::Broadcast => "broadcast",
            Endpoint::Peerjs => "peerjs",
            Endpoint::YWebrtc => "y-webrtc",
            Endpoint::Matchbox => "matchbox",
        }
    }

    /// Its index among the dialects, for [`Metrics::dropped`].
    fn dialect(self) -> Option<usize> {
        match self {
            Endpoint::Peerjs => Some(0),
            Endpoint::YWebrtc => Some(1),
            Endpoint::Matchbox => Some(2),
            _ => None,
        }
    }
}

/// Why a dialect dropped what a client sent (a metric label): the dialect's
/// protocol has no way to say so, or says it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not JSON, or not a message of the dialect.
    Malformed,
    /// A binary frame.
    Binary,
    /// Over a size or count limit of the dialect.
    Limit,
    /// For a peer that is not there (or not in the sender's room).
    UnknownTarget,
}

impl Dropped {
    const ALL: [Dropped; 4] = [Dropped::Malformed, Dropped::Binary, Dropped::Limit, Dropped::UnknownTarget];

    fn label(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::Binary => "binary",
            Dropped::Limit => "limit",
            Dropped::UnknownTarget => "unknown-target",
        }
    }
}

/// The Server-Sent Events endpoints, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEndpoint {
    /// `/sse`
    Ticks,
    /// `/sse/rooms/{room}`
    Room,
}

/// Client message types as counted; anything that failed to decode is `invalid`.
const INBOUND_TYPES: [&str; 12] = [
    "join",
    "leave",
    "broadcast",
    "ping",
    "auth",
    "sdp",
    "ice-candidate",
    "offer",
    "answer",
    "candidate",
    "signal",
    "invalid",
];
/// Server message types as counted.
const OUTBOUND_TYPES: [&str; 17] = [
    "welcome",
    "room-closed",
    "server-message",
    "joined",
    "peer-joined",
    "peer-left",
    "left",
    "broadcast",
    "ack",
    "pong",
    "error",
    "sdp",
    "ice-candidate",
    "offer",
    "answer",
    "candidate",
    "signal",
];

/// Every series the server writes.
pub struct Metrics {
    connections: [Gauge; 6],
    dropped: [[Counter; 4]; 3],
    sse_streams: [Gauge; 2],
    /// Rooms with at least one member.
    pub rooms: Gauge,
    /// Connected signaling peers.
    pub peers: Gauge,
    messages_in: [Counter; INBOUND_TYPES.len()],
    messages_out: [Counter; OUTBOUND_TYPES.len()],
    errors: [Counter; ErrorCode::ALL.len()],
    /// Connections closed because their send queue overflowed.
    pub slow_consumers: Counter,
    /// Connections dropped for not answering a ping.
    pub ping_timeouts: Counter,
    refused: [Counter; REFUSAL_REASONS.len()],
    rate_limited: [Counter; 2],
    /// Connections closed for flooding past their rate limits.
    pub rate_limit_closes: Counter,
    /// Tokio tasks alive at the last scrape: a leak shows as growth at a steady load.
    pub tasks_alive: Gauge,
    /// 1 while the Redis broker is reachable and this node registered with it.
    pub broker_up: Gauge,
    /// Redis operations that failed or timed out.
    pub broker_errors: Counter,
    /// Relays and broadcasts published to other nodes.
    pub broker_published: Counter,
    /// Messages received from other nodes (room events, relays, broadcasts).
    pub broker_received: Counter,
    /// Times this node wrote its peers back into Redis and re-read its rooms.
    pub broker_resyncs: Counter,
    /// Peers of dead nodes this node removed from their rooms.
    pub broker_reaped_peers: Counter,
    /// Sessions resumed by a reconnection.
    pub resumes: Counter,
    /// Suspended sessions whose grace period ran out.
    pub resume_expired: Counter,
    /// Client messages received, all types: what the server API shows as a
    /// node's load (the Prometheus counters cannot be read back).
    received: AtomicU64,
}

/// Why connections are refused before they are accepted.
const REFUSAL_REASONS: [&str; 5] = ["origin", "max-connections", "max-connections-per-ip", "unauthorized", "forbidden"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    /// Installs the Prometheus recorder (once per process) and registers every series.
    pub fn install() -> Metrics {
        HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        });
        Metrics {
            connections: Endpoint::ALL.map(|e| gauge!("switchboard_connections", "endpoint" => e.label())),
            dropped: [Endpoint::Peerjs, Endpoint::YWebrtc, Endpoint::Matchbox].map(|dialect| {
                Dropped::ALL.map(|reason| {
                    counter!("switchboard_dialect_dropped_total", "dialect" => dialect.label(), "reason" => reason.label())
                })
            }),
            sse_streams: ["sse", "room"].map(|e| gauge!("switchboard_sse_streams", "endpoint" => e)),
            rooms: gauge!("switchboard_rooms"),
            peers: gauge!("switchboard_peers"),
            messages_in: INBOUND_TYPES.map(|t| counter!("switchboard_messages_in_total", "type" => t)),
            messages_out: OUTBOUND_TYPES.map(|t| counter!("switchboard_messages_out_total", "type" => t)),
            errors: ErrorCode::ALL.map(|c| counter!("switchboard_errors_total", "code" => c.as_str())),
            slow_consumers: counter!("switchboard_slow_consumers_total"),
            ping_timeouts: counter!("switchboard_ping_timeouts_total"),
            refused: REFUSAL_REASONS.map(|r| counter!("switchboard_refused_total", "reason" => r)),
            rate_limited: ["messages", "bytes"].map(|l| counter!("switchboard_rate_limited_total", "limit" => l)),
            rate_limit_closes: counter!("switchboard_rate_limit_closes_total"),
            tasks_alive: gauge!("switchboard_tasks_alive"),
            broker_up: gauge!("switchboard_broker_up"),
            broker_errors: counter!("switchboard_broker_errors_total"),
            broker_published: counter!("switchboard_broker_published_total"),
            broker_received: counter!("switchboard_broker_received_total"),
            broker_resyncs: counter!("switchboard_broker_resyncs_total"),
            broker_reaped_peers: counter!("switchboard_broker_reaped_peers_total"),
            resumes: counter!("switchboard_resumes_total"),
            resume_expired: counter!("switchboard_resume_expired_total"),
            received: AtomicU64::new(0),
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render() -> String {
        HANDLE.get().map(PrometheusHandle::render).unwrap_or_default()
    }

    /// Open WebSockets on one endpoint.
    pub fn connections(&self, endpoint: Endpoint) -> &Gauge {
        &self.connections[endpoint as usize]
    }

    /// Counts something a dialect's client sent that was dropped, and why.
    pub fn dropped(&self, dialect: Endpoint, reason: Dropped) {
        if let Some(index) = dialect.dialect() {
            self.dropped[index][reason as usize].increment(1);
        }
    }

    /// Open event streams on one endpoint.
    pub fn sse_streams(&self, endpoint: SseEndpoint) -> &Gauge {
        &self.sse_streams[endpoint as usize]
    }

    /// Counts one client message by its `type` (`None`: it did not decode).
    pub fn message_in(&self, type_name: Option<&str>) {
        let label = type_name.unwrap_or("invalid");
        let index = INBOUND_TYPES.iter().position(|t| *t == label).unwrap_or(INBOUND_TYPES.len() - 1);
        self.messages_in[index].increment(1);
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Client messages received since the process started.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Counts `n` server messages of one type.
    pub fn messages_out(&self, type_name: &str, n: u64) {
        if let Some(index) = OUTBOUND_TYPES.iter().position(|t| *t == type_name) {
            self.messages_out[index].increment(n);
        }
    }

    /// Counts one connection refused before it was accepted, by reason label.
    pub fn refused(&self, reason: &str) {
        if let Some(index) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refused[index].increment(1);
        }
    }

    /// Counts one message dropped for breaking a rate limit.
    pub fn rate_limited(&self, limit: crate::rate_limit::Limit) {
        self.rate_limited[limit as usize].increment(1);
    }

    /// Counts one error sent to a client.
    pub fn error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[index].increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::RelayKind;

    #[test]
    fn every_relay_kind_has_its_own_series_both_ways() {
        for kind in RelayKind::ALL {
            assert!(INBOUND_TYPES.contains(&kind.as_str()), "{kind:?} in");
            assert!(OUTBOUND_TYPES.contains(&kind.as_str()), "{kind:?} out");
        }
    }
}
