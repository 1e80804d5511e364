//! The signaling decoder on arbitrary input: it must never panic, and whatever
//! it accepts as a relay must come out of the `from` stamping as valid JSON that
//! decodes as the same relay, with the sender's id in `from` (as every JSON
//! parser reads it) and every other field unchanged. The check is the protocol
//! crate's `from_invariant` test's, included here so both hold the same rule.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/switchboard-protocol/tests/invariants/from.rs"]
mod from;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        from::check(text);
    }
});
