//! One signaling room: its members in join order, its capacity, its observers.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use switchboard_protocol::server::encode::PeerRef;
use tokio::sync::broadcast;

use crate::outbox::Outbox;
use crate::peer_id::PeerId;

/// How many membership events an observer may fall behind before it is sent a
/// fresh snapshot instead.
pub const OBSERVER_BACKLOG: usize = 64;

/// A peer in a room.
pub struct Member {
    /// Where to deliver frames for this peer.
    pub outbox: Arc<Outbox>,
    /// The metadata it joined with, shown to the others.
    pub meta: Option<Box<RawValue>>,
    /// The authenticated user, shown to the others.
    pub user: Option<Arc<str>>,
}

/// A room. It lives in the registry while it has members or observers.
pub struct Room {
    /// Members in join order, so `joined` lists them oldest first.
    pub members: IndexMap<PeerId, Member>,
    /// The capacity set by the join that created the room.
    pub capacity: Option<u32>,
    /// Membership events for `/sse/rooms/{room}`; `None` while nobody watches.
    pub observers: Option<broadcast::Sender<Utf8Bytes>>,
}

impl Room {
    /// An empty room.
    pub fn new(capacity: Option<u32>) -> Room {
        Room { members: IndexMap::new(), capacity, observers: None }
    }

    /// Whether the registry may drop this room.
    pub fn is_unused(&self) -> bool {
        self.members.is_empty() && self.observers.as_ref().is_none_or(|tx| tx.receiver_count() == 0)
    }

    /// The members as the protocol lists them, oldest first.
    pub fn peer_refs(&self) -> Vec<PeerRef<'_>> {
        self.members
            .iter()
            .map(|(id, m)| PeerRef { id: id.as_str(), user: m.user.as_deref(), meta: m.meta.as_deref() })
            .collect()
    }

    /// Sends a membership event to the observers, if there are any.
    pub fn notify_observers(&self, event: &Utf8Bytes) {
        if let Some(observers) = &self.observers {
            // An error only means every observer has gone; the last one to go
            // clears `observers` itself.
            let _ = observers.send(event.clone());
        }
    }

    /// A new receiver of membership events.
    pub fn subscribe(&mut self) -> broadcast::Receiver<Utf8Bytes> {
        match &self.observers {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(OBSERVER_BACKLOG);
                self.observers = Some(tx);
                rx
            }
        }
    }
}

/// Checks a room or channel name: 1 to `max_len` bytes, no control characters.
pub fn validate_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("room name must not be empty".into());
    }
    if name.len() > max_len {
        return Err(format!("room name must be at most {max_len} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("room name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(validate_name("lobby", 64).is_ok());
        assert!(validate_name("café ☕", 64).is_ok());
        assert!(validate_name("", 64).is_err());
        assert!(validate_name("a\nb", 64).is_err());
        assert!(validate_name("abcde", 4).is_err());
    }
}
