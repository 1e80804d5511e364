//! The keepalive sweep: one task wakes the connections whose timer is due,
//! instead of a timer in every connection.
//!
//! A connection's timer decides when to ping a silent client, when to give up
//! on it, and when its rate limiters may go. A tokio `Sleep` in each
//! connection's future cost 112 bytes, which put an idle connection's task
//! one 128-byte size class up (896 B against 768 B; see docs/benchmarks.md).
//! Here each connection writes when it wants to be woken into its outbox
//! ([`Outbox::set_wake_at`]) and registers the outbox once; the sweep looks at
//! every registered outbox each [`TICK`] and wakes the due ones through the
//! outbox's own notification, which the connection's loop already waits on.
//! A look is one atomic load; measured with 15,000 idle connections and a
//! 100 ms tick, the sweep cost the server 4.7 ms of CPU per second (0.5% of a
//! core), so the tick is 250 ms: about 0.2%.
//!
//! Times are milliseconds on the sweep's own coarse clock ([`Sweeper::now`]),
//! refreshed each tick: a connection reads it with one load instead of asking
//! the system clock for every message. Timers are accurate to a tick, which is
//! plenty for pings every 30 s and rate limiters
//! that go after 2 s of quiet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

use crate::outbox::Outbox;

/// How often the sweep looks.
pub const TICK: Duration = Duration::from_millis(250);
/// Registrations are spread over this many locks, so a sweep holds up a
/// connect only on its shard.
const SHARDS: usize = 8;

/// A registration, to be handed back when the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration(u32);

/// The sweep of one server.
pub struct Sweeper {
    shards: [Mutex<Slab<Arc<Outbox>>>; SHARDS],
    epoch: Instant,
    /// Milliseconds since `epoch`, as of the last tick.
    now: AtomicU64,
    started: AtomicBool,
}

impl Default for Sweeper {
    fn default() -> Sweeper {
        Sweeper {
            shards: std::array::from_fn(|_| Mutex::new(Slab::new())),
            epoch: Instant::now(),
            now: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }
}

impl Sweeper {
    /// Milliseconds on the sweep's clock: as of the last tick, at most [`TICK`] behind.
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// A time `after` from now on the sweep's clock.
    pub fn after(&self, after: Duration) -> u64 {
        self.now().saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
    }

    /// Starts the sweep's task, in the current runtime, if it is not running
    /// yet; it ends with the sweeper. The server starts it with itself, so the
    /// task is part of an idle server's baseline (the soak checks that tasks
    /// come back to it); a registration starts it too, if nobody did.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            self.tick();
            tokio::spawn(run(Arc::downgrade(self)));
        }
    }

    /// Starts sweeping `outbox`.
    pub fn register(self: &Arc<Self>, outbox: &Arc<Outbox>) -> Registration {
        self.start();
        // Spread by the outbox's address: registrations from all workers share no lock.
        let shard = (Arc::as_ptr(outbox) as usize / 128) % SHARDS;
        let key = lock(&self.shards[shard]).insert(outbox.clone());
        Registration(u32::try_from(key * SHARDS + shard).unwrap_or(u32::MAX))
    }

    /// Stops sweeping a connection's outbox.
    pub fn unregister(&self, registration: Registration) {
        let index = registration.0 as usize;
        let mut shard = lock(&self.shards[index % SHARDS]);
        if shard.contains(index / SHARDS) {
            shard.remove(index / SHARDS);
        }
    }

    /// How many outboxes are registered, for tests.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tick(&self) -> u64 {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now.store(now, Ordering::Relaxed);
        now
    }

    /// Wakes every registered outbox whose time has come.
    fn sweep(&self) {
        let now = self.tick();
        for shard in &self.shards {
            for (_, outbox) in lock(shard).iter() {
                if outbox.wake_at() <= now {
                    outbox.wake();
                }
            }
        }
    }
}

async fn run(sweeper: Weak<Sweeper>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweeper.upgrade() {
            Some(sweeper) => sweeper.sweep(),
            None => return,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::QueueLimits;

    #[tokio::test(start_paused = true)]
    async fn due_outboxes_are_woken_and_others_left_alone() {
        let sweeper = Arc::new(Sweeper::default());
        let outbox = || Arc::new(Outbox::new(QueueLimits { messages: 4, bytes: 1024 }));
        let (due, later) = (outbox(), outbox());
        let (a, b) = (sweeper.register(&due), sweeper.register(&later));
        due.set_wake_at(sweeper.after(Duration::from_millis(200)));
        later.set_wake_at(sweeper.after(Duration::from_secs(60)));
        let woken = tokio::time::timeout(Duration::from_secs(1), due.ready()).await;
        assert!(woken.is_ok(), "woken once its time came");
        assert!(sweeper.now() >= 200);
        assert!(tokio::time::timeout(Duration::from_secs(1), later.ready()).await.is_err(), "not before its time");
        sweeper.unregister(a);
        sweeper.unregister(b);
        assert!(sweeper.is_empty());
    }
}
