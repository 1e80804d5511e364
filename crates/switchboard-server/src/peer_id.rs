//! Peer ids: 128 random bits, written as 22 URL-safe base64 characters.
//!
//! Ids are the only thing a peer needs to address another, so they must not be
//! guessable: they come from the operating system's CSPRNG. They live inline
//! (no heap), since every room membership and routing table entry holds one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Length of a peer id in characters.
pub const PEER_ID_LEN: usize = 22;

/// A peer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// A fresh random id.
    pub fn random() -> PeerId {
        let mut bits = [0u8; 16];
        getrandom::fill(&mut bits).expect("the operating system's random source is available");
        let mut id = [0u8; PEER_ID_LEN];
        let written = URL_SAFE_NO_PAD.encode_slice(bits, &mut id).expect("16 bytes encode to 22 characters");
        debug_assert_eq!(written, PEER_ID_LEN);
        PeerId(id)
    }

    /// Reads an id a client sent; `None` if it cannot be one.
    pub fn parse(text: &str) -> Option<PeerId> {
        let bytes: [u8; PEER_ID_LEN] = text.as_bytes().try_into().ok()?;
        bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_').then_some(PeerId(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from base64url output or checked ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerId({})", self.as_str())
    }
}

/// A node's id: the same shape as a peer id, but never one, so the two cannot
/// be mixed up in routing tables.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(PeerId);

impl NodeId {
    /// A fresh random id, one per server process.
    pub fn random() -> NodeId {
        NodeId(PeerId::random())
    }

    /// Reads a node id from another node's message.
    pub fn parse(text: &str) -> Option<NodeId> {
        PeerId::parse(text).map(NodeId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_ids_are_url_safe_distinct_and_parse_back() {
        let ids: HashSet<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            assert_eq!(id.as_str().len(), PEER_ID_LEN);
            assert_eq!(PeerId::parse(id.as_str()), Some(id));
        }
    }

    #[test]
    fn parse_refuses_what_cannot_be_an_id() {
        for bad in ["", "short", "0123456789012345678901x", "012345678901234567890/", "ééééééééééé"] {
            assert_eq!(PeerId::parse(bad), None, "{bad:?}");
        }
    }
}
