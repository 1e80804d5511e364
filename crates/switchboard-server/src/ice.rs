//! The ICE servers each peer is told about, with TURN credentials.
//!
//! STUN URLs are passed on as configured. TURN URLs get credentials one of two
//! ways:
//!
//! * static: `--turn-username` / `--turn-credential`, the same for everyone;
//! * time-limited (`--turn-secret`): the TURN REST API that coturn implements
//!   with `use-auth-secret`. The username is `<expiry unix time>:<user>` and the
//!   password `base64(HMAC-SHA1(secret, username))`. The TURN server checks both
//!   without asking Switchboard, and refuses them after the expiry, so a leaked
//!   credential is worth little and the secret never leaves the servers.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha1::Sha1;

use crate::settings::Settings;

/// How TURN credentials are issued.
#[derive(Debug, Clone)]
enum TurnCredentials {
    None,
    Static { username: String, credential: String },
    TimeLimited { secret: String, ttl: Duration },
}

/// The configured STUN and TURN servers.
#[derive(Debug, Clone)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    credentials: TurnCredentials,
}

impl IceServers {
    /// From the settings.
    pub fn new(settings: &Settings) -> IceServers {
        let (turn, stun) = settings.ice_servers.iter().cloned().partition(|url| url.starts_with("turn"));
        let credentials = match (&settings.turn_secret, &settings.turn_username, &settings.turn_credential) {
            (Some(secret), _, _) => TurnCredentials::TimeLimited { secret: secret.clone(), ttl: settings.turn_ttl },
            (None, Some(username), Some(credential)) => {
                TurnCredentials::Static { username: username.clone(), credential: credential.clone() }
            }
            _ => TurnCredentials::None,
        };
        IceServers { stun, turn, credentials }
    }

    /// Whether there is anything to tell peers.
    pub fn is_empty(&self) -> bool {
        self.stun.is_empty() && self.turn.is_empty()
    }

    /// The `iceServers` array for one user, in `RTCConfiguration` form; `None` if none are configured.
    pub fn for_user(&self, user: &str) -> Option<Box<RawValue>> {
        if self.is_empty() {
            return None;
        }
        serde_json::value::to_raw_value(&self.entries(user, now())).ok()
    }

    fn entries(&self, user: &str, now: u64) -> Vec<Value> {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(json!({ "urls": self.stun }));
        }
        if !self.turn.is_empty() {
            let mut entry = json!({ "urls": self.turn });
            match &self.credentials {
                TurnCredentials::None => {}
                TurnCredentials::Static { username, credential } => {
                    entry["username"] = username.as_str().into();
                    entry["credential"] = credential.as_str().into();
                }
                TurnCredentials::TimeLimited { secret, ttl } => {
                    let (username, credential) = rest_credentials(secret, user, now + ttl.as_secs());
                    entry["username"] = username.into();
                    entry["credential"] = credential.into();
                }
            }
            servers.push(entry);
        }
        servers
    }
}

/// coturn REST API credentials for `user`, valid until `expiry` (unix seconds).
pub fn rest_credentials(secret: &str, user: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    (username, STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> (Settings, ()) {
        (Cli::parse_from(args).settings, ())
    }

    #[test]
    fn ice_servers_group_stun_and_turn_with_credentials() {
        let (settings, _) = parse(&[
            "x",
            "--ice-server",
            "stun:127.0.0.1:3478",
            "--ice-server",
            "turn:127.0.0.1:3478?transport=udp",
            "--turn-username",
            "u",
            "--turn-credential",
            "p",
        ]);
        settings.validate().unwrap();
        let json: serde_json::Value =
            serde_json::from_str(IceServers::new(&settings).for_user("anonymous").unwrap().get()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"urls": ["stun:127.0.0.1:3478"]},
                {"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "u", "credential": "p"},
            ])
        );
        let (none, _) = parse(&["x"]);
        assert!(IceServers::new(&none).for_user("anonymous").is_none());
        let (bad, _) = parse(&["x", "--ice-server", "http://nope"]);
        assert!(bad.validate().is_err());
    }

    use super::*;

    #[test]
    fn rest_credentials_match_the_coturn_formula() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac sekrit -binary | base64
        let (username, credential) = rest_credentials("sekrit", "alice", 1_700_000_000);
        assert_eq!(username, "1700000000:alice");
        assert_eq!(credential, "qicIgfR+IBFR4/g4weuEVByS9aw=");
    }
}
