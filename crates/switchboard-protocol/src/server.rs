//! Messages the server sends.
//!
//! The server writes them with the borrowing encoders in [`encode`], which never
//! copy a peer's metadata or a broadcast payload into an intermediate value.
//! Clients read them back with [`ServerMessage::decode`]. A test in this module
//! round-trips every encoder through the decoder, so the two cannot disagree.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ErrorCode;
use crate::relay::RelayKind;

/// The `from` of a broadcast the app's backend sent through the server API.
/// No peer id can be it: peer ids are 22 characters long.
pub const SERVER_SENDER: &str = "server";

/// The close code of a connection the server API removed (`DELETE
/// /api/v1/peers/{id}` without a `code`): final, the session cannot be resumed.
pub const REMOVED_CLOSE_CODE: u16 = 4003;

/// One peer in a `joined` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer id.
    pub id: String,
    /// The authenticated user (the token's `sub`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The metadata the peer joined with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// A message from the server, as a client decodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// First message on every connection: the peer id the server assigned, the
    /// ICE servers to use (in `RTCConfiguration.iceServers` form) if the server
    /// has any configured, and the secret `resume` token that reconnects to this
    /// session (`/ws?resume=TOKEN`). On a reconnection that asked to resume,
    /// `resumed` says whether it did; if so the id is the old one and `rooms`
    /// lists the rooms the peer is still in.
    Welcome {
        id: String,
        ice_servers: Option<Value>,
        resume: Option<String>,
        resumed: Option<bool>,
        rooms: Vec<String>,
    },
    /// Reply to `join`: the room, its capacity, and who was already there.
    Joined { room: String, capacity: Option<u32>, peers: Vec<PeerInfo>, rid: Option<Value> },
    /// Someone entered a room you are in. On the wire the id is in `data`.
    PeerJoined { id: String, room: String, user: Option<String>, meta: Option<Value> },
    /// Someone left a room you are in (or disconnected). The id is in `data`.
    PeerLeft { id: String, room: String },
    /// Reply to `leave`: the rooms you left.
    Left { rooms: Vec<String>, rid: Option<Value> },
    /// A room broadcast from another peer, or from the app's backend through
    /// the server API (`from` is then [`SERVER_SENDER`]).
    Broadcast { from: String, room: String, data: Value },
    /// The server removed you from a room (the server API closed it); no
    /// `peer-left` follows for its other members.
    RoomClosed { room: String },
    /// A message from the app's backend, through the server API.
    ServerMessage { data: Value },
    /// Confirms a relay or broadcast that carried a `rid`.
    Ack { rid: Value },
    /// Reply to `ping`.
    Pong { rid: Option<Value> },
    /// A refused message.
    Error { code: String, message: String, rid: Option<Value> },
    /// A relay message from another peer: the whole object as its sender wrote
    /// it, with `from` set by the server.
    Relay { kind: RelayKind, from: String, body: Value },
}

/// The non-relay messages, as serde sees them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Tagged {
    Welcome {
        id: String,
        #[serde(default, rename = "iceServers")]
        ice_servers: Option<Value>,
        #[serde(default)]
        resume: Option<String>,
        #[serde(default)]
        resumed: Option<bool>,
        #[serde(default)]
        rooms: Vec<String>,
    },
    Joined {
        room: String,
        #[serde(default)]
        capacity: Option<u32>,
        peers: Vec<PeerInfo>,
        #[serde(default)]
        rid: Option<Value>,
    },
    PeerJoined {
        data: String,
        room: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        meta: Option<Value>,
    },
    PeerLeft {
        data: String,
        room: String,
    },
    Left {
        rooms: Vec<String>,
        #[serde(default)]
        rid: Option<Value>,
    },
    Broadcast {
        from: String,
        room: String,
        data: Value,
    },
    RoomClosed {
        room: String,
    },
    ServerMessage {
        data: Value,
    },
    Ack {
        rid: Value,
    },
    Pong {
        #[serde(default)]
        rid: Option<Value>,
    },
    Error {
        code: String,
        message: String,
        #[serde(default)]
        rid: Option<Value>,
    },
}

