//! The state every request handler shares.

use std::sync::Arc;

use crate::admission::{ConnectionLimits, OriginPolicy};
use crate::auth::{AuthConfigError, Authenticator};
use crate::channels::Channels;
use crate::cluster::Broker;
use crate::connection::Timings;
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::lifecycle::Lifecycle;
use crate::outbox::{Outbox, QueueLimits};
use crate::rate_limit::RateLimits;
use crate::resume::Sessions;
use crate::settings::Settings;
use crate::telemetry::metrics::Metrics;

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
    /// The STUN/TURN servers (and TURN credentials) peers are given.
    pub ice: IceServers,
    /// Token verification.
    pub auth: Authenticator,
    /// Which `Origin`s may open WebSockets.
    pub origins: OriginPolicy,
    /// Open connections, in total and per client IP.
    pub limits: Arc<ConnectionLimits>,
    /// The link to the other nodes, when rooms are shared over Redis.
    pub broker: Option<Arc<Broker>>,
    /// Signaling sessions by resume token.
    pub sessions: Sessions,
}

impl App {
    /// State for a server with these settings and, to share rooms with other
    /// nodes, a broker; fails on a bad key setup.
    pub fn new(
        settings: Settings,
        metrics: Arc<Metrics>,
        broker: Option<Arc<Broker>>,
    ) -> Result<Arc<App>, AuthConfigError> {
        let auth = Authenticator::new(
            settings.auth,
            settings.auth_secret.as_deref(),
            settings.auth_public_key.as_deref(),
            settings.auth_leeway,
        )?;
        Ok(Arc::new(App {
            auth,
            origins: OriginPolicy::new(&settings.allowed_origins),
            limits: ConnectionLimits::new(settings.max_connections, settings.max_connections_per_ip),
            hub: Hub::new(settings.max_peers_per_room, metrics.clone(), broker.as_ref().map(|b| b.node())),
            broker,
            sessions: Sessions::default(),
            channels: Channels::default(),
            metrics,
            lifecycle: Lifecycle::default(),
            ice: IceServers::new(&settings),
            settings,
        }))
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
            shutdown_code: self.settings.shutdown_close_code,
        }
    }

    /// Fresh rate limiters for one connection whose largest accepted frame is `largest_frame`.
    pub fn rate_limits(&self, largest_frame: usize) -> RateLimits {
        RateLimits::new(self.settings.rate_limit_messages, self.settings.rate_limit_bytes, largest_frame)
    }
}
