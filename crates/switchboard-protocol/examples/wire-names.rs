//! Prints the protocol's fixed vocabularies as JSON, for the JavaScript SDK's
//! drift test (clients/js/test/protocol-lists.test.mjs):
//! `cargo run -q -p switchboard-protocol --example wire-names`.

use switchboard_protocol::{ErrorCode, RelayKind};

fn main() {
    let relay: Vec<&str> = RelayKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let errors: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    println!("{}", serde_json::json!({ "relayTypes": relay, "errorCodes": errors }));
}
