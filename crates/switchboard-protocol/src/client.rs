//! Messages a client sends, and the decoder the server runs on every frame.
//!
//! [`decode`] makes one validating pass over the frame and borrows every field it
//! needs from it. Fields the server does not route on (the SDP body of an `offer`,
//! say) are checked for JSON validity and otherwise left alone, so a relay can pass
//! the original bytes on.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::relay::RelayKind;

/// The longest request id a client may attach, in bytes of its JSON form.
pub const MAX_RID_LEN: usize = 64;

/// One decoded client frame: the message and the optional request id to echo.
#[derive(Debug)]
pub struct Request<'a> {
    /// The client's request id (a string or an integer), echoed in the reply.
    pub rid: Option<&'a RawValue>,
    /// What the client asked for.
    pub message: ClientMessage<'a>,
}

/// What a client can ask the signaling server to do.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// Enter a room (the default room when `room` is absent).
    Join {
        room: Option<Cow<'a, str>>,
        /// A small JSON object other peers see, such as a display name.
        meta: Option<&'a RawValue>,
        /// Capacity for the room if this join creates it.
        capacity: Option<u32>,
    },
    /// Leave one room, or every room when `room` is absent.
    Leave { room: Option<Cow<'a, str>> },
    /// Forward the frame to one peer (`sdp`, `offer`, `ice-candidate`, ...).
    Relay(Relay<'a>),
    /// Send `data` to every other peer in a room.
    Broadcast { room: Option<Cow<'a, str>>, data: &'a RawValue },
    /// Application-level keepalive; answered with `pong`.
    Ping,
    /// Presents a token: the first message, when the server waits for one.
    Auth { token: Cow<'a, str> },
}

/// The routing part of a relay frame. The body stays in the original bytes.
#[derive(Debug)]
pub struct Relay<'a> {
    /// Which relay message this is.
    pub kind: RelayKind,
    /// The peer id to deliver to.
    pub target: Cow<'a, str>,
    /// Whether the client wrote its own `from`, which the server must overwrite.
    pub has_from: bool,
}

impl ClientMessage<'_> {
    /// The wire `type`, for logs and metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Relay(relay) => relay.kind.as_str(),
            ClientMessage::Broadcast { .. } => "broadcast",
            ClientMessage::Ping => "ping",
            ClientMessage::Auth { .. } => "auth",
        }
    }
}

/// A frame the server refuses, with what to tell the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError<'a> {
    /// The stable code.
    pub code: ErrorCode,
    /// Text for humans.
    pub message: String,
    /// The request id, if the frame got far enough to have a readable one.
    pub rid: Option<&'a RawValue>,
}

/// Every field the server looks at, borrowed from the frame. Other fields are
/// validated and skipped.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    rid: Option<&'a RawValue>,
    #[serde(borrow)]
    target: Option<&'a RawValue>,
    /// Present with any value, `null` included: `Option` would read `"from":null`
    /// as absent, and the splice would then leave that `null` behind the stamped
    /// `from`, where a last-key-wins parser would see it.
    #[serde(default, deserialize_with = "present")]
    from: bool,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    capacity: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
}

