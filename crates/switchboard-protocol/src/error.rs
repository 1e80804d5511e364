//! Stable error codes.
//!
//! A code never changes meaning once published: clients switch on it. The human
//! text in `message` may change at any time.

use serde::{Deserialize, Serialize};

/// Why the server refused a client message. Serialised as kebab-case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object.
    MalformedJson,
    /// The `type` field names no message this server knows.
    UnknownType,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field has the wrong type, length or shape.
    InvalidField,
    /// The relay `target` is not a connected peer.
    UnknownTarget,
    /// The relay `target` is connected but shares no room with the sender.
    NoSharedRoom,
    /// The action needs room membership the sender does not have.
    NotInRoom,
    /// `join` for a room the sender is already in.
    AlreadyJoined,
    /// The room has reached its capacity.
    RoomFull,
    /// The sender is already in as many rooms as the server allows.
    TooManyRooms,
    /// The frame is larger than the server's message size limit.
    MessageTooLarge,
    /// A binary frame arrived on an endpoint that speaks JSON text.
    BinaryNotSupported,
    /// The target could not take the message (its send queue is full).
    DeliveryFailed,
    /// No valid token: the connection is closed (1008) after this error.
    Unauthorized,
    /// The token does not allow this (e.g. joining a room it does not list).
    Forbidden,
    /// The sender is over its message or byte rate; the message was dropped.
    RateLimited,
    /// A message that is valid, but not now (e.g. `auth` after `welcome`).
    UnexpectedMessage,
    /// The message needs another node, and the broker that links the nodes
    /// (Redis) is unreachable; nothing was delivered. Retry later.
    Unavailable,
    /// The server API named a room that has no members.
    UnknownRoom,
}

impl ErrorCode {
    /// Every code, for documentation tests and metrics pre-registration.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::MalformedJson,
        ErrorCode::UnknownType,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::UnknownTarget,
        ErrorCode::NoSharedRoom,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyJoined,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::MessageTooLarge,
        ErrorCode::BinaryNotSupported,
        ErrorCode::DeliveryFailed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::UnexpectedMessage,
        ErrorCode::Unavailable,
        ErrorCode::UnknownRoom,
    ];

    /// The wire form, e.g. `"room-full"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed-json",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::MissingField => "missing-field",
            ErrorCode::InvalidField => "invalid-field",
            ErrorCode::UnknownTarget => "unknown-target",
            ErrorCode::NoSharedRoom => "no-shared-room",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::MessageTooLarge => "message-too-large",
            ErrorCode::BinaryNotSupported => "binary-not-supported",
            ErrorCode::DeliveryFailed => "delivery-failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::UnexpectedMessage => "unexpected-message",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UnknownRoom => "unknown-room",
        }
    }

    /// Parses the wire form; `None` for codes this version does not know.
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_serde_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("no-such-code"), None);
    }
}
