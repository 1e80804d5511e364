//! The state every request handler shares.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;

use crate::channels::Channels;
use crate::connection::Timings;
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::outbox::{Outbox, QueueLimits};
use crate::settings::Settings;
use crate::telemetry::metrics::Metrics;

/// tungstenite reads this much at a time. Its buffer is allocated per
/// connection, so it is kept small: untuned, it is 128 KiB per idle socket.
const READ_BUFFER_SIZE: usize = 4 * 1024;

/// One server's shared state.
pub struct App {
    /// The settings it runs with.
    pub settings: Settings,
    /// Signaling rooms and peers.
    pub hub: Hub,
    /// `/ws/broadcast` channels.
    pub channels: Channels,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Readiness and shutdown.
    pub lifecycle: Lifecycle,
    /// The `iceServers` of every `welcome`, serialised once.
    pub ice_servers: Option<Box<serde_json::value::RawValue>>,
}

impl App {
    /// State for a server with these settings.
    pub fn new(settings: Settings) -> Arc<App> {
        let metrics = Arc::new(Metrics::install());
        Arc::new(App {
            hub: Hub::new(settings.max_peers_per_room, metrics.clone()),
            channels: Channels::default(),
            metrics,
            lifecycle: Lifecycle::default(),
            ice_servers: settings.ice_servers_json(),
            settings,
        })
    }

    /// A fresh, empty outbox with the configured limits.
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(QueueLimits {
            messages: self.settings.send_queue_messages,
            bytes: self.settings.send_queue_bytes,
        }))
    }

    /// Keepalive and write timings for connections.
    pub fn timings(&self) -> Timings {
        Timings {
            ping_interval: self.settings.ping_interval,
            ping_timeout: self.settings.ping_timeout,
            write_timeout: self.settings.write_timeout,
        }
    }

    /// Applies the memory-conscious WebSocket configuration, with `hard_limit`
    /// as the largest frame or message the library will buffer.
    pub fn configure(&self, upgrade: WebSocketUpgrade, hard_limit: usize) -> WebSocketUpgrade {
        upgrade
            .read_buffer_size(READ_BUFFER_SIZE)
            // Frames go straight to the socket; nothing lingers in a write buffer.
            .write_buffer_size(0)
            .max_message_size(hard_limit)
            .max_frame_size(hard_limit)
    }
}
