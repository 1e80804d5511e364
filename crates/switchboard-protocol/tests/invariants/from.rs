//! The invariant "`from` on a relayed message is always the real sender", as
//! one check shared by the `from_invariant` test and the `decode` fuzz target
//! (which includes this file), so the fuzzer and the test suite hold the server
//! to the same rule.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use switchboard_protocol::client::{decode, ClientMessage};
use switchboard_protocol::relay::stamp;

/// The sender id the check stamps with.
pub const SENDER: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// For any text: if the decoder accepts it as a relay, the stamped frame is
/// valid JSON, decodes as the same relay, and every JSON parser (last key wins)
/// reads `from` as `SENDER` and every other field unchanged. Panics otherwise.
pub fn check(text: &str) {
    let Ok(request) = decode(text) else { return };
    let ClientMessage::Relay(relay) = request.message else { return };
    let stamped = stamp(text, relay.has_from, SENDER).expect("a decoded relay frame is a JSON object");

    serde_json::from_str::<&RawValue>(&stamped).expect("stamping keeps the frame valid JSON");
    match decode(&stamped).expect("a stamped frame decodes").message {
        ClientMessage::Relay(again) => {
            assert_eq!(again.kind, relay.kind);
            assert_eq!(again.target, relay.target);
            assert!(again.has_from);
        }
        other => panic!("a stamped relay decoded as {other:?}"),
    }

    // What a receiver's `JSON.parse` sees: `from` is the sender, whatever the
    // client wrote there (null, escaped key names).
    let out: Map<String, Value> = match serde_json::from_str(&stamped) {
        Ok(out) => out,
        // serde_json refuses numbers out of f64 range, which JSON allows; the
        // `from` that matters is then checked as raw text.
        Err(_) => {
            let raw: std::collections::HashMap<String, &RawValue> =
                serde_json::from_str(&stamped).expect("the stamped frame is an object");
            assert_eq!(raw.get("from").map(|v| v.get()), Some(format!("\"{SENDER}\"").as_str()), "{stamped}");
            return;
        }
    };
    assert_eq!(out.get("from"), Some(&Value::from(SENDER)), "stamped: {stamped}");

    // Where a strict parser accepts the original, every other field is unchanged.
    let Ok(mut original) = serde_json::from_str::<Map<String, Value>>(text) else { return };
    let mut out = out;
    out.remove("from");
    original.remove("from");
    assert_eq!(out, original);
}
