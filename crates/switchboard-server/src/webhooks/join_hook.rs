//! The join hook: the app's backend decides each `join` on `/ws`.
//!
//! Before a join goes to the broker, the server POSTs `{peer, user, room,
//! meta}` to `--join-hook-url`, signed as webhooks are, and waits up to
//! `--join-hook-timeout`. `{"allow": true}` admits (optionally with a new
//! `meta`, and a `capacity` that applies if the join creates the room);
//! `{"allow": false, "reason": "..."}` refuses with `forbidden`. Anything else
//! (a timeout, a network error, a status other than 2xx, a body that is not
//! such an answer) is a failure, which `--join-hook-failure` turns into a
//! refusal (`unavailable`, the default) or an admission.
//!
//! The wait holds only the joining peer's connection (its later messages wait
//! behind the join, as they do behind any join); no other peer waits.

use std::time::Duration;

use metrics::{counter, Counter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::warn;

use super::signing::{signed_post, Signer};
use super::{message_id, WebhookError};
use crate::settings::HookFailure;

/// The longest answer read from the hook.
const MAX_ANSWER: usize = 64 * 1024;

/// What the hook decided.
#[derive(Debug)]
pub enum HookVerdict {
    /// In; with the meta to show instead of the peer's, and the capacity of the
    /// room if this join creates it.
    Allow {
        /// Replaces the peer's `meta`.
        meta: Option<Box<RawValue>>,
        /// The room's capacity, if the join creates it.
        capacity: Option<u32>,
    },
    /// Out, with the hook's reason.
    Deny(String),
    /// No answer (timed out, failed): the configured failure mode applies.
    Unavailable(String),
}

#[derive(Serialize)]
struct Question<'a> {
    peer: &'a str,
    user: Option<&'a str>,
    room: &'a str,
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    meta: Option<Box<RawValue>>,
    #[serde(default)]
    capacity: Option<u32>,
    #[serde(default)]
    reason: Option<String>,
}

/// The join hook client.
pub struct JoinHook {
    client: reqwest::Client,
    url: String,
    signer: Signer,
    timeout: Duration,
    /// What a failure means.
    pub failure: HookFailure,
    allowed: Counter,
    denied: Counter,
    failed: Counter,
}

impl JoinHook {
    /// A client for the hook at `url`.
    pub fn new(url: &str, secret: &str, timeout: Duration, failure: HookFailure) -> Result<JoinHook, WebhookError> {
        let signer = Signer::new(secret).ok_or(WebhookError::BadSecret)?;
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let outcome = |o: &'static str| counter!("switchboard_join_hook_total", "outcome" => o);
        Ok(JoinHook {
            client,
            url: url.to_owned(),
            signer,
            timeout,
            failure,
            allowed: outcome("allowed"),
            denied: outcome("denied"),
            failed: outcome("failed"),
        })
    }

    /// Asks whether `peer` (`user`) may join `room` with `meta`.
    pub async fn ask(&self, peer: &str, user: Option<&str>, room: &str, meta: Option<&RawValue>) -> HookVerdict {
        let body = serde_json::to_string(&Question { peer, user, room, meta }).unwrap_or_default();
        let verdict = match tokio::time::timeout(self.timeout, self.post(body)).await {
            Ok(Ok(answer)) if answer.allow => {
                HookVerdict::Allow { meta: answer.meta.filter(|m| m.get() != "null"), capacity: answer.capacity }
            }
            Ok(Ok(answer)) => HookVerdict::Deny(answer.reason.unwrap_or_else(|| "refused by the join hook".into())),
            Ok(Err(why)) => HookVerdict::Unavailable(why),
            Err(_) => HookVerdict::Unavailable(format!("no answer within {:?}", self.timeout)),
        };
        match &verdict {
            HookVerdict::Allow { .. } => self.allowed.increment(1),
            HookVerdict::Deny(_) => self.denied.increment(1),
            HookVerdict::Unavailable(why) => {
                self.failed.increment(1);
                warn!(url = %self.url, %room, %why, "join hook failed");
            }
        }
        verdict
    }

    async fn post(&self, body: String) -> Result<Answer, String> {
        let request = signed_post(&self.client, &self.url, &self.signer, &message_id(), body);
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() > MAX_ANSWER {
            return Err(format!("answer of {} bytes, over {MAX_ANSWER}", bytes.len()));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable answer: {e}"))
    }
}
