//! Property tests: the decoder never panics, and relay stamping is lossless.

use proptest::prelude::*;
use serde_json::{Map, Value};
use switchboard_protocol::client::{decode, ClientMessage};
use switchboard_protocol::relay::{replace_from, stamp_from};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = decode(text);
        }
    }

    /// Any object with a relay type and a string target decodes as a relay, and
    /// stamping `from` keeps every other field exactly.
    #[test]
    fn relay_stamping_keeps_every_field(
        body in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..6),
        target in "[A-Za-z0-9_-]{1,22}",
        forged_from in any::<bool>(),
    ) {
        let mut object: Map<String, Value> = body.into_iter().filter(|(k, _)| k != "from").collect();
        object.insert("type".into(), "signal".into());
        object.insert("target".into(), target.clone().into());
        if forged_from {
            object.insert("from".into(), "mallory".into());
        }
        let frame = serde_json::to_string(&object).unwrap();
        let request = decode(&frame).unwrap();
        let relay = match request.message {
            ClientMessage::Relay(relay) => relay,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(relay.target.as_ref(), target.as_str());
        prop_assert_eq!(relay.has_from, forged_from);
        let out = if relay.has_from { replace_from(&frame, "alice").unwrap() } else { stamp_from(&frame, "alice") };
        let mut got: Map<String, Value> = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(got.remove("from"), Some(Value::from("alice")));
        object.remove("from");
        prop_assert_eq!(got, object);
    }
}
