//! PeerJS (the `peerjs` 1.x client; the original server is peerjs-server):
//! JSON text frames `{"type", "src", "dst", "payload"}` with upper-case types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The messages the server passes from one peer to another; anything else a
/// client sends but `HEARTBEAT` is ignored, as by the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connection offer.
    Offer,
    /// Its answer.
    Answer,
    /// An ICE candidate.
    Candidate,
    /// The sender closed its connection to the destination.
    Leave,
    /// The destination could not be reached (sent by the server, relayable).
    Expire,
    /// Keeps the connection alive; not relayed.
    Heartbeat,
}

impl Kind {
    /// The wire `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Offer => "OFFER",
            Kind::Answer => "ANSWER",
            Kind::Candidate => "CANDIDATE",
            Kind::Leave => "LEAVE",
            Kind::Expire => "EXPIRE",
            Kind::Heartbeat => "HEARTBEAT",
        }
    }

    fn from_wire(kind: &str) -> Option<Kind> {
        [Kind::Offer, Kind::Answer, Kind::Candidate, Kind::Leave, Kind::Expire, Kind::Heartbeat]
            .into_iter()
            .find(|k| k.as_str() == kind)
    }

    /// Whether a message of this kind to an id that is not connected waits for
    /// it (`LEAVE` and `EXPIRE` are dropped instead, as by the original).
    pub fn waits_for_destination(self) -> bool {
        matches!(self, Kind::Offer | Kind::Answer | Kind::Candidate)
    }
}

/// A client frame the server acts on.
#[derive(Debug)]
pub struct Message<'a> {
    /// Its type.
    pub kind: Kind,
    /// The destination's id.
    pub dst: Option<Cow<'a, str>>,
    /// What to pass on, untouched.
    pub payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    dst: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// Reads a client frame; `None` for malformed frames and unknown types.
pub fn decode(frame: &str) -> Option<Message<'_>> {
    let envelope: Envelope = serde_json::from_str(frame).ok()?;
    Some(Message { kind: Kind::from_wire(&envelope.kind)?, dst: envelope.dst, payload: envelope.payload })
}

#[derive(Serialize)]
struct Relayed<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    src: &'a str,
    dst: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
}

/// A message as the destination receives it: rebuilt, with `src` the real sender.
pub fn relayed(kind: Kind, src: &str, dst: &str, payload: Option<&RawValue>) -> String {
    serde_json::to_string(&Relayed { kind: kind.as_str(), src, dst, payload }).unwrap_or_default()
}

/// The first frame of a connection whose id is its own now.
pub const OPEN: &str = r#"{"type":"OPEN"}"#;

/// The texts of the original's refusals (peerjs-server `src/enums.ts`).
pub mod texts {
    /// A live id with another token.
    pub const ID_TAKEN: &str = "ID is taken";
    /// A key other than the server's.
    pub const INVALID_KEY: &str = "Invalid key provided";
    /// A missing `id`, `token` or `key`.
    pub const INVALID_WS_PARAMETERS: &str = "No id, token, or key supplied to websocket server";
    /// An id outside the client's own pattern (Switchboard only).
    pub const INVALID_ID: &str = "Invalid id: ids are letters and digits, single spaces, '_' or '-' between them";
}

#[derive(Serialize)]
struct Notice<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: Msg<'a>,
}

#[derive(Serialize)]
struct Msg<'a> {
    msg: &'a str,
}

/// `{"type":"ERROR","payload":{"msg":...}}`.
pub fn error(msg: &str) -> String {
    serde_json::to_string(&Notice { kind: "ERROR", payload: Msg { msg } }).unwrap_or_default()
}

/// `{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`.
pub fn id_taken() -> String {
    serde_json::to_string(&Notice { kind: "ID-TAKEN", payload: Msg { msg: texts::ID_TAKEN } }).unwrap_or_default()
}

/// The notice a sender gets when `dst` never came: `src` is the missing id.
pub fn expire(missing: &str, sender: &str) -> String {
    relayed(Kind::Expire, missing, sender, None)
}

/// Whether an id is one the client itself would accept (peerjs 1.5
/// `util.validateId`): letters and digits, with single spaces, `_` or `-`
/// between them.
pub fn valid_id(id: &str) -> bool {
    let mut after_separator = true;
    for c in id.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => after_separator = false,
            ' ' | '_' | '-' if !after_separator => after_separator = true,
            _ => return false,
        }
    }
    !id.is_empty() && !after_separator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_frames_have_the_original_shape_and_order() {
        let payload: &RawValue = serde_json::from_str(r#"{"sdp":{"type":"offer"},"connectionId":"dc_1"}"#).unwrap();
        let message = decode(r#"{"type":"OFFER","src":"forged","dst":"b","payload":{"sdp":{"type":"offer"},"connectionId":"dc_1"},"x":1}"#).unwrap();
        assert_eq!(message.kind, Kind::Offer);
        assert_eq!(message.dst.as_deref(), Some("b"));
        assert_eq!(
            relayed(message.kind, "a", "b", Some(payload)),
            r#"{"type":"OFFER","src":"a","dst":"b","payload":{"sdp":{"type":"offer"},"connectionId":"dc_1"}}"#
        );
        assert_eq!(expire("ghost", "a"), r#"{"type":"EXPIRE","src":"ghost","dst":"a"}"#);
        assert_eq!(id_taken(), r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#);
        assert!(decode(r#"{"type":"NOT-A-TYPE"}"#).is_none());
        assert!(decode("nope{").is_none());
    }

    #[test]
    fn ids_follow_the_client_s_pattern() {
        for good in ["a", "Ab9", "a b", "a_b-c d", "6f1c1d5e-8a40-4d5b-9c66-0c0ffee00000"] {
            assert!(valid_id(good), "{good:?}");
        }
        for bad in ["", "bad!id", "-lead", "trail_", "two  spaces", "a..b", "<script>", "a-_b", "é"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
