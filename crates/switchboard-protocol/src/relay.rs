//! Peer-to-peer relay messages.
//!
//! A relay message is delivered to its `target` with every field the sender wrote
//! kept, plus `"from"` set by the server. The server never re-serialises a relay
//! body it does not have to: [`stamp_from`] splices the sender's id into the
//! original bytes.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Message types that the server forwards to a `target` peer unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    /// The seeds' session description message.
    Sdp,
    /// The seeds' trickle-ICE message.
    IceCandidate,
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// An ICE candidate.
    Candidate,
    /// Anything else an application wants to send to one peer.
    Signal,
}

impl RelayKind {
    /// Every relay kind.
    pub const ALL: [RelayKind; 6] = [
        RelayKind::Sdp,
        RelayKind::IceCandidate,
        RelayKind::Offer,
        RelayKind::Answer,
        RelayKind::Candidate,
        RelayKind::Signal,
    ];

    /// The wire `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RelayKind::Sdp => "sdp",
            RelayKind::IceCandidate => "ice-candidate",
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::Candidate => "candidate",
            RelayKind::Signal => "signal",
        }
    }

    /// Looks up a wire `type`.
    pub fn from_wire(kind: &str) -> Option<RelayKind> {
        RelayKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// Returns a decoded relay `frame` with `from` set to `sender`, whatever the
/// client wrote: the fast splice when it wrote no `from` (`has_from` comes from
/// [`crate::client::Relay::has_from`], which counts a `from` of any value,
/// `null` included, under any spelling of its key), the rewrite otherwise.
pub fn stamp(frame: &str, has_from: bool, sender: &str) -> Result<String, serde_json::Error> {
    match has_from {
        false => Ok(stamp_from(frame, sender)),
        true => replace_from(frame, sender),
    }
}

/// Returns `frame` with `"from":"<sender>"` as its first field.
///
/// `frame` must be a JSON object that has no `from` key (the decoder reports
/// whether it has one: see [`crate::client::Relay::has_from`]). Only the leading
/// `{` is touched; the rest of the bytes are copied as they are.
pub fn stamp_from(frame: &str, sender: &str) -> String {
    let body = frame.trim_start();
    // The decoder has proven `frame` is a non-empty JSON object (it has a `type`),
    // so it starts with `{` and something follows it.
    let rest = body.strip_prefix('{').unwrap_or(body);
    let mut out = String::with_capacity(frame.len() + sender.len() + 10);
    out.push_str("{\"from\":");
    push_json_string(&mut out, sender);
    out.push(',');
    out.push_str(rest);
    out
}

/// Returns `frame` with its `from` field replaced by the sender's id.
///
/// The slow path, taken only when a client wrote its own `from`. The object is
/// split into its members with every value kept as the exact text the client
/// sent (numbers are never reformatted), every `from` member is dropped, and
/// the rest is written back after the server's `from`.
pub fn replace_from(frame: &str, sender: &str) -> Result<String, serde_json::Error> {
    let Members(members) = serde_json::from_str(frame)?;
    let mut out = String::with_capacity(frame.len() + sender.len() + 10);
    out.push_str("{\"from\":");
    push_json_string(&mut out, sender);
    for (key, value) in members.iter().filter(|(key, _)| key != "from") {
        out.push(',');
        push_json_string(&mut out, key);
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

/// An object's members in order, values as raw JSON text borrowed from the frame.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn push_json_string(out: &mut String, value: &str) {
    #[derive(Serialize)]
    #[serde(transparent)]
    struct Str<'a>(&'a str);
    // Peer ids are URL-safe, so this is a plain quote; serde keeps it correct anyway.
    out.push_str(&serde_json::to_string(&Str(value)).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn stamp_keeps_every_field_and_adds_from() {
        let frame = r#"{"type":"sdp","target":"b","sdp":{"type":"offer","sdp":"v=0\r\n"}}"#;
        let out: Value = serde_json::from_str(&stamp_from(frame, "alice")).unwrap();
        assert_eq!(out, json!({"type":"sdp","target":"b","from":"alice","sdp":{"type":"offer","sdp":"v=0\r\n"}}));
    }

    #[test]
    fn stamp_tolerates_leading_whitespace() {
        let out: Value = serde_json::from_str(&stamp_from("  \n{\"type\":\"signal\"}", "x")).unwrap();
        assert_eq!(out, json!({"type":"signal","from":"x"}));
    }

    #[test]
    fn replace_overwrites_a_forged_from() {
        let frame = r#"{"type":"offer","target":"b","from":"mallory"}"#;
        let out: Value = serde_json::from_str(&replace_from(frame, "alice").unwrap()).unwrap();
        assert_eq!(out["from"], "alice");
        assert_eq!(out["target"], "b");
    }

    #[test]
    fn replace_keeps_number_text_exactly() {
        // Found by the `decode` fuzz target: re-serialising through `Value` rewrote numbers.
        let frame = r#"{"type":"offer","target":"x","from":"y","a":[166666666666666666666666666666,1e2,1.50],"k\u00e9":{"from":1}}"#;
        let out = replace_from(frame, "alice").unwrap();
        assert_eq!(
            out,
            r#"{"from":"alice","type":"offer","target":"x","a":[166666666666666666666666666666,1e2,1.50],"ké":{"from":1}}"#
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for kind in RelayKind::ALL {
            assert_eq!(RelayKind::from_wire(kind.as_str()), Some(kind));
        }
        assert_eq!(RelayKind::from_wire("join"), None);
    }
}
