//! `from` is always the real sender: the `decode` fuzz target's check, run over
//! its committed corpus (every regression it found) and over the spellings of
//! `from` a client might use to blank or forge it.

mod invariants;

use invariants::from::{check, SENDER};
use switchboard_protocol::client::decode;
use switchboard_protocol::relay::stamp;

#[test]
fn every_committed_fuzz_input_keeps_the_invariant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("the decode corpus is committed") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check(text);
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} corpus files");
}

#[test]
fn from_cannot_be_blanked_or_forged_by_any_spelling() {
    let frames = [
        r#"{"type":"offer","target":"b","from": null}"#,
        r#"{"type":"offer","target":"b","from":null,"sdp":"v=0"}"#,
        "{\"type\":\"offer\",\"target\":\"b\",\"from\"\t:\n null }",
        r#"{"type":"offer","target":"b","fr\u006fm":"mallory"}"#,
        r#"{"type":"offer","target":"b","\u0066\u0072\u006f\u006d":null}"#,
        r#"{"type":"offer","target":"b","from":{"id":"mallory"}}"#,
        r#"{"type":"offer","target":"b","from":""}"#,
    ];
    for frame in frames {
        check(frame);
        let request = decode(frame).unwrap();
        let switchboard_protocol::ClientMessage::Relay(relay) = request.message else { panic!("{frame}") };
        let out: serde_json::Value = serde_json::from_str(&stamp(frame, relay.has_from, SENDER).unwrap()).unwrap();
        assert_eq!(out["from"], SENDER, "{frame}");
    }
}

#[test]
fn a_duplicated_from_is_refused_not_relayed() {
    let frame = r#"{"type":"offer","target":"b","from":"x","from":null}"#;
    assert_eq!(decode(frame).unwrap_err().code, switchboard_protocol::ErrorCode::MalformedJson);
}
