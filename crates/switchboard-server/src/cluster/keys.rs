//! Names of every Redis key and channel a node uses.
//!
//! Everything about one room lives under one hash tag (`{…}`), so the room's hash
//! and its event channel fall in one Redis Cluster slot: the Lua scripts that
//! change membership can publish the matching event atomically, which keeps
//! every node's view of a room in one order. The tag is a hash of the room name,
//! not the name itself, because a name may contain braces.

use sha1::{Digest, Sha1};

use crate::peer_id::{NodeId, PeerId};

/// Length of the hex room tag.
const TAG_LEN: usize = 16;

/// Key and channel names under one deployment prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a channel a node is subscribed to carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    /// A room's membership events and broadcasts.
    Room(&'a str),
    /// Relays addressed to peers on this node.
    Inbox,
}

impl Keys {
    /// Names under `prefix` (checked by the settings to have no braces).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    /// The hash of a room: one field per member (its record), plus the
    /// bookkeeping fields `\0seq` (the room's event counter) and `\0cap` (its
    /// capacity). A peer id never starts with a NUL byte, so no member collides.
    pub fn room(&self, room: &str) -> String {
        format!("{}:{{{}}}:room:{room}", self.prefix, tag(room))
    }

    /// The channel of a room's events.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:{{{}}}:r:{room}", self.prefix, tag(room))
    }

    /// The channel of relays for peers on `node`.
    pub fn inbox(&self, node: NodeId) -> String {
        format!("{}:{{n{node}}}:inbox", self.prefix)
    }

    /// The set of every registered node.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A node's heartbeat key; it expires when the node stops beating.
    pub fn alive(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }

    /// The set of rooms a node has (or recently had) peers in: where to look
    /// for its peers if it dies.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:node:{node}:rooms", self.prefix)
    }

    /// What a node shows the server API (JSON), refreshed on each heartbeat.
    pub fn node_info(&self, node: &str) -> String {
        format!("{}:node:{node}:info", self.prefix)
    }

    /// The lock a survivor takes while it removes a dead node's peers.
    pub fn reaper(&self, node: &str) -> String {
        format!("{}:node:{node}:reaper", self.prefix)
    }

    /// A resumable session's hash: `token`, `owner` (its node, or "" while
    /// parked), `identity`, `rooms`, and while parked its queue's limits and
    /// size (`maxm`, `maxb`, `bytes`), its deadline (`until`) and whether
    /// something did not fit (`over`). Under the peer's own tag, with its queue.
    pub fn session(&self, peer: PeerId) -> String {
        format!("{}:{{s{peer}}}:session", self.prefix)
    }

    /// A parked session's queue: the frames sent to it while it is away, in order.
    pub fn queue(&self, peer: PeerId) -> String {
        format!("{}:{{s{peer}}}:queue", self.prefix)
    }

    /// Which peer a resume token resumes.
    pub fn resume(&self, token: PeerId) -> String {
        format!("{}:resume:{token}", self.prefix)
    }

    /// The set of resumable sessions a node holds live: dropped if it dies.
    pub fn node_sessions(&self, node: &str) -> String {
        format!("{}:node:{node}:sessions", self.prefix)
    }

    /// Parked sessions by deadline (ms since the epoch), for the survivors to
    /// expire whichever node parked them.
    pub fn parked(&self) -> String {
        format!("{}:parked", self.prefix)
    }

    /// What a channel name this node subscribed to stands for.
    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        let rest = channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?;
        if rest.starts_with('n') {
            return rest.ends_with("}:inbox").then_some(Channel::Inbox);
        }
        let room = rest.get(TAG_LEN..)?.strip_prefix("}:r:")?;
        Some(Channel::Room(room))
    }
}

fn tag(room: &str) -> String {
    let digest = Sha1::digest(room.as_bytes());
    digest[..TAG_LEN / 2].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_back_and_room_keys_share_a_slot_tag() {
        let keys = Keys::new("sb");
        for room in ["lobby", "a:b", "{x}", "}r:{", "café"] {
            let channel = keys.room_channel(room);
            assert_eq!(keys.parse_channel(&channel), Some(Channel::Room(room)), "{channel}");
            let key = keys.room(room);
            let tag_of = |s: &str| s[s.find('{').unwrap()..=s.find('}').unwrap()].to_owned();
            assert_eq!(tag_of(&key), tag_of(&channel));
        }
        let node = NodeId::random();
        assert_eq!(keys.parse_channel(&keys.inbox(node)), Some(Channel::Inbox));
        assert_eq!(keys.parse_channel("other:{n1}:inbox"), None);
    }
}