impl ServerMessage {
    /// Decodes one text frame from the server.
    pub fn decode(frame: &str) -> Result<ServerMessage, serde_json::Error> {
        let value: Value = serde_json::from_str(frame)?;
        let relay = value.get("type").and_then(Value::as_str).and_then(RelayKind::from_wire);
        if let Some(kind) = relay {
            let from = value.get("from").and_then(Value::as_str).unwrap_or_default().to_owned();
            return Ok(ServerMessage::Relay { kind, from, body: value });
        }
        Ok(match serde_json::from_value(value)? {
            Tagged::Welcome { id, ice_servers, resume, resumed, rooms } => {
                ServerMessage::Welcome { id, ice_servers, resume, resumed, rooms }
            }
            Tagged::Joined { room, capacity, peers, rid } => ServerMessage::Joined { room, capacity, peers, rid },
            Tagged::PeerJoined { data, room, user, meta } => ServerMessage::PeerJoined { id: data, room, user, meta },
            Tagged::PeerLeft { data, room } => ServerMessage::PeerLeft { id: data, room },
            Tagged::Left { rooms, rid } => ServerMessage::Left { rooms, rid },
            Tagged::Broadcast { from, room, data } => ServerMessage::Broadcast { from, room, data },
            Tagged::RoomClosed { room } => ServerMessage::RoomClosed { room },
            Tagged::ServerMessage { data } => ServerMessage::ServerMessage { data },
            Tagged::Ack { rid } => ServerMessage::Ack { rid },
            Tagged::Pong { rid } => ServerMessage::Pong { rid },
            Tagged::Error { code, message, rid } => ServerMessage::Error { code, message, rid },
        })
    }

    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::PeerJoined { .. } => "peer-joined",
            ServerMessage::PeerLeft { .. } => "peer-left",
            ServerMessage::Left { .. } => "left",
            ServerMessage::Broadcast { .. } => "broadcast",
            ServerMessage::RoomClosed { .. } => "room-closed",
            ServerMessage::ServerMessage { .. } => "server-message",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Relay { kind, .. } => kind.as_str(),
        }
    }
}

