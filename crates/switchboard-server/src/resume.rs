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
    /// Whose session it is.
    peer: PeerId,
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
    pub fn register(&self, shutdown: &CancellationToken, peer: PeerId) -> (ResumeToken, CancellationToken) {
        let token = PeerId::random();
        let takeover = shutdown.child_token();
        let slot = Slot { peer, entry: Mutex::new(Entry::Live(takeover.clone())), suspended: Notify::new() };
        self.slots.insert(token, Arc::new(slot));
        (token, takeover)
    }

    /// The session's connection ended for good (the client left, or was
    /// expelled, or the server is stopping), or the session was parked with the
    /// deployment (`broker::parking`): forget it. A claim waiting for it to
    /// suspend looks elsewhere.
    pub fn end(&self, token: ResumeToken) {
        if let Some((_, slot)) = self.slots.remove(&token) {
            slot.suspended.notify_waiters();
        }
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

impl crate::hub::activity::Suspended for Sessions {
    /// The server API removed `peer`: if its session waits for a resume, it
    /// ends now. A scan of every session, for a rare request.
    fn end(&self, peer: PeerId) -> Option<Vec<Arc<str>>> {
        let token = self
            .slots
            .iter()
            .find(|slot| matches!(&*lock(&slot.entry), Entry::Suspended(state) if state.id == peer))
            .map(|slot| *slot.key())?;
        self.expire(token).map(|state| state.rooms)
    }

    /// Another node resumes `peer`: its live connection here is switched off.
    fn hand_over(&self, peer: PeerId) -> bool {
        let slot = self.slots.iter().find(|slot| slot.peer == peer).map(|slot| slot.clone());
        match slot {
            Some(slot) => match &*lock(&slot.entry) {
                Entry::Live(takeover) => {
                    takeover.cancel();
                    true
                }
                Entry::Suspended(_) => false,
            },
            None => false,
        }
    }
}

fn lock(entry: &Mutex<Entry>) -> std::sync::MutexGuard<'_, Entry> {
    entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::QueueLimits;

    fn state() -> SessionState {
        let outbox = Arc::new(Outbox::new(QueueLimits { messages: 8, bytes: 1 << 16 }));
        SessionState { id: PeerId::random(), identity: Identity::default(), outbox, rooms: vec!["r".into()] }
    }

    #[tokio::test]
    async fn a_suspended_session_is_claimed_once() {
        let sessions = Sessions::default();
        let (token, _takeover) = sessions.register(&CancellationToken::new(), PeerId::random());
        let suspended = state();
        let id = suspended.id;
        sessions.suspend(token, suspended);
        let claimed = sessions.claim(token).await.expect("the token resumes its session");
        assert_eq!((claimed.id, claimed.rooms.len()), (id, 1));
        assert!(sessions.claim(token).await.is_none(), "a token works once");
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn claiming_a_live_session_switches_its_connection_off_and_waits_for_it() {
        let sessions = Arc::new(Sessions::default());
        let shutdown = CancellationToken::new();
        let (token, takeover) = sessions.register(&shutdown, PeerId::random());
        let suspended = state();
        let id = suspended.id;
        // The live connection: when switched off, it suspends its session.
        let connection = {
            let sessions = sessions.clone();
            tokio::spawn(async move {
                takeover.cancelled().await;
                sessions.suspend(token, suspended);
            })
        };
        let claimed = sessions.claim(token).await.expect("handed over");
        assert_eq!(claimed.id, id);
        connection.await.unwrap();
        assert!(!shutdown.is_cancelled(), "the takeover switch is the connection's own");
    }

    #[tokio::test]
    async fn expiry_takes_only_a_suspended_session() {
        let sessions = Sessions::default();
        let (token, _takeover) = sessions.register(&CancellationToken::new(), PeerId::random());
        assert!(sessions.expire(token).is_none(), "a live session does not expire");
        sessions.suspend(token, state());
        assert!(sessions.expire(token).is_some());
        assert!(sessions.claim(token).await.is_none(), "an expired session cannot be resumed");
        sessions.end(PeerId::random()); // unknown tokens are ignored
    }

    #[test]
    fn a_removed_peer_s_suspended_session_ends_and_a_live_one_is_left_to_its_connection() {
        use crate::hub::activity::Suspended;
        let sessions = Sessions::default();
        let (token, _takeover) = sessions.register(&CancellationToken::new(), PeerId::random());
        let suspended = state();
        let id = suspended.id;
        assert!(Suspended::end(&sessions, id).is_none(), "live: its connection reads the removal");
        sessions.suspend(token, suspended);
        assert_eq!(Suspended::end(&sessions, id), Some(vec![Arc::from("r")]));
        assert!(sessions.is_empty(), "and it cannot be resumed");
    }

    #[test]
    fn shutdown_switches_every_live_session_off() {
        let sessions = Sessions::default();
        let shutdown = CancellationToken::new();
        let (_, a) = sessions.register(&shutdown, PeerId::random());
        let (_, b) = sessions.register(&shutdown, PeerId::random());
        shutdown.cancel();
        assert!(a.is_cancelled() && b.is_cancelled());
        assert_eq!(sessions.len(), 2);
    }
}
