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

    /// The id written for these 128 bits (which callers must make unguessable
    /// or derive from a public name on purpose).
    pub fn from_bits(bits: [u8; 16]) -> PeerId {
        let mut id = [0u8; PEER_ID_LEN];
        let written = URL_SAFE_NO_PAD.encode_slice(bits, &mut id).expect("16 bytes encode to 22 characters");
        debug_assert_eq!(written, PEER_ID_LEN);
        PeerId(id)
    }

    /// A fresh random id that is also a version 4 UUID, for dialects whose
    /// clients expect one (matchbox): 122 random bits.
    pub fn random_uuid() -> PeerId {
        let mut bits = [0u8; 16];
        getrandom::fill(&mut bits).expect("the operating system's random source is available");
        PeerId::from_bits(uuid::Builder::from_random_bytes(bits).into_uuid().into_bytes())
    }

    /// The id of a peer a client names by UUID (any version).
    pub fn from_uuid(text: &str) -> Option<PeerId> {
        uuid::Uuid::try_parse(text).ok().map(|uuid| PeerId::from_bits(uuid.into_bytes()))
    }

    /// The id as a hyphenated, lower-case UUID.
    pub fn to_uuid(&self) -> String {
        let mut bits = [0u8; 16];
        // A peer id is always 22 base64url characters: 16 bytes.
        let _ = URL_SAFE_NO_PAD.decode_slice(self.0, &mut bits);
        uuid::Uuid::from_bytes(bits).hyphenated().to_string()
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

    /// Where a parked session's room records point while its peer is away and
    /// no node holds it (`broker::parking`): no node has this id, since node
    /// ids are random, so no node's clean-up ever mistakes the records for its own.
    pub fn parked() -> NodeId {
        NodeId(PeerId::from_bits([0; 16]))
    }

    /// Whether this is [`NodeId::parked`].
    pub fn is_parked(&self) -> bool {
        *self == NodeId::parked()
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
    fn uuid_ids_round_trip_and_are_version_4() {
        let id = PeerId::random_uuid();
        let text = id.to_uuid();
        let uuid = uuid::Uuid::parse_str(&text).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(PeerId::from_uuid(&text), Some(id));
        assert_eq!(PeerId::parse(id.as_str()), Some(id));
        assert_eq!(PeerId::from_uuid("not-a-uuid"), None);
    }

    #[test]
    fn parse_refuses_what_cannot_be_an_id() {
        for bad in ["", "short", "0123456789012345678901x", "012345678901234567890/", "ééééééééééé"] {
            assert_eq!(PeerId::parse(bad), None, "{bad:?}");
        }
    }
}