/// Whether a field is there at all, whatever its value (for `from`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// Decodes one text frame from a client.
///
/// ```
/// use switchboard_protocol::{decode, ClientMessage};
/// let request = decode(r#"{"type":"join","room":"lobby","rid":7}"#).unwrap();
/// assert_eq!(request.rid.map(|r| r.get()), Some("7"));
/// assert!(matches!(request.message, ClientMessage::Join { .. }));
/// ```
pub fn decode<'a>(frame: &'a str) -> Result<Request<'a>, DecodeError<'a>> {
    let envelope: Envelope<'a> = serde_json::from_str(frame).map_err(|err| DecodeError {
        code: ErrorCode::MalformedJson,
        message: malformed_message(&err),
        rid: None,
    })?;
    let rid = envelope.rid;
    let fail = |code, message: String| DecodeError { code, message, rid };

    if let Some(rid) = rid {
        check_rid(rid).map_err(|message| fail(ErrorCode::InvalidField, message))?;
    }
    let kind = envelope.kind.ok_or_else(|| fail(ErrorCode::MissingField, "field `type` is required".into()))?;
    let kind = string(kind).ok_or_else(|| fail(ErrorCode::InvalidField, "field `type` must be a string".into()))?;

    let optional_string = |raw: Option<&'a RawValue>, name: &str| -> Result<Option<Cow<'a, str>>, DecodeError<'a>> {
        match raw {
            None => Ok(None),
            Some(raw) => string(raw)
                .map(Some)
                .ok_or_else(|| fail(ErrorCode::InvalidField, format!("field `{name}` must be a string"))),
        }
    };

    let message = match kind.as_ref() {
        "join" => {
            let meta = match envelope.meta {
                Some(meta) if !meta.get().starts_with('{') => {
                    return Err(fail(ErrorCode::InvalidField, "field `meta` must be a JSON object".into()))
                }
                meta => meta,
            };
            let capacity = match envelope.capacity {
                None => None,
                Some(raw) => match raw.get().parse::<u32>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(fail(ErrorCode::InvalidField, "field `capacity` must be a positive integer".into()))
                    }
                },
            };
            ClientMessage::Join { room: optional_string(envelope.room, "room")?, meta, capacity }
        }
        "leave" => ClientMessage::Leave { room: optional_string(envelope.room, "room")? },
        "broadcast" => {
            let data = envelope.data.ok_or_else(|| fail(ErrorCode::MissingField, "field `data` is required".into()))?;
            ClientMessage::Broadcast { room: optional_string(envelope.room, "room")?, data }
        }
        "ping" => ClientMessage::Ping,
        "auth" => {
            let token = optional_string(envelope.token, "token")?
                .ok_or_else(|| fail(ErrorCode::MissingField, "field `token` is required".into()))?;
            ClientMessage::Auth { token }
        }
        other => match RelayKind::from_wire(other) {
            Some(kind) => {
                let target = optional_string(envelope.target, "target")?
                    .ok_or_else(|| fail(ErrorCode::MissingField, "field `target` is required".into()))?;
                ClientMessage::Relay(Relay { kind, target, has_from: envelope.from })
            }
            None => {
                return Err(fail(ErrorCode::UnknownType, format!("unknown message type `{}`", clip(other, 64))));
            }
        },
    };
    Ok(Request { rid, message })
}

/// The request id of a frame that will not be processed (e.g. rate-limited),
/// so the refusal can still be matched to its request. `None` if the frame is
/// not a JSON object or its `rid` is not a valid one.
pub fn peek_rid(frame: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct RidOnly<'a> {
        #[serde(borrow)]
        rid: Option<&'a RawValue>,
    }
    let rid = serde_json::from_str::<RidOnly<'_>>(frame).ok()?.rid?;
    check_rid(rid).ok().map(|()| rid)
}

/// A JSON string field, borrowed when it has no escapes.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

fn check_rid(rid: &RawValue) -> Result<(), String> {
    let text = rid.get();
    let is_string = text.starts_with('"');
    let is_integer = text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok();
    if !(is_string || is_integer) {
        return Err("field `rid` must be a string or an integer".into());
    }
    if text.len() > MAX_RID_LEN {
        return Err(format!("field `rid` must be at most {MAX_RID_LEN} bytes"));
    }
    Ok(())
}

