//! Server-Sent Events: `/sse`, the seeds' ticking stream, and
//! `/sse/rooms/{room}`, a signaling room's membership as it changes.
//!
//! Each stream owns a guard that is dropped with it when the client goes away,
//! which stops its timer or subscription and decrements the stream gauge: that
//! is what "nothing is left behind" rests on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::time::{interval, MissedTickBehavior};

use super::admitted::{refuse, Admitted};
use crate::admission::Refusal;
use crate::app::App;
use crate::hub::room::validate_name;
use crate::telemetry::metrics::SseEndpoint;

/// Comment lines at this interval keep proxies from timing an idle stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Decrements a stream gauge when the stream is dropped.
struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    fn new(gauge: &metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[derive(Serialize)]
struct Tick<'a> {
    message: &'a str,
    seq: u64,
    time: String,
}

/// `GET /sse`: a JSON event per `sse-interval`, numbered by `id:`. A reconnecting
/// client's `Last-Event-ID` continues the numbering.
pub async fn ticks(State(app): State<Arc<App>>, admitted: Admitted, headers: HeaderMap) -> Response {
    if let Err(refusal) = admitted.require_identity() {
        return refuse(&app, refusal);
    }
    let first = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(1, |last| last.saturating_add(1));
    let mut timer = interval(app.settings.sse_interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The stream owns the admission, so its place under the caps lasts as long as it does.
    let held = (GaugeGuard::new(app.metrics.sse_streams(SseEndpoint::Ticks)), admitted);

    let events = stream::unfold((timer, first, held), |(mut timer, seq, held)| async move {
        timer.tick().await;
        let tick = Tick {
            message: "Hello from server!",
            seq,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        let data = serde_json::to_string(&tick).unwrap_or_default();
        let event = Event::default().id(seq.to_string()).data(data);
        Some((Ok::<_, Infallible>(event), (timer, seq + 1, held)))
    });
    let events = events.take_until(app.lifecycle().close_connections.clone().cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// `GET /sse/rooms/{room}`: a `room-state` snapshot, then every `peer-joined` and
/// `peer-left` of that room.
pub async fn room(Path(room): Path<String>, admitted: Admitted, State(app): State<Arc<App>>) -> Response {
    if let Err(reason) = validate_name(&room, app.settings.max_room_name_len) {
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    match admitted.require_identity() {
        Err(refusal) => return refuse(&app, refusal),
        Ok(identity) if !identity.may_join(&room) => return refuse(&app, Refusal::Forbidden),
        Ok(_) => {}
    }
    let room: Arc<str> = room.into();
    let (snapshot, events) = match app.hub.observe(&room).await {
        Ok(observed) => observed,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    };
    let watch = RoomWatch {
        app: app.clone(),
        room,
        events: Some(events),
        _gauge: GaugeGuard::new(app.metrics.sse_streams(SseEndpoint::Room)),
        _admitted: admitted,
    };
    let first = stream::once(async move { Ok::<_, Infallible>(Event::default().data(snapshot.as_str())) });
    let rest = stream::unfold(watch, |mut watch| async move {
        let data = watch.next().await?;
        Some((Ok(Event::default().data(data.as_str())), watch))
    });
    let events = first.chain(rest).take_until(app.lifecycle().close_connections.clone().cancelled_owned());

    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// One observer of a room; releases its subscription when dropped.
struct RoomWatch {
    app: Arc<App>,
    room: Arc<str>,
    events: Option<Receiver<Utf8Bytes>>,
    _gauge: GaugeGuard,
    _admitted: Admitted,
}

impl RoomWatch {
    /// The next event, or a fresh snapshot if this observer fell behind.
    async fn next(&mut self) -> Option<Utf8Bytes> {
        let events = self.events.as_mut()?;
        match events.recv().await {
            Ok(event) => Some(event),
            Err(RecvError::Lagged(_)) => Some(self.app.hub.room_state(&self.room)),
            Err(RecvError::Closed) => None,
        }
    }
}

impl Drop for RoomWatch {
    fn drop(&mut self) {
        // The receiver must be gone before the hub counts the remaining ones.
        self.events = None;
        self.app.hub.release_observer(&self.room);
    }
}
