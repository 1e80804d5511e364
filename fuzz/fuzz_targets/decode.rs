//! The signaling decoder on arbitrary input: it must never panic, and whatever
//! it accepts as a relay must come out of the `from` stamping as valid JSON
//! with the sender's id in `from` and every other field unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
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
    let mut out: Map<String, Value> = serde_json::from_str(&stamped).expect("stamping keeps the frame valid JSON");
    assert_eq!(out.remove("from"), Some(Value::from(SENDER)));
    // Every other field is as the client wrote it (duplicate keys aside, which
    // the decoder refuses for the fields it reads and serde_json resolves
    // last-wins for the rest, in both the input and the output).
    let mut original: Map<String, Value> = serde_json::from_str(text).expect("decoded frames are JSON objects");
    original.remove("from");
    assert_eq!(out, original);
});
