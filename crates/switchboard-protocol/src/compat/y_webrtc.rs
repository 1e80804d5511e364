//! y-webrtc (`y-webrtc` 10.x and its `bin/server.js`): JSON text frames with a
//! `type`. A publish is forwarded whole to a topic's subscribers with the
//! subscriber count added as `clients`; its other fields (often encrypted) are
//! the clients' business.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// What a client sends.
#[derive(Debug)]
pub enum Request<'a> {
    /// Start receiving the topics' publishes (non-strings are ignored, as the original does).
    Subscribe {
        /// Topic names.
        topics: Vec<&'a RawValue>,
    },
    /// Stop receiving them.
    Unsubscribe {
        /// Topic names.
        topics: Vec<&'a RawValue>,
    },
    /// Send the whole message to every subscriber of `topic`.
    Publish {
        /// The topic, when it is a string.
        topic: Option<Cow<'a, str>>,
    },
    /// Application keepalive: answered with [`PONG`].
    Ping,
}

/// The fields the server reads; the rest of a publish is passed on untouched.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    topics: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    topic: Option<&'a RawValue>,
}

/// The answer to `{"type":"ping"}`, as the original sends it.
pub const PONG: &str = r#"{"type":"pong"}"#;

/// Reads a client frame; `None` if it is not one of the four.
pub fn decode(frame: &str) -> Option<Request<'_>> {
    let envelope: Envelope = serde_json::from_str(frame).ok()?;
    Some(match envelope.kind.as_ref() {
        "subscribe" => Request::Subscribe { topics: envelope.topics.unwrap_or_default() },
        "unsubscribe" => Request::Unsubscribe { topics: envelope.topics.unwrap_or_default() },
        "publish" => Request::Publish { topic: envelope.topic.and_then(string) },
        "ping" => Request::Ping,
        _ => return None,
    })
}

fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw.get()).ok().map(Cow::Owned),
    }
}

/// The topics of a subscribe or unsubscribe that are strings.
pub fn topic_names<'a>(topics: &[&'a RawValue]) -> Vec<Cow<'a, str>> {
    topics.iter().filter_map(|raw| string(raw)).collect()
}

/// A publish as subscribers receive it: the client's object with `clients`
/// set to the topic's subscriber count (replacing any the client wrote).
pub fn with_clients(frame: &str, clients: usize) -> Option<String> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(frame).ok()?;
    object.insert("clients".into(), clients.into());
    serde_json::to_string(&object).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_messages_decode() {
        match decode(r#"{"type":"subscribe","topics":["a",1,"b"]}"#) {
            Some(Request::Subscribe { topics }) => assert_eq!(topic_names(&topics), ["a", "b"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(r#"{"type":"unsubscribe","topics":["a"]}"#), Some(Request::Unsubscribe { .. })));
        assert!(
            matches!(decode(r#"{"type":"publish","topic":"a","data":1}"#), Some(Request::Publish { topic: Some(t) }) if t == "a")
        );
        assert!(matches!(decode(r#"{"type":"ping"}"#), Some(Request::Ping)));
        assert!(decode(r#"{"type":"dance"}"#).is_none());
        assert!(decode("nope").is_none());
    }

    #[test]
    fn clients_is_set_on_the_forwarded_publish() {
        let out: serde_json::Value = serde_json::from_str(
            &with_clients(r#"{"type":"publish","topic":"t","data":{"x":1},"clients":99}"#, 2).unwrap(),
        )
        .unwrap();
        assert_eq!(out, serde_json::json!({"type":"publish","topic":"t","data":{"x":1},"clients":2}));
    }
}
