//! matchbox (`matchbox_server` / `matchbox_socket` 0.14): JSON text frames,
//! serde's externally tagged enums. Peer ids are UUIDs in their hyphenated form.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What the server sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerEvent<'a> {
    /// The first frame: the connection's own id.
    IdAssigned(&'a str),
    /// A peer joined the room (sent to those already there).
    NewPeer(&'a str),
    /// A peer left the room.
    PeerLeft(&'a str),
    /// A signal from another peer.
    Signal {
        /// Who sent it.
        sender: &'a str,
        /// What it sent, untouched.
        #[serde(borrow)]
        data: &'a RawValue,
    },
}

/// What a client sends.
#[derive(Debug, Deserialize)]
pub enum PeerRequest<'a> {
    /// A signal for one peer of the room.
    Signal {
        /// Its id.
        receiver: &'a str,
        /// Anything; relayed as it is.
        #[serde(borrow)]
        data: &'a RawValue,
    },
    /// Sent every few seconds to keep proxies from closing the socket.
    KeepAlive,
}

impl PeerEvent<'_> {
    /// The frame's JSON text.
    pub fn encode(&self) -> String {
        // Serialising borrowed strings and raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads a client frame; `None` for anything else (matchbox ignores it).
pub fn decode(frame: &str) -> Option<PeerRequest<'_>> {
    serde_json::from_str(frame).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_ones_matchbox_socket_speaks() {
        assert_eq!(PeerEvent::IdAssigned("x").encode(), r#"{"IdAssigned":"x"}"#);
        assert_eq!(PeerEvent::NewPeer("x").encode(), r#"{"NewPeer":"x"}"#);
        assert_eq!(PeerEvent::PeerLeft("x").encode(), r#"{"PeerLeft":"x"}"#);
        let data: &RawValue = serde_json::from_str(r#"{"Offer":"v=0"}"#).unwrap();
        assert_eq!(
            PeerEvent::Signal { sender: "s", data }.encode(),
            r#"{"Signal":{"sender":"s","data":{"Offer":"v=0"}}}"#
        );
        match decode(r#"{"Signal":{"receiver":"r","data":[1, 2]}}"#) {
            Some(PeerRequest::Signal { receiver: "r", data }) => assert_eq!(data.get(), "[1, 2]"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(r#""KeepAlive""#), Some(PeerRequest::KeepAlive)));
        assert!(decode("{nope").is_none());
        assert!(decode(r#"{"Nope":1}"#).is_none());
    }
}
