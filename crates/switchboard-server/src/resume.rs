//! Session resume: a peer whose connection drops keeps its id, its rooms and
//! the messages sent to it, for a grace period, and gets them all back when it
//! reconnects with the secret token from its `welcome`.
//!
//! Every signaling session is registered here under its current resume token.
//! While its connection is up the entry is *live* and holds a takeover switch;
//! when the connection is lost (no close frame, pings unanswered) the session's
//! state moves into the entry, *suspended*, and a timer starts. Meanwhile the
//! hub still lists the peer and its outbox keeps collecting what is sent to it,
//! within the usual send-queue limits: a sender whose message does not fit gets
//! `delivery-failed`, and the session can no longer be resumed.
//!
//! A reconnection with the token claims the entry. A suspended session is taken
//! at once; a live one (the old connection is half-open and the server has not
//! noticed yet) is switched off first: its connection closes with 4001 and
//! suspends itself, and the claim takes it from there. Either way the token is
//! spent: the resumed session gets a fresh one. If the timer runs out first, the
//! session ends as a disconnect would have: its rooms are told `peer-left`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::outbox::Outbox;
use crate::peer_id::PeerId;

/// How long a claim waits for a live connection to hand its session over.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// A resume token: 128 random bits, URL-safe; the same shape as a peer id.
pub type ResumeToken = PeerId;

/// What a session is, apart from its connection.
pub struct SessionState {
    /// The peer's id.
    pub id: PeerId,
    /// Who it is, from its token.
    pub identity: Identity,
    /// Its send queue, still filling while it is away.
    pub outbox: Arc<Outbox>,
    /// Its rooms, in join order.
    pub rooms: Vec<Arc<str>>,
}

enum Entry {
    /// Connected; cancel the switch to take the session over.
    Live(CancellationToken),
    /// Disconnected; waiting to be resumed until the timer runs out.
    Suspended(SessionState),
}

struct Slot {
    entry: Mutex<Entry>,
    /// Wakes a claim waiting for a live session to suspend itself.
    suspended: Notify,
}

/// The sessions of one node, by resume token.
#[derive(Default)]
pub struct Sessions {
    slots: DashMap<ResumeToken, Arc<Slot>>,
}

impl Sessions {
    /// Registers a live session; returns its token and the switch that ends its
    /// connection when another one resumes it. The switch is a child of
    /// `shutdown`, so a connection waits on one token for both.
    pub fn register(&self, shutdown: &CancellationToken) -> (ResumeToken, CancellationToken) {
        let token = PeerId::random();
        let takeover = shutdown.child_token();
        let slot = Slot { entry: Mutex::new(Entry::Live(takeover.clone())), suspended: Notify::new() };
        self.slots.insert(token, Arc::new(slot));
        (token, takeover)
    }

    /// The session's connection ended for good (the client left, or was
    /// expelled, or the server is stopping): forget it.
    pub fn end(&self, token: ResumeToken) {
        self.slots.remove(&token);
    }

    /// The session's connection was lost: keep its state for a claim.
    pub fn suspend(&self, token: ResumeToken, state: SessionState) {
        if let Some(slot) = self.slots.get(&token) {
            *lock(&slot.entry) = Entry::Suspended(state);
            slot.suspended.notify_waiters();
        }
    }

    /// Takes a suspended session for a reconnection, switching a live one off
    /// first. `None`: no such session (unknown, spent or expired token).
    pub async fn claim(&self, token: ResumeToken) -> Option<SessionState> {
        let slot = self.slots.get(&token).map(|slot| slot.clone())?;
        let waiting = slot.suspended.notified();
        tokio::pin!(waiting);
        // Registered before looking, so a suspension in between is not missed.
        waiting.as_mut().enable();
        if let Entry::Live(takeover) = &*lock(&slot.entry) {
            takeover.cancel();
        }
        if matches!(&*lock(&slot.entry), Entry::Live(_)) {
            let _ = tokio::time::timeout(HANDOVER_WAIT, waiting).await;
        }
        // Whoever removes the slot owns the session; a second claim finds nothing.
        let (_, slot) = self.slots.remove_if(&token, |_, s| matches!(&*lock(&s.entry), Entry::Suspended(_)))?;
        let entry = std::mem::replace(&mut *lock(&slot.entry), Entry::Live(CancellationToken::new()));
        match entry {
            Entry::Suspended(state) => Some(state),
            Entry::Live(_) => None,
        }
    }

    /// The grace period is over: takes the session if it is still suspended, so
    /// the caller can end it.
    pub fn expire(&self, token: ResumeToken) -> Option<SessionState> {
        let (_, slot) = self.slots.remove_if(&token, |_, s| matches!(&*lock(&s.entry), Entry::Suspended(_)))?;
        let entry = std::mem::replace(&mut *lock(&slot.entry), Entry::Live(CancellationToken::new()));
        match entry {
            Entry::Suspended(state) => Some(state),
            Entry::Live(_) => None,
        }
    }

    /// Sessions registered (live or suspended), for tests and metrics.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn lock(entry: &Mutex<Entry>) -> std::sync::MutexGuard<'_, Entry> {
    entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
