//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): what the
//! receiver's library checks.
//!
//! The secret is `whsec_` and base64; its decoded bytes are the HMAC-SHA256
//! key. A request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 of HMAC("{id}.{timestamp}.{body}")>`. The
//! timestamp is the time of the attempt: receivers refuse old ones (five
//! minutes, by default), so a retry is signed afresh, under the same id.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";
/// The shortest key accepted, in bytes (the specification asks for 24 to 64).
const MIN_KEY: usize = 24;

/// Signs requests with one secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Whether `secret` is a usable Standard Webhooks secret.
pub fn is_valid_secret(secret: &str) -> bool {
    Signer::new(secret).is_some()
}

impl Signer {
    /// A signer for `whsec_<base64>`; `None` if the secret is not one.
    pub fn new(secret: &str) -> Option<Signer> {
        let key = STANDARD.decode(secret.strip_prefix(PREFIX)?).ok()?;
        (key.len() >= MIN_KEY).then_some(Signer { key })
    }

    /// The `webhook-signature` header for one attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// A POST of `body` to `url` as one attempt of message `id`: JSON, with the
/// three Standard Webhooks headers, signed with the attempt's timestamp.
pub fn signed_post(
    client: &reqwest::Client,
    url: &str,
    signer: &Signer,
    id: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let timestamp = unix_now();
    let signature = signer.sign(id, timestamp, &body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(body)
}

/// Unix seconds now: the `webhook-timestamp` of an attempt.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference implementations.
    #[test]
    fn signs_as_the_specification_s_example() {
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let signature = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_must_be_whsec_and_long_enough() {
        assert!(is_valid_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!is_valid_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "no prefix");
        assert!(!is_valid_secret("whsec_c2hvcnQ="), "too short");
        assert!(!is_valid_secret("whsec_not base64!"));
    }
}