fn malformed_message(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data => format!("a message must be a JSON object with a string `type`: {err}"),
        _ => format!("not valid JSON: {err}"),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, for echoing
/// client-supplied strings into error messages.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> ErrorCode {
        decode(frame).expect_err(frame).code
    }

    #[test]
    fn seed_messages_decode() {
        assert!(matches!(decode(r#"{"type":"join"}"#).unwrap().message, ClientMessage::Join { room: None, .. }));
        let sdp = decode(r#"{"type":"sdp","target":"abc","sdp":{"type":"offer","sdp":"v=0"}}"#).unwrap();
        match sdp.message {
            ClientMessage::Relay(relay) => {
                assert_eq!(relay.kind, RelayKind::Sdp);
                assert_eq!(relay.target, "abc");
                assert!(!relay.has_from);
            }
            other => panic!("expected relay, got {other:?}"),
        }
        let ice = decode(r#"{"type":"ice-candidate","target":"abc","candidate":{"candidate":"x"}}"#).unwrap();
        assert_eq!(ice.message.type_name(), "ice-candidate");
    }

    #[test]
    fn error_table() {
        let cases: &[(&str, ErrorCode)] = &[
            ("", ErrorCode::MalformedJson),
            ("{", ErrorCode::MalformedJson),
            ("not json", ErrorCode::MalformedJson),
            ("[1,2]", ErrorCode::MalformedJson),
            ("\"join\"", ErrorCode::MalformedJson),
            (r#"{"type":"join","type":"leave"}"#, ErrorCode::MalformedJson),
            (r#"{"type":"sdp","target":"a","x":tru}"#, ErrorCode::MalformedJson),
            ("{}", ErrorCode::MissingField),
            (r#"{"type":null}"#, ErrorCode::MissingField),
            (r#"{"type":5}"#, ErrorCode::InvalidField),
            (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
            (r#"{"type":"sdp"}"#, ErrorCode::MissingField),
            (r#"{"type":"offer","target":7}"#, ErrorCode::InvalidField),
            (r#"{"type":"join","room":["a"]}"#, ErrorCode::InvalidField),
            (r#"{"type":"join","meta":"bob"}"#, ErrorCode::InvalidField),
            (r#"{"type":"join","capacity":0}"#, ErrorCode::InvalidField),
            (r#"{"type":"join","capacity":2.5}"#, ErrorCode::InvalidField),
            (r#"{"type":"broadcast"}"#, ErrorCode::MissingField),
            (r#"{"type":"ping","rid":{"a":1}}"#, ErrorCode::InvalidField),
            (r#"{"type":"ping","rid":1.5}"#, ErrorCode::InvalidField),
            (r#"{"type":"auth"}"#, ErrorCode::MissingField),
            (r#"{"type":"auth","token":1}"#, ErrorCode::InvalidField),
        ];
        for (frame, expected) in cases {
            assert_eq!(code(frame), *expected, "frame {frame:?}");
        }
    }

    #[test]
    fn rid_is_echoed_on_errors_after_the_envelope_parses() {
        let err = decode(r#"{"type":"dance","rid":"r1"}"#).unwrap_err();
        assert_eq!(err.rid.map(RawValue::get), Some("\"r1\""));
        assert!(decode("{bad").unwrap_err().rid.is_none());
    }

    #[test]
    fn peek_rid_reads_only_a_valid_rid() {
        assert_eq!(peek_rid(r#"{"type":"whatever","rid":7,"x":[1]}"#).map(RawValue::get), Some("7"));
        assert!(peek_rid(r#"{"rid":{"no":1}}"#).is_none());
        assert!(peek_rid("not json").is_none());
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let request = decode(r#"{"type":"join","room":"caf\u00e9"}"#).unwrap();
        match request.message {
            ClientMessage::Join { room: Some(room), .. } => assert_eq!(room, "café"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forged_from_is_detected() {
        match decode(r#"{"type":"signal","target":"a","from":"b"}"#).unwrap().message {
            ClientMessage::Relay(relay) => assert!(relay.has_from),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_spelling_of_from_is_detected() {
        // `null` (found by the `decode` fuzz target), escaped key names, any value.
        for frame in [
            r#"{"type":"signal","target":"a","from":null}"#,
            r#"{"type":"signal","target":"a","from" :  null }"#,
            r#"{"type":"signal","target":"a","fr\u006fm":"b"}"#,
            r#"{"type":"signal","target":"a","\u0066rom":{"x":1}}"#,
            r#"{"type":"signal","target":"a","from":[]}"#,
        ] {
            match decode(frame).unwrap().message {
                ClientMessage::Relay(relay) => assert!(relay.has_from, "{frame}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}
