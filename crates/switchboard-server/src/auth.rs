//! Authentication with JSON Web Tokens.
//!
//! The algorithm is fixed by the key the server is given, never by the token:
//! a shared secret means HS256 only, an RSA public key RS256 only, an EC P-256
//! public key ES256 only. A token signed any other way, including `alg: none`,
//! fails verification, which closes the algorithm-confusion family of attacks.
//!
//! Claims the server reads:
//!
//! | claim | meaning |
//! |---|---|
//! | `sub` | the user; shown to other peers as `user` |
//! | `exp` | expiry (required), checked with `auth-leeway` |
//! | `nbf` | not before (optional), checked with `auth-leeway` |
//! | `rooms` | room names or `*` patterns this token may join; absent: any room |
//! | `capacity` | the largest capacity a room created with this token may have |

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Whether connections must, may, or need not present a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Tokens are ignored; everyone is anonymous.
    None,
    /// A valid token identifies the user; no token is fine; an invalid one is refused.
    Optional,
    /// No peer id without a valid token.
    Required,
}

/// The claims of a Switchboard token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Rooms (or `*` patterns) the token may join; `None` allows every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// The largest capacity a room created with this token may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Who a connection is.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The token's `sub`; `None` for anonymous peers.
    pub user: Option<Arc<str>>,
    /// Room patterns from the token; `None` allows every room.
    rooms: Option<Vec<String>>,
    /// Capacity cap for rooms this identity creates.
    capacity: Option<u32>,
}

/// The identity of every peer without a token.
pub static ANONYMOUS: Identity = Identity { user: None, rooms: None, capacity: None };

/// An identity as a parked session keeps it (`broker::parking`): what the
/// token said, for the node that resumes the session.
#[derive(Serialize, Deserialize)]
struct IdentityRecord {
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<String>>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    capacity: Option<u32>,
}

impl Identity {
    /// The identity as JSON, to be kept with a parked session.
    pub fn to_record(&self) -> String {
        let record = IdentityRecord {
            user: self.user.as_deref().map(str::to_owned),
            rooms: self.rooms.clone(),
            capacity: self.capacity,
        };
        serde_json::to_string(&record).unwrap_or_else(|_| "{}".to_owned())
    }

    /// An identity kept with a parked session; one allowed in no room if unreadable.
    pub fn from_record(json: &str) -> Identity {
        match serde_json::from_str::<IdentityRecord>(json) {
            Ok(record) => Identity { user: record.user.map(Arc::from), rooms: record.rooms, capacity: record.capacity },
            Err(_) => Identity { user: None, rooms: Some(Vec::new()), capacity: None },
        }
    }

    /// An anonymous identity, allowed in every room.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// Whether this is [`ANONYMOUS`]: no user, no limits.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none() && self.rooms.is_none() && self.capacity.is_none()
    }

    /// The capacity a room created by this identity gets, given what the client
    /// asked for: the token's `capacity` is a ceiling the client can only lower.
    pub fn room_capacity(&self, requested: Option<u32>) -> Option<u32> {
        match (self.capacity, requested) {
            (Some(cap), Some(requested)) => Some(cap.min(requested)),
            (cap, requested) => cap.or(requested),
        }
    }

    /// Whether this identity may join `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|patterns| patterns.iter().any(|p| glob_match(p, room)))
    }
}

/// A bad authentication setup (found at start, not per connection).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// `auth` is optional or required but no key was given.
    #[error("--auth {0:?} needs --auth-secret or --auth-public-key")]
    NoKey(AuthMode),
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The key is not an RSA or EC public key in PEM form.
    #[error("{0}: not an RSA or EC (P-256) key in PEM form")]
    BadKey(String),
}

/// Why a token was refused. Logged; the client only learns "unauthorized".
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A token is required and none was given.
    #[error("no token")]
    Missing,
    /// The token did not verify.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Verifies tokens against the configured key.
pub struct Authenticator {
    mode: AuthMode,
    key: Option<DecodingKey>,
    validation: Validation,
}

impl Authenticator {
    /// Builds the verifier from the settings.
    pub fn new(
        mode: AuthMode,
        secret: Option<&str>,
        public_key: Option<&std::path::Path>,
        leeway: Duration,
    ) -> Result<Authenticator, AuthConfigError> {
        let (key, algorithm) = match (secret, public_key) {
            (Some(secret), _) => (Some(DecodingKey::from_secret(secret.as_bytes())), Algorithm::HS256),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|source| AuthConfigError::Read { path: path.display().to_string(), source })?;
                let bad = || AuthConfigError::BadKey(path.display().to_string());
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (Some(key), Algorithm::RS256),
                    Err(_) => (Some(DecodingKey::from_ec_pem(&pem).map_err(|_| bad())?), Algorithm::ES256),
                }
            }
            (None, None) if mode == AuthMode::None => (None, Algorithm::HS256),
            (None, None) => return Err(AuthConfigError::NoKey(mode)),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Authenticator { mode, key, validation })
    }

    /// The mode in force.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Decides who a connection is from the token it presented (if any).
    /// `Ok(None)` means: required, none presented yet; ask for an `auth` message.
    pub fn admit(&self, token: Option<&str>) -> Result<Option<Identity>, TokenError> {
        match (self.mode, token) {
            (AuthMode::None, _) | (AuthMode::Optional, None) => Ok(Some(Identity::anonymous())),
            (AuthMode::Required, None) => Ok(None),
            (_, Some(token)) => self.verify(token).map(Some),
        }
    }

    /// Verifies one token.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let key = self.key.as_ref().ok_or(TokenError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)?;
        let Claims { sub, rooms, capacity, .. } = data.claims;
        Ok(Identity { user: Some(sub.into()), rooms, capacity })
    }
}

