//! The bounded queue of frames waiting to be written to one connection.
//!
//! Anyone may push (the hub fanning out a broadcast, the connection's own
//! replies); only the connection's task takes. A push never waits: a client that
//! stops reading fills its queue, trips the limit, and is closed as a slow
//! consumer, so it can neither grow the server's memory without bound nor slow
//! the peers sending to it.
//!
//! An idle outbox holds no heap memory: [`Outbox::take`] hands the whole queue,
//! allocation and all, to the writer, and the next push starts a fresh one.
//!
//! The outbox also carries the server's own decisions about the connection
//! (the server API removed it from a room, or removed it altogether): whoever
//! decides has only the outbox, and the connection's task reads them in order
//! with its frames. They cost an idle connection one flag and one pointer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes};
use tokio::sync::Notify;

/// Limits on what may wait in one outbox.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most frames waiting.
    pub messages: usize,
    /// Most bytes waiting. One frame is always accepted into an empty queue,
    /// whatever its size.
    pub bytes: usize,
}

/// The receiver is not keeping up; it is being disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection's send queue is full")]
pub struct Overflow;

/// The server ended the connection on purpose: the close frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The close code (4000-4999).
    pub code: u16,
    /// The close reason (at most 123 bytes).
    pub reason: Utf8Bytes,
}

/// What the server decided about a connection since its task last looked.
#[derive(Debug, Default)]
struct Notices {
    /// Rooms it was removed from, in order.
    removed_from: Vec<Arc<str>>,
    /// Set once: the connection is to be closed, and its session not resumed.
    removal: Option<Removal>,
}

/// One connection's send queue.
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    limits: QueueLimits,
    /// Whether `state.notices` has something: the writer checks it without the lock.
    noticed: AtomicBool,
    /// When the connection's timer is due, on the keepalive sweep's clock
    /// (the `sweep` module); the sweep wakes the connection through `ready` then.
    wake_at: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    bytes: usize,
    overflowed: bool,
    notices: Option<Box<Notices>>,
}

impl State {
    /// Something did not fit: the queue is dropped, and every later push fails.
    fn overflow(&mut self) -> Result<(), Overflow> {
        self.overflowed = true;
        self.queue = VecDeque::new();
        self.bytes = 0;
        Err(Overflow)
    }
}

