//! The signaling decoder on arbitrary input: it must never panic, and whatever
//! it accepts as a relay must come out of the `from` stamping as valid JSON that
//! decodes as the same relay, with the sender's id in `from` and every other
//! field unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use switchboard_protocol::client::{decode, ClientMessage};
use switchboard_protocol::relay::{replace_from, stamp_from};

const SENDER: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(request) = decode(text) else { return };
    let ClientMessage::Relay(relay) = request.message else { return };
    let stamped = if relay.has_from {
        replace_from(text, SENDER).expect("a decoded relay frame is a JSON object")
    } else {
        stamp_from(text, SENDER)
    };

    // The output is JSON by the decoder's own (RFC 8259) rules, and decodes as
    // the same relay, now carrying the server's `from`.
    serde_json::from_str::<&RawValue>(&stamped).expect("stamping keeps the frame valid JSON");
    match decode(&stamped).expect("a stamped frame decodes").message {
        ClientMessage::Relay(again) => {
            assert_eq!(again.kind, relay.kind);
            assert_eq!(again.target, relay.target);
            assert!(again.has_from);
        }
        other => panic!("a stamped relay decoded as {other:?}"),
    }

    // Where a strict parser accepts the original (serde_json refuses numbers
    // out of f64 range, which JSON itself allows), every field but `from` is
    // unchanged (duplicate keys resolve last-wins on both sides).
    let Ok(mut original) = serde_json::from_str::<Map<String, Value>>(text) else { return };
    let mut out: Map<String, Value> = serde_json::from_str(&stamped).expect("the same numbers parse the same way");
    assert_eq!(out.remove("from"), Some(Value::from(SENDER)));
    original.remove("from");
    assert_eq!(out, original);
});
