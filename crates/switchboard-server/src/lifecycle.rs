//! Readiness and graceful shutdown.
//!
//! Shutdown runs in stages (see `server::serve`): `/readyz` starts
//! failing, the listener keeps accepting for `shutdown-delay` so a load balancer
//! can notice, then the listener stops, every WebSocket and event stream is told
//! to close (1001), and the process waits up to `shutdown-timeout` for them.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared shutdown state.
#[derive(Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
    /// Cancelled when connections must close.
    pub close_connections: CancellationToken,
    /// Every WebSocket task, so shutdown can wait for them to finish.
    pub connections: TaskTracker,
}

impl Lifecycle {
    /// Whether `/readyz` should report ready.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }

    /// First stage of shutdown: stop reporting ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