impl Outbox {
    /// An empty outbox.
    pub fn new(limits: QueueLimits) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            limits,
            noticed: AtomicBool::new(false),
            wake_at: AtomicU64::new(u64::MAX),
        }
    }

    /// When the connection wants its timer run (`u64::MAX`: never).
    pub fn wake_at(&self) -> u64 {
        self.wake_at.load(Ordering::Relaxed)
    }

    /// Sets when the connection wants its timer run.
    pub fn set_wake_at(&self, at: u64) {
        self.wake_at.store(at, Ordering::Relaxed);
    }

    /// Wakes the connection's task (its timer is due).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Queues `frame` (which tells the client) and notes for the connection's
    /// task that the peer is no longer in `room`.
    pub fn remove_from(&self, room: Arc<str>, frame: Message) {
        let _ = self.push(frame);
        self.notice(|notices| notices.removed_from.push(room));
    }

    /// Asks the connection's task to close with `removal` once it has written
    /// what is queued; the session is over (no resume). The first removal wins.
    pub fn remove(&self, removal: Removal) {
        self.notice(|notices| {
            notices.removal.get_or_insert(removal);
        });
    }

    /// Whether the server has asked for the connection to be closed.
    pub fn is_removed(&self) -> bool {
        self.noticed.load(Ordering::Acquire) && self.lock().notices.as_ref().is_some_and(|n| n.removal.is_some())
    }

    /// Whether there are notices the connection's task has not read: a flag, no lock.
    pub fn has_notices(&self) -> bool {
        self.noticed.load(Ordering::Acquire)
    }

    /// Takes the rooms the peer was removed from since the last call, and the
    /// removal if there is one (which stays, for [`Outbox::is_removed`]).
    pub fn take_notices(&self) -> (Vec<Arc<str>>, Option<Removal>) {
        let mut state = self.lock();
        let Some(notices) = state.notices.as_mut() else { return (Vec::new(), None) };
        let rooms = std::mem::take(&mut notices.removed_from);
        let removal = notices.removal.clone();
        if removal.is_none() {
            state.notices = None;
            self.noticed.store(false, Ordering::Release);
        }
        (rooms, removal)
    }

    fn notice(&self, change: impl FnOnce(&mut Notices)) {
        change(self.lock().notices.get_or_insert_with(Default::default));
        self.noticed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Queues a frame for writing. Fails, and marks the outbox overflowed, when
    /// the frame does not fit; every later push fails too.
    pub fn push(&self, frame: Message) -> Result<(), Overflow> {
        let len = frame_len(&frame);
        let result = {
            let mut state = self.lock();
            if state.overflowed {
                return Err(Overflow);
            }
            let full = state.queue.len() >= self.limits.messages
                || (!state.queue.is_empty() && state.bytes + len > self.limits.bytes);
            if full {
                state.overflow()
            } else {
                state.bytes += len;
                state.queue.push_back(frame);
                Ok(())
            }
        };
        // Wake the writer either way: on overflow it closes the connection.
        self.ready.notify_one();
        result
    }

    /// Waits until a push has happened since the last [`take`](Outbox::take).
    /// Cancel-safe: a wake-up that is not awaited is kept for the next call.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Takes everything queued, or reports that the outbox overflowed.
    pub fn take(&self) -> Result<VecDeque<Message>, Overflow> {
        let mut state = self.lock();
        if state.overflowed {
            return Err(Overflow);
        }
        state.bytes = 0;
        Ok(std::mem::take(&mut state.queue))
    }

    /// What was queued for a resumed session while no node held it, ahead of
    /// anything pushed since (it is older): within the limits, or else the
    /// outbox overflows, as a push would have.
    pub fn prepend(&self, frames: Vec<Message>) -> Result<(), Overflow> {
        let result = {
            let mut state = self.lock();
            let bytes: usize = frames.iter().map(frame_len).sum();
            let total = state.queue.len() + frames.len();
            if state.overflowed
                || total > self.limits.messages
                || (total > 1 && state.bytes + bytes > self.limits.bytes)
            {
                state.overflow()
            } else {
                state.bytes += bytes;
                for frame in frames.into_iter().rev() {
                    state.queue.push_front(frame);
                }
                Ok(())
            }
        };
        self.ready.notify_one();
        result
    }

    /// The frames waiting, as text (a session being parked takes them along;
    /// only text frames are ever queued for a resumable session).
    pub fn drain_text(&self) -> Vec<String> {
        let mut state = self.lock();
        state.bytes = 0;
        std::mem::take(&mut state.queue)
            .into_iter()
            .filter_map(|frame| match frame {
                Message::Text(text) => Some(text.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The limits this outbox keeps.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Whether a push has overflowed the queue.
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain data with no invariants a panic could break.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(messages: usize, bytes: usize) -> Outbox {
        Outbox::new(QueueLimits { messages, bytes })
    }

    #[test]
    fn a_resumed_session_s_frames_go_ahead_of_later_ones_within_the_limits() {
        let outbox = outbox(4, 1000);
        outbox.push(Message::text("arrived meanwhile")).unwrap();
        outbox.prepend(vec![Message::text("queued 1"), Message::text("queued 2")]).unwrap();
        assert_eq!(outbox.drain_text(), ["queued 1", "queued 2", "arrived meanwhile"]);
        outbox.push(Message::text("x")).unwrap();
        let too_many = (0..4).map(|n| Message::text(n.to_string())).collect();
        assert_eq!(outbox.prepend(too_many), Err(Overflow), "five frames in a queue of four");
        assert!(outbox.is_overflowed());
    }

    #[test]
    fn take_returns_frames_in_push_order() {
        let outbox = outbox(10, 1000);
        for text in ["a", "b", "c"] {
            outbox.push(Message::text(text)).unwrap();
        }
        let taken: Vec<_> = outbox.take().unwrap().into_iter().map(|m| m.into_text().unwrap()).collect();
        assert_eq!(taken, ["a", "b", "c"]);
        assert!(outbox.take().unwrap().is_empty());
    }

    #[test]
    fn message_limit_overflows_and_stays_overflowed() {
        let outbox = outbox(2, 1000);
        outbox.push(Message::text("a")).unwrap();
        outbox.push(Message::text("b")).unwrap();
        assert_eq!(outbox.push(Message::text("c")), Err(Overflow));
        assert_eq!(outbox.take().unwrap_err(), Overflow);
        assert_eq!(outbox.push(Message::text("d")), Err(Overflow));
    }

    #[test]
    fn byte_limit_counts_queued_bytes_but_admits_one_large_frame() {
        let outbox = outbox(100, 10);
        outbox.push(Message::text("x".repeat(50))).unwrap();
        assert_eq!(outbox.push(Message::text("y")), Err(Overflow));

        let outbox = self::outbox(100, 10);
        outbox.push(Message::text("12345")).unwrap();
        outbox.push(Message::text("12345")).unwrap();
        outbox.take().unwrap();
        outbox.push(Message::text("1234567890")).unwrap();
    }

    #[test]
    fn notices_come_with_the_frames_and_a_removal_stays() {
        let outbox = outbox(10, 1000);
        assert!(!outbox.has_notices());
        outbox.remove_from("a".into(), Message::text("closed a"));
        assert!(outbox.has_notices() && !outbox.is_removed());
        let (rooms, removal) = outbox.take_notices();
        assert_eq!((rooms, removal), (vec![Arc::from("a")], None));
        assert!(!outbox.has_notices(), "read once");
        assert_eq!(outbox.take().unwrap().len(), 1, "the frame that tells the client is queued");

        let removal = Removal { code: 4003, reason: "bye".into() };
        outbox.remove(removal.clone());
        outbox.remove(Removal { code: 4010, reason: "later".into() });
        assert!(outbox.is_removed());
        assert_eq!(outbox.take_notices().1, Some(removal.clone()), "the first removal wins");
        assert_eq!(outbox.take_notices().1, Some(removal), "and stays");
    }

    #[tokio::test]
    async fn ready_wakes_for_a_push_made_before_waiting() {
        let outbox = outbox(10, 1000);
        outbox.push(Message::text("a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready()).await.unwrap();
    }
}
