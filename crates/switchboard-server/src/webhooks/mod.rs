//! The app's backend hears what happens in rooms: signed webhooks, and the
//! join hook that may veto a join.
//!
//! [`Webhooks`] is the hub's [`Listener`]: each happening becomes one event
//! (`room.started`, `room.finished`, `peer.joined`, `peer.left`) with an id of
//! its own, queued for every URL. Each URL has its own bounded queue and one
//! sender task, so events reach it in the order this node saw them (and a
//! room's events in its order, as one node sees them), and a slow or dead
//! endpoint delays only its own queue: the hub never waits. A full queue drops
//! the newest event, counted and logged.
//!
//! Delivery is at least once: an attempt that fails on the network, times out
//! (5 s), or gets 429 or 5xx is retried with exponential backoff and jitter,
//! under the same `webhook-id`, for `--webhook-retry-for`; any 2xx is success,
//! any other 4xx a refusal that is not retried. Each event is sent by the one
//! node that saw it happen (see [`crate::hub::activity`]), never by all.

pub mod join_hook;
pub mod signing;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, Counter};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::broker::{meta_of, user_of, Listed};
use crate::hub::activity::{Activity, LeftReason, Listener};
use crate::peer_id::{NodeId, PeerId};
use signing::{signed_post, Signer};

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry's delay; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why webhooks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The secret is not `whsec_` and base64.
    #[error("--webhook-secret must be `whsec_` followed by base64 of at least 24 bytes")]
    BadSecret,
    /// The HTTP client could not be built (no TLS roots, say).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where.
    pub urls: Vec<String>,
    /// Signed with.
    pub secret: String,
    /// Retried for.
    pub retry_for: Duration,
    /// Events waiting per URL, at most.
    pub queue: usize,
}

/// One event, ready to send.
struct Event {
    id: String,
    body: Arc<str>,
}

/// Counters of what became of events.
#[derive(Clone)]
struct Outcomes {
    delivered: Counter,
    retried: Counter,
    refused: Counter,
    expired: Counter,
    dropped: Counter,
}

impl Outcomes {
    fn new() -> Outcomes {
        let outcome = |o: &'static str| counter!("switchboard_webhooks_total", "outcome" => o);
        Outcomes {
            delivered: outcome("delivered"),
            retried: outcome("retried"),
            refused: outcome("refused"),
            expired: outcome("expired"),
            dropped: outcome("dropped"),
        }
    }
}

/// The webhook sender of one node.
pub struct Webhooks {
    node: NodeId,
    queues: Vec<(String, mpsc::Sender<Event>)>,
    outcomes: Outcomes,
    /// Events queued or being sent, over every URL: a shutdown waits for it to reach 0.
    pending: Arc<AtomicUsize>,
}

impl Webhooks {
    /// Starts one sender task per URL.
    pub fn start(config: &WebhookConfig, node: NodeId) -> Result<Arc<Webhooks>, WebhookError> {
        let signer = Signer::new(&config.secret).ok_or(WebhookError::BadSecret)?;
        let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build()?;
        let outcomes = Outcomes::new();
        let pending = Arc::new(AtomicUsize::new(0));
        let queues = config
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(config.queue);
                let sender = Sender {
                    client: client.clone(),
                    url: url.clone(),
                    signer: signer.clone(),
                    retry_for: config.retry_for,
                    outcomes: outcomes.clone(),
                    pending: pending.clone(),
                };
                tokio::spawn(sender.run(rx));
                (url.clone(), tx)
            })
            .collect();
        Ok(Arc::new(Webhooks { node, queues, outcomes, pending }))
    }

    /// Waits, up to `timeout`, until every queued event has been delivered or
    /// given up on: a graceful shutdown tells the departures it caused
    /// before the process exits. Returns how many were still pending.
    pub async fn settle(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.pending.load(Ordering::Acquire);
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn queue(&self, body: String) {
        let event_id = message_id();
        let body: Arc<str> = body.into();
        for (url, queue) in &self.queues {
            let event = Event { id: event_id.clone(), body: body.clone() };
            // Counted before it is queued: the sender may finish it at once.
            self.pending.fetch_add(1, Ordering::AcqRel);
            if queue.try_send(event).is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.outcomes.dropped.increment(1);
                warn!(%url, id = %event_id, "webhook queue full: event dropped");
            }
        }
    }
}