/// Borrowing encoders: each returns the finished JSON text of one frame.
pub mod encode {
    use super::*;

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "kebab-case")]
    enum Out<'a> {
        Welcome {
            id: &'a str,
            #[serde(rename = "iceServers", skip_serializing_if = "Option::is_none")]
            ice_servers: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            resume: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            resumed: Option<bool>,
            #[serde(skip_serializing_if = "<[&str]>::is_empty")]
            rooms: &'a [&'a str],
        },
        Joined {
            room: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            capacity: Option<u32>,
            peers: Vec<PeerRef<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rid: Option<&'a RawValue>,
        },
        PeerJoined {
            data: &'a str,
            room: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            meta: Option<&'a RawValue>,
        },
        PeerLeft {
            data: &'a str,
            room: &'a str,
        },
        Left {
            rooms: &'a [&'a str],
            #[serde(skip_serializing_if = "Option::is_none")]
            rid: Option<&'a RawValue>,
        },
        Broadcast {
            from: &'a str,
            room: &'a str,
            data: &'a RawValue,
        },
        RoomClosed {
            room: &'a str,
        },
        ServerMessage {
            data: &'a RawValue,
        },
        Ack {
            rid: &'a RawValue,
        },
        Pong {
            #[serde(skip_serializing_if = "Option::is_none")]
            rid: Option<&'a RawValue>,
        },
        Error {
            code: ErrorCode,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            rid: Option<&'a RawValue>,
        },
        RoomState {
            room: &'a str,
            peers: Vec<PeerRef<'a>>,
        },
    }

    /// A peer in a `joined` list, borrowed from the room.
    #[derive(Serialize)]
    pub struct PeerRef<'a> {
        /// The peer id.
        pub id: &'a str,
        /// The authenticated user.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub user: Option<&'a str>,
        /// Its metadata.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub meta: Option<&'a RawValue>,
    }

    fn write(out: &Out<'_>) -> String {
        // Serialising borrowed strings and already-valid raw JSON cannot fail.
        serde_json::to_string(out).expect("server messages always serialise")
    }

    /// `{"type":"welcome","id":...,"iceServers":[...]}`; `iceServers` only when given.
    pub fn welcome(id: &str, ice_servers: Option<&RawValue>) -> String {
        write(&Out::Welcome { id, ice_servers, resume: None, resumed: None, rooms: &[] })
    }

    /// `welcome` with the session's resume token; on a reconnection that asked
    /// to resume, `resumed` and the rooms the peer is (still) in.
    pub fn welcome_session(
        id: &str,
        ice_servers: Option<&RawValue>,
        resume: &str,
        resumed: Option<bool>,
        rooms: &[&str],
    ) -> String {
        write(&Out::Welcome { id, ice_servers, resume: Some(resume), resumed, rooms })
    }

    /// `{"type":"joined","room":...,"capacity":...,"peers":[...]}`
    pub fn joined(room: &str, capacity: Option<u32>, peers: Vec<PeerRef<'_>>, rid: Option<&RawValue>) -> String {
        write(&Out::Joined { room, capacity, peers, rid })
    }

    /// `{"type":"peer-joined","data":<id>,"room":...,"meta":...}`
    pub fn peer_joined(id: &str, room: &str, user: Option<&str>, meta: Option<&RawValue>) -> String {
        write(&Out::PeerJoined { data: id, room, user, meta })
    }

    /// `{"type":"peer-left","data":<id>,"room":...}`
    pub fn peer_left(id: &str, room: &str) -> String {
        write(&Out::PeerLeft { data: id, room })
    }

    /// `{"type":"left","rooms":[...]}`
    pub fn left(rooms: &[&str], rid: Option<&RawValue>) -> String {
        write(&Out::Left { rooms, rid })
    }

    /// `{"type":"broadcast","from":...,"room":...,"data":...}`
    pub fn broadcast(from: &str, room: &str, data: &RawValue) -> String {
        write(&Out::Broadcast { from, room, data })
    }

    /// `{"type":"room-closed","room":...}`
    pub fn room_closed(room: &str) -> String {
        write(&Out::RoomClosed { room })
    }

    /// `{"type":"server-message","data":...}`
    pub fn server_message(data: &RawValue) -> String {
        write(&Out::ServerMessage { data })
    }

    /// `{"type":"ack","rid":...}`
    pub fn ack(rid: &RawValue) -> String {
        write(&Out::Ack { rid })
    }

    /// `{"type":"pong"}`
    pub fn pong(rid: Option<&RawValue>) -> String {
        write(&Out::Pong { rid })
    }

    /// `{"type":"room-state","room":...,"peers":[...]}`: the first event on a
    /// room's membership stream (`/sse/rooms/{room}`).
    pub fn room_state(room: &str, peers: Vec<PeerRef<'_>>) -> String {
        write(&Out::RoomState { room, peers })
    }

    /// `{"type":"error","code":...,"message":...}`
    pub fn error(code: ErrorCode, message: &str, rid: Option<&RawValue>) -> String {
        write(&Out::Error { code, message, rid })
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn every_encoder_round_trips_through_the_decoder() {
        let meta = raw(r#"{"name":"Ada"}"#);
        let rid = raw("\"r-1\"");
        let cases = vec![
            (
                welcome("p1", None),
                ServerMessage::Welcome {
                    id: "p1".into(),
                    ice_servers: None,
                    resume: None,
                    resumed: None,
                    rooms: vec![],
                },
            ),
            (
                welcome_session("p1", None, "tok", Some(true), &["a", "b"]),
                ServerMessage::Welcome {
                    id: "p1".into(),
                    ice_servers: None,
                    resume: Some("tok".into()),
                    resumed: Some(true),
                    rooms: vec!["a".into(), "b".into()],
                },
            ),
            (
                welcome("p1", Some(&raw(r#"[{"urls":["stun:127.0.0.1:3478"]}]"#))),
                ServerMessage::Welcome {
                    id: "p1".into(),
                    ice_servers: Some(json!([{"urls": ["stun:127.0.0.1:3478"]}])),
                    resume: None,
                    resumed: None,
                    rooms: vec![],
                },
            ),
            (
                joined("lobby", Some(2), vec![PeerRef { id: "p2", user: Some("ada"), meta: Some(&meta) }], Some(&rid)),
                ServerMessage::Joined {
                    room: "lobby".into(),
                    capacity: Some(2),
                    peers: vec![PeerInfo {
                        id: "p2".into(),
                        user: Some("ada".into()),
                        meta: Some(json!({"name":"Ada"})),
                    }],
                    rid: Some(json!("r-1")),
                },
            ),
            (
                peer_joined("p3", "lobby", Some("ada"), Some(&meta)),
                ServerMessage::PeerJoined {
                    id: "p3".into(),
                    room: "lobby".into(),
                    user: Some("ada".into()),
                    meta: Some(json!({"name":"Ada"})),
                },
            ),
            (peer_left("p3", "lobby"), ServerMessage::PeerLeft { id: "p3".into(), room: "lobby".into() }),
            (room_closed("lobby"), ServerMessage::RoomClosed { room: "lobby".into() }),
            (server_message(&raw(r#"{"n":1}"#)), ServerMessage::ServerMessage { data: json!({"n": 1}) }),
            (left(&["a", "b"], None), ServerMessage::Left { rooms: vec!["a".into(), "b".into()], rid: None }),
            (
                broadcast("p1", "lobby", &raw("[1,2]")),
                ServerMessage::Broadcast { from: "p1".into(), room: "lobby".into(), data: json!([1, 2]) },
            ),
            (ack(&rid), ServerMessage::Ack { rid: json!("r-1") }),
            (pong(None), ServerMessage::Pong { rid: None }),
            (
                error(ErrorCode::RoomFull, "full", Some(&rid)),
                ServerMessage::Error { code: "room-full".into(), message: "full".into(), rid: Some(json!("r-1")) },
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(ServerMessage::decode(&frame).unwrap(), expected, "frame {frame}");
        }
    }

    #[test]
    fn seed_shapes_are_exact() {
        let joined: Value = serde_json::from_str(&peer_joined("abc", "default", None, None)).unwrap();
        assert_eq!(joined, json!({"type":"peer-joined","data":"abc","room":"default"}));
        let left: Value = serde_json::from_str(&peer_left("abc", "default")).unwrap();
        assert_eq!(left, json!({"type":"peer-left","data":"abc","room":"default"}));
        let welcome: Value = serde_json::from_str(&welcome("abc", None)).unwrap();
        assert_eq!(welcome, json!({"type":"welcome","id":"abc"}));
    }

    #[test]
    fn relay_frames_decode_with_their_whole_body() {
        let frame = r#"{"from":"a","type":"ice-candidate","target":"b","candidate":{"candidate":"c"}}"#;
        match ServerMessage::decode(frame).unwrap() {
            ServerMessage::Relay { kind, from, body } => {
                assert_eq!(kind, RelayKind::IceCandidate);
                assert_eq!(from, "a");
                assert_eq!(body["candidate"]["candidate"], "c");
            }
            other => panic!("{other:?}"),
        }
    }
}
