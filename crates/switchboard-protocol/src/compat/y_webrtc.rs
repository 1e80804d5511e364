//! y-webrtc (`y-webrtc` 10.x and its `bin/server.js`): JSON text frames with a
//! `type`. A publish is forwarded whole to a topic's subscribers with the
//! subscriber count added as `clients`; its other fields (often encrypted) are
//! the clients' business.

use std::borrow::Cow;
use std::collections::HashMap;

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
/// set to the topic's subscriber count (replacing any the client wrote), its
/// other fields passed on byte for byte (numbers, escapes and all), in their
/// order. A key the client wrote twice keeps its first place and its last
/// value, as `JSON.parse` (the original server) does. `None` if `frame` is not
/// a JSON object.
pub fn with_clients(frame: &str, clients: usize) -> Option<String> {
    let Fields(fields) = serde_json::from_str(frame).ok()?;
    let mut out = String::with_capacity(frame.len() + 16);
    out.push('{');
    for (key, value) in fields.iter().filter(|(key, _)| key != "clients") {
        out.push_str(&serde_json::to_string(key).ok()?);
        out.push(':');
        out.push_str(value.get());
        out.push(',');
    }
    out.push_str("\"clients\":");
    out.push_str(&clients.to_string());
    out.push('}');
    Some(out)
}

/// A JSON object's members in order, their values untouched.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields: Vec<(String, &'a RawValue)> = Vec::new();
                // Where each key is: a frame of thousands of keys costs one pass, not a square.
                let mut places: HashMap<String, usize> = HashMap::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    match places.get(&key) {
                        Some(&place) => fields[place].1 = value,
                        None => {
                            places.insert(key.clone(), fields.len());
                            fields.push((key, value));
                        }
                    }
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
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

    #[test]
    fn the_rest_of_a_publish_is_passed_on_byte_for_byte() {
        let frame =
            r#"{"type":"publish", "topic":"t\u00fc","n":1.50,"big":123456789012345678901234567890,"s":"\ud83d\ude00"}"#;
        assert_eq!(
            with_clients(frame, 3).unwrap(),
            r#"{"type":"publish","topic":"t\u00fc","n":1.50,"big":123456789012345678901234567890,"s":"\ud83d\ude00","clients":3}"#
        );
    }

    #[test]
    fn a_key_written_twice_keeps_its_first_place_and_last_value_like_json_parse() {
        let frame = r#"{"type":"publish","data":1,"topic":"t","data":2,"clients":7,"clients":8}"#;
        assert_eq!(with_clients(frame, 1).unwrap(), r#"{"type":"publish","data":2,"topic":"t","clients":1}"#);
        assert!(with_clients("[1,2]", 1).is_none());
        assert!(with_clients("{", 1).is_none());
    }
}
