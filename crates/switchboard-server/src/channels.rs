//! The channels of `/ws/broadcast`: named groups where every frame goes to every
//! other member. No protocol, no ids, just fan-out, as in the seeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Message;
use dashmap::DashMap;
use indexmap::IndexMap;

use crate::outbox::Outbox;

/// Identifies one connection within the channels.
pub type ConnectionId = u64;

/// Every broadcast channel and its members.
#[derive(Default)]
pub struct Channels {
    channels: DashMap<Arc<str>, IndexMap<ConnectionId, Arc<Outbox>>>,
    next_id: AtomicU64,
}

impl Channels {
    /// Adds a connection to a channel, returning its id there.
    pub fn subscribe(&self, channel: &Arc<str>, outbox: Arc<Outbox>) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.channels.entry(channel.clone()).or_default().insert(id, outbox);
        id
    }

    /// Removes a connection; drops the channel when it was the last member.
    pub fn unsubscribe(&self, channel: &str, id: ConnectionId) {
        let empty = match self.channels.get_mut(channel) {
            Some(mut members) => {
                members.shift_remove(&id);
                members.is_empty()
            }
            None => false,
        };
        if empty {
            self.channels.remove_if(channel, |_, members| members.is_empty());
        }
    }

    /// Queues `frame` for every member of `channel` except `from`; returns how many.
    pub fn publish(&self, channel: &str, from: ConnectionId, frame: Message) -> usize {
        let Some(members) = self.channels.get(channel) else {
            return 0;
        };
        members.iter().filter(|(id, _)| **id != from).filter(|(_, outbox)| outbox.push(frame.clone()).is_ok()).count()
    }
}
