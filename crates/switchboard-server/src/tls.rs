//! HTTPS and WSS with rustls, and certificate reload without dropping connections.
//!
//! The certificate and key are read from PEM files at start. They are read
//! again on SIGHUP, and whenever either file's modification time changes (polled
//! every `tls-reload-interval`, which also catches the symlink swaps of
//! Kubernetes secrets and certbot renewals). Open connections keep the session
//! they negotiated; new handshakes get the new certificate. A reload that fails
//! (say, the key does not match the certificate yet) is logged and the old
//! certificate kept.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the certificate chain and private key live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Installs the process-wide crypto provider (ring) rustls builds its configs with.
pub fn init_crypto() {
    // Fails only if a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the certificate and key.
pub async fn load(files: &TlsFiles) -> io::Result<RustlsConfig> {
    init_crypto();
    RustlsConfig::from_pem_file(&files.cert, &files.key).await
}

/// Reloads `config` on SIGHUP and when the files change, until `stop`.
pub async fn watch(config: RustlsConfig, files: TlsFiles, interval: Duration, stop: CancellationToken) {
    let mut seen = modified(&files);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<()>();
        let reason = tokio::select! {
            () = stop.cancelled() => return,
            () = hangup_received => "SIGHUP",
            () = tokio::time::sleep(interval) => {
                let now = modified(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                "files changed"
            }
        };
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => info!(reason, cert = %files.cert.display(), "TLS certificate reloaded"),
            Err(err) => warn!(reason, error = %err, "TLS certificate reload failed; keeping the previous one"),
        }
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(&files.cert), time(&files.key))
}
