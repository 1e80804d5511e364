//! The state request handlers share: the top of the house. Only the endpoints
//! and the server see it; lower modules are handed the narrow part they use
//! (a connection's [`Environment`], the [`Hub`]).

use std::sync::Arc;

use crate::admission::{ConnectionLimits, OriginPolicy};
use crate::auth::{AuthConfigError, Authenticator};
use crate::broker::Broker;
use crate::channels::Channels;
use crate::connection::{Environment, Timings};
use crate::hub::Hub;
use crate::ice::IceServers;
use crate::lifecycle::Lifecycle;
use crate::outbox::{Outbox, QueueLimits};
use crate::rate_limit::RateSpec;
use crate::resume::Sessions;
use crate::settings::Settings;
use crate::sweep::Sweeper;
use crate::telemetry::metrics::Metrics;
use crate::webhooks::join_hook::JoinHook;
use crate::webhooks::{WebhookConfig, WebhookError, Webhooks};

/// Why the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The authentication keys are unusable.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// Webhooks or the join hook cannot be set up.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// One server's shared state.
pub struct App {
    /// The settings it runs with.
    pub settings: Settings,
    /// Signaling rooms and peers, over the deployment's broker.
    pub hub: Arc<Hub>,
    /// `/ws/broadcast` channels.
    pub channels: Channels,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// What every connection runs with: lifecycle, metrics, timings, rate limits.
    pub connections: Arc<Environment>,
    /// The STUN/TURN servers (and TURN credentials) peers are given.
    pub ice: IceServers,
    /// Token verification.
    pub auth: Authenticator,
    /// Which `Origin`s may open WebSockets.
    pub origins: OriginPolicy,
    /// Open connections, in total and per client IP.
    pub limits: Arc<ConnectionLimits>,
    /// Signaling sessions by resume token.
    pub sessions: Arc<Sessions>,
    /// The app's backend decides joins, if `--join-hook-url` is set.
    pub join_hook: Option<JoinHook>,
    /// The webhook sender, if `--webhook-url` is set.
    pub webhooks: Option<Arc<Webhooks>>,
}

impl App {
    /// State for a server with these settings, whose rooms `broker` decides
    /// (in memory, or shared over Redis); fails on a bad key setup.
    pub fn new(settings: Settings, metrics: Arc<Metrics>, broker: Arc<dyn Broker>) -> Result<Arc<App>, AppError> {
        let auth = Authenticator::new(
            settings.auth,
            settings.auth_secret.as_deref(),
            settings.auth_public_key.as_deref(),
            settings.auth_leeway,
        )?;
        let connections = Arc::new(Environment {
            lifecycle: Lifecycle::default(),
            metrics: metrics.clone(),
            timings: Timings {
                ping_interval: settings.ping_interval,
                ping_timeout: settings.ping_timeout,
                write_timeout: settings.write_timeout,
                shutdown_code: settings.shutdown_close_code,
            },
            rate_limits: RateSpec { messages: settings.rate_limit_messages, bytes: settings.rate_limit_bytes },
            sweeper: Arc::new(Sweeper::default()),
        });
        let hub = Hub::start(broker, metrics.clone());
        let sessions = Arc::new(Sessions::default());
        hub.set_suspended(sessions.clone());
        let secret = settings.webhook_secret.clone().unwrap_or_default();
        let webhooks = match settings.webhook_urls.is_empty() {
            true => None,
            false => {
                let config = WebhookConfig {
                    urls: settings.webhook_urls.clone(),
                    secret: secret.clone(),
                    retry_for: settings.webhook_retry_for,
                    queue: settings.webhook_queue,
                };
                let webhooks = Webhooks::start(&config, hub.node())?;
                hub.set_listener(webhooks.clone());
                Some(webhooks)
            }
        };
        let join_hook = match &settings.join_hook_url {
            Some(url) => Some(JoinHook::new(url, &secret, settings.join_hook_timeout, settings.join_hook_failure)?),
            None => None,
        };
        Ok(Arc::new(App {
            auth,
            origins: OriginPolicy::new(&settings.allowed_origins),
            limits: ConnectionLimits::new(settings.max_connections, settings.max_connections_per_ip),
            hub,
            sessions,
            join_hook,
            webhooks,
            channels: Channels::default(),
            metrics,
            connections,
            ice: IceServers::new(&settings),
            settings,
        }))
    }

    /// Readiness and shutdown.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.connections.lifecycle
    }

    /// A fresh, empty outbox with the configured limits.
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(QueueLimits {
            messages: self.settings.send_queue_messages,
            bytes: self.settings.send_queue_bytes,
        }))
    }
}
