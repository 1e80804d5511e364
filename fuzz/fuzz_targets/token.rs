//! Token verification on arbitrary input: it must never panic, and nothing but
//! a token signed with the server's secret may verify.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchboard_server::auth::{AuthMode, Authenticator};

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(AuthMode::Required, Some("fuzzing-secret"), None, Duration::from_secs(30))
            .expect("an HS256 authenticator")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    // The fuzzer cannot forge an HMAC-SHA256 signature; any success is a bug.
    assert!(authenticator().verify(token).is_err(), "a token verified without the secret: {token:?}");
    let _ = authenticator().admit(Some(token));
});
