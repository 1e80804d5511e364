//! Binding, serving, and the staged graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

use crate::app::App;
use crate::broker::memory::MemoryBroker;
use crate::broker::{Broker, BrokerError};
use crate::cluster::{RedisBroker, RedisConfig};
use crate::endpoints::{api, router};
use crate::settings::Settings;
use crate::telemetry::metrics::Metrics;
use crate::tls;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or serving failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The authentication keys, webhooks or the join hook are unusable.
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    /// The TLS certificate or key cannot be loaded.
    #[error("cannot load the TLS certificate and key: {0}")]
    Tls(io::Error),
    /// The Redis broker cannot be set up (a bad URL, or cluster seeds unreachable).
    #[error("cannot connect to Redis: {0}")]
    Broker(#[from] BrokerError),
}

/// Serves until `shutdown` resolves, then shuts down in stages:
///
/// 1. `/readyz` fails, while the server keeps accepting for `shutdown-delay`;
/// 2. the listener closes and every WebSocket is sent close 1001, every event stream ends;
/// 3. the server waits up to `shutdown-timeout` for connections to finish, then returns.
pub async fn serve(settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let listener = bind(settings.listen)?;
    let (_, server) = serve_on(listener, settings, shutdown).await?;
    server.await
}

/// Sets a server up on a listener that is already bound (its address is
/// `settings.listen`'s stand-in): the broker, the state, TLS. Returns the
/// address it serves on and the future that serves it, as [`serve`] does.
/// Tests use it to run a server in their own process without waiting on logs.
pub async fn serve_on(
    listener: std::net::TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = Result<(), ServeError>>), ServeError> {
    let metrics = Arc::new(Metrics::install());
    let broker: Arc<dyn Broker> = match &settings.redis {
        Some(url) => {
            let config = RedisConfig {
                url: url.clone(),
                cluster: settings.redis_cluster,
                timeout: settings.redis_timeout,
                node_ttl: settings.node_ttl,
                prefix: settings.redis_prefix.clone(),
                max_peers_per_room: settings.max_peers_per_room,
            };
            RedisBroker::connect(&config, metrics.clone()).await?
        }
        None => Arc::new(MemoryBroker::new(settings.max_peers_per_room)),
    };
    let app = App::new(settings, metrics, broker)?;
    app.connections.sweeper.start();
    let tls = match app.settings.tls_files() {
        Some(files) => Some((tls::load(&files).await.map_err(ServeError::Tls)?, files)),
        None => None,
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    app.hub.set_address(addr.to_string());
    info!(%addr, scheme, auth = ?app.settings.auth, "listening");
    let api = match (app.settings.api_listen, app.settings.api_keys.is_empty()) {
        (Some(api_addr), false) => {
            let api = bind(api_addr)?;
            api.set_nonblocking(true)?;
            info!(addr = %api.local_addr()?, "server API listening");
            Some(api)
        }
        _ => None,
    };
    Ok((addr, run(app, listener, api, tls, shutdown)))
}

async fn run(
    app: Arc<App>,
    listener: std::net::TcpListener,
    api: Option<std::net::TcpListener>,
    tls: Option<(axum_server::tls_rustls::RustlsConfig, tls::TlsFiles)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let stop_accepting = app.lifecycle().close_connections.clone();
    if let Some(api) = api {
        // The API's own address: plain HTTP, its routes only, until shutdown.
        let service = api::router(app.clone()).with_state(app.clone());
        let server = axum::serve(TcpListener::from_std(api)?, service)
            .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        tokio::spawn(async move {
            if let Err(error) = server.await {
                warn!(%error, "the server API's listener failed");
            }
        });
    }
    let service = router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let http = match tls {
        None => {
            let listener = TcpListener::from_std(listener)?.tap_io(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    warn!(%error, "cannot set TCP_NODELAY");
                }
            });
            let server = axum::serve(listener, service).with_graceful_shutdown(stop_accepting.cancelled_owned());
            tokio::spawn(async move { server.await })
        }
        Some((config, files)) => {
            tokio::spawn(tls::watch(config.clone(), files, app.settings.tls_reload_interval, stop_accepting.clone()));
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            let grace = app.settings.shutdown_timeout;
            tokio::spawn(async move {
                stop_accepting.cancelled().await;
                stopper.graceful_shutdown(Some(grace));
            });
            let server = axum_server::from_tcp_rustls(listener, config)?
                .map(|tls: RustlsAcceptor| tls.acceptor(NoDelayAcceptor))
                .handle(handle);
            tokio::spawn(async move { server.serve(service).await })
        }
    };

    shutdown.await;
    drain(&app).await;
    // The departures the shutdown caused are told before the process exits:
    // to the other nodes first, then to the app's backend.
    app.hub.settle(app.settings.shutdown_timeout).await;
    app.hub.broker().stop().await;
    if let Some(webhooks) = &app.webhooks {
        let left = webhooks.settle(app.settings.shutdown_timeout).await;
        if left > 0 {
            warn!(left, "shutdown timeout reached with webhooks still unsent");
        }
    }
    // Plain HTTP requests still in flight get the same deadline.
    match tokio::time::timeout(app.settings.shutdown_timeout, http).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(join_error)) => Err(io::Error::other(join_error).into()),
        Err(_) => {
            warn!("shutdown timeout reached with HTTP requests still open");
            Ok(())
        }
    }
}

/// Pending connections the kernel queues before `accept`: std's 128 overflows
/// when thousands of peers reconnect at once (after a restart, say). Linux caps
/// it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with a deep accept backlog and `SO_REUSEADDR`,
/// so a restarted server can bind again while old connections linger in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

async fn drain(app: &Arc<App>) {
    let settings = &app.settings;
    info!(delay = ?settings.shutdown_delay, "shutting down: no longer ready");
    app.lifecycle().begin_shutdown();
    tokio::time::sleep(settings.shutdown_delay).await;

    info!("closing connections");
    app.lifecycle().close_connections.cancel();
    app.lifecycle().connections.close();
    let drained = tokio::time::timeout(settings.shutdown_timeout, app.lifecycle().connections.wait()).await;
    match drained {
        Ok(()) => info!("all connections closed"),
        Err(_) => {
            warn!(remaining = app.lifecycle().connections.len(), "shutdown timeout reached with connections still open")
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    info!("shutdown signal received");
}