/// Signs a token: HS256 with a secret, or RS256/ES256 with a PEM private key.
pub fn mint(claims: &Claims, secret: Option<&str>, private_key_pem: Option<&[u8]>) -> Result<String, MintError> {
    let (key, algorithm) = match (secret, private_key_pem) {
        (Some(secret), _) => (EncodingKey::from_secret(secret.as_bytes()), Algorithm::HS256),
        (None, Some(pem)) => match EncodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => (EncodingKey::from_ec_pem(pem).map_err(|_| MintError::BadKey)?, Algorithm::ES256),
        },
        (None, None) => return Err(MintError::NoKey),
    };
    Ok(jsonwebtoken::encode(&Header::new(algorithm), claims, &key)?)
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Neither a secret nor a private key.
    #[error("give --auth-secret (HS256) or --private-key (RS256/ES256 PEM)")]
    NoKey,
    /// The private key is not RSA or EC PEM.
    #[error("the private key is not an RSA or EC key in PEM form")]
    BadKey,
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct horse battery staple";

    fn hs256() -> Authenticator {
        Authenticator::new(AuthMode::Required, Some(SECRET), None, Duration::from_secs(5)).unwrap()
    }

    fn claims(rooms: Option<Vec<&str>>, exp_offset: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp: (now() as i64 + exp_offset) as u64,
            nbf: None,
            rooms: rooms.map(|r| r.into_iter().map(String::from).collect()),
            capacity: None,
        }
    }

    #[test]
    fn globs() {
        for (pattern, name, expected) in [
            ("demo", "demo", true),
            ("demo", "demo2", false),
            ("team-*", "team-red", true),
            ("team-*", "team-", true),
            ("team-*", "teams", false),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("*-call", "x-call", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn a_valid_token_identifies_the_user_and_limits_rooms() {
        let token = mint(&claims(Some(vec!["demo", "team-*"]), 60), Some(SECRET), None).unwrap();
        let identity = hs256().verify(&token).unwrap();
        assert_eq!(identity.user.as_deref(), Some("alice"));
        assert!(identity.may_join("demo"));
        assert!(identity.may_join("team-blue"));
        assert!(!identity.may_join("other"));
    }

    #[test]
    fn the_capacity_claim_is_a_ceiling() {
        let mut limited = claims(None, 60);
        limited.capacity = Some(2);
        let identity = hs256().verify(&mint(&limited, Some(SECRET), None).unwrap()).unwrap();
        assert_eq!(identity.room_capacity(None), Some(2));
        assert_eq!(identity.room_capacity(Some(5)), Some(2));
        assert_eq!(identity.room_capacity(Some(1)), Some(1));
        assert_eq!(Identity::anonymous().room_capacity(Some(5)), Some(5));
        assert_eq!(Identity::anonymous().room_capacity(None), None);
    }

    #[test]
    fn forged_expired_and_wrong_algorithm_tokens_are_refused() {
        let auth = hs256();
        let wrong_key = mint(&claims(None, 60), Some("another secret"), None).unwrap();
        assert!(auth.verify(&wrong_key).is_err());
        let expired = mint(&claims(None, -60), Some(SECRET), None).unwrap();
        assert!(auth.verify(&expired).is_err());
        let mut early = claims(None, 600);
        early.nbf = Some(now() + 300);
        assert!(auth.verify(&mint(&early, Some(SECRET), None).unwrap()).is_err());

        // alg: none, hand-made: header {"alg":"none","typ":"JWT"}, no signature.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(None, 60)).unwrap());
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
        // HS384 with the right secret is still the wrong algorithm.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims(None, 60),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(auth.verify(&hs384).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(auth.verify("").is_err());
    }

    #[test]
    fn modes_decide_what_a_missing_token_means() {
        let none = Authenticator::new(AuthMode::None, None, None, Duration::ZERO).unwrap();
        assert!(none.admit(Some("garbage")).unwrap().unwrap().user.is_none());
        let optional = Authenticator::new(AuthMode::Optional, Some(SECRET), None, Duration::ZERO).unwrap();
        assert!(optional.admit(None).unwrap().unwrap().user.is_none());
        assert!(optional.admit(Some("garbage")).is_err());
        assert!(hs256().admit(None).unwrap().is_none(), "required: ask for an auth message");
        assert!(Authenticator::new(AuthMode::Required, None, None, Duration::ZERO).is_err());
    }
}