/// A fresh `webhook-id`.
pub fn message_id() -> String {
    format!("msg_{}", PeerId::random())
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// RFC 3339 for milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    room: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

fn data<'a>(room: &'a str, node: &'a str, member: Option<&'a Listed>, reason: Option<LeftReason>) -> Data<'a> {
    Data {
        room,
        node,
        peer: member.map(|m| m.id.as_str()),
        user: member.and_then(|m| user_of(&m.shown)),
        meta: member.and_then(|m| meta_of(&m.shown)),
        reason: reason.map(LeftReason::as_str),
    }
}

impl Listener for Webhooks {
    fn heard(&self, activity: Activity<'_>) {
        let node = self.node.as_str();
        let (kind, data) = match activity {
            Activity::RoomStarted { room } => ("room.started", data(room, node, None, None)),
            Activity::RoomFinished { room } => ("room.finished", data(room, node, None, None)),
            Activity::PeerJoined { room, member } => ("peer.joined", data(room, node, Some(member), None)),
            Activity::PeerLeft { room, member, reason } => ("peer.left", data(room, node, Some(member), Some(reason))),
        };
        let body = Body { kind, timestamp: rfc3339(SystemTime::now()), data };
        // Borrowed strings and valid raw JSON always serialise.
        if let Ok(body) = serde_json::to_string(&body) {
            self.queue(body);
        }
    }
}

/// Sends one URL's events, in order.
struct Sender {
    client: reqwest::Client,
    url: String,
    signer: Signer,
    retry_for: Duration,
    outcomes: Outcomes,
    pending: Arc<AtomicUsize>,
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Refused(u16),
    Retry(String),
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Event>) {
        while let Some(event) = queue.recv().await {
            self.deliver(&event).await;
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Tries until delivered, refused, or out of time.
    async fn deliver(&self, event: &Event) {
        let first = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let why = match self.attempt(event).await {
                Attempt::Delivered => {
                    self.outcomes.delivered.increment(1);
                    return;
                }
                Attempt::Refused(status) => {
                    self.outcomes.refused.increment(1);
                    warn!(url = %self.url, id = %event.id, status, "webhook refused; not retried");
                    return;
                }
                Attempt::Retry(why) => why,
            };
            let delay = jittered(backoff);
            if first.elapsed() + delay > self.retry_for {
                self.outcomes.expired.increment(1);
                warn!(url = %self.url, id = %event.id, %why, "webhook given up after its retry period");
                return;
            }
            self.outcomes.retried.increment(1);
            debug!(url = %self.url, id = %event.id, %why, ?delay, "webhook failed; retrying");
            tokio::time::sleep(delay).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(&self, event: &Event) -> Attempt {
        let request = signed_post(&self.client, &self.url, &self.signer, &event.id, event.body.to_string());
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                match status.as_u16() {
                    429 | 500..=599 => Attempt::Retry(format!("status {status}")),
                    other => Attempt::Refused(other),
                }
            }
            Err(error) => Attempt::Retry(error.to_string()),
        }
    }
}

/// `delay` times a random factor in [0.5, 1.5): senders that failed together
/// do not retry together.
fn jittered(delay: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    let random = getrandom::fill(&mut bytes).map_or(0, |()| u16::from_le_bytes(bytes));
    delay.mul_f64(0.5 + f64::from(random) / 65536.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let delay = jittered(Duration::from_secs(2));
            assert!(delay >= Duration::from_secs(1) && delay < Duration::from_secs(3), "{delay:?}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
    }
}
