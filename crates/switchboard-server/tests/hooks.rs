//! Webhooks and the join hook, against the real binary: a real HTTP receiver
//! in the test verifies every signature with the Standard Webhooks reference
//! library (`standardwebhooks`), on one node and on two nodes over Redis.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use switchboard_client::Client;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver answers: a status, a body, after a delay.
type Answer = (u16, String, Duration);

/// A real HTTP server that records every request and answers as told.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Answers to give, first to last; then `200 {}`.
    script: Arc<Mutex<Vec<Answer>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn answer(&self, answers: Vec<Answer>) {
        *self.script.lock().unwrap() = answers;
    }

    /// Every request so far, its signature checked by the reference library.
    fn verified(&self) -> Vec<(String, Value)> {
        let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| {
                verifier.verify(body, headers).expect("a valid Standard Webhooks signature");
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                (id, serde_json::from_slice(body).unwrap())
            })
            .collect()
    }

    /// Waits until `count` requests have arrived.
    async fn wait(&self, count: usize) -> Vec<(String, Value)> {
        for _ in 0..300 {
            if self.seen.lock().unwrap().len() >= count {
                return self.verified();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("only {} of {count} requests arrived: {:?}", self.seen.lock().unwrap().len(), self.verified());
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    receiver.seen.lock().unwrap().push((headers, body));
    let next = {
        let mut script = receiver.script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    let (status, body, delay) = next.unwrap_or((200, "{}".into(), Duration::ZERO));
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

fn hooked(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--webhook-url", url, "--webhook-secret", SECRET, "--rate-limit-messages", "0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn recv_json(client: &mut Client) -> Value {
    serde_json::from_str(&client.recv_text().await.expect("a message")).expect("JSON")
}

/// The events' `(type, peer, reason)`, in arrival order.
fn summary(events: &[(String, Value)]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|(_, e)| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (text(&e["type"]), text(&e["data"]["peer"]), text(&e["data"]["reason"]))
        })
        .collect()
}

#[tokio::test]
async fn a_room_s_life_arrives_signed_in_order_with_its_fields() {
    let (receiver, addr) = Receiver::start().await;
    let server = hooked(&format!("http://{addr}/hook"), &[]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join_with(json!({"type": "join", "room": "demo", "meta": {"name": "Ada"}})).await.unwrap();
    b.join("demo").await.unwrap();
    a.send(&json!({"type": "leave", "room": "demo"})).await.unwrap();
    while recv_json(&mut a).await["type"] != "left" {}
    drop(b);
    let events = receiver.wait(6).await;
    let (a_id, b_id) = (a.id().to_owned(), server_id_of(&events, 2));
    assert_eq!(
        summary(&events),
        [
            ("room.started".into(), String::new(), String::new()),
            ("peer.joined".into(), a_id.clone(), String::new()),
            ("peer.joined".into(), b_id.clone(), String::new()),
            ("peer.left".into(), a_id.clone(), "left".into()),
            ("peer.left".into(), b_id, "disconnected".into()),
            ("room.finished".into(), String::new(), String::new()),
        ]
    );
    let joined = &events[1].1;
    assert_eq!(joined["data"]["room"], "demo");
    assert_eq!(joined["data"]["meta"], json!({"name": "Ada"}));
    assert!(joined["data"]["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(joined["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339: {joined}");
    let ids: HashSet<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 6, "every event has its own webhook-id");
}

fn server_id_of(events: &[(String, Value)], index: usize) -> String {
    events[index].1["data"]["peer"].as_str().unwrap().to_owned()
}

/// A receiver that fails, then comes back: every event still arrives, in
/// order, each retry under its first attempt's id; a 4xx is not retried.
#[tokio::test]
async fn failed_deliveries_are_retried_under_the_same_id_and_refusals_are_not() {
    let (receiver, addr) = Receiver::start().await;
    receiver.answer(vec![
        (503, String::new(), Duration::ZERO),
        (500, String::new(), Duration::ZERO),
        (429, String::new(), Duration::ZERO),
    ]);
    let server = hooked(&format!("http://{addr}/hook"), &["--webhook-retry-for", "30s"]);
    let mut a = server.client().await;
    a.join("r").await.unwrap();
    // room.started: three failures, then delivered; then peer.joined.
    let events = receiver.wait(5).await;
    let ids: Vec<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(ids[0], ids[3], "the same event, retried under one id");
    assert_eq!((ids[0], ids[1], ids[2]), (ids[1], ids[2], ids[3]));
    assert_eq!(summary(&events[3..])[0].0, "room.started");
    assert_eq!(summary(&events[4..])[0].0, "peer.joined", "order kept behind the retries");

    receiver.answer(vec![(400, String::new(), Duration::ZERO)]);
    drop(a);
    let events = receiver.wait(7).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events_later = receiver.verified();
    assert_eq!(summary(&events[5..6])[0].0, "peer.left");
    assert_eq!(events_later.len(), 7, "the refused peer.left was not sent again: {:?}", summary(&events_later));
    assert_eq!(events[6].1["type"], "room.finished", "and the queue moved on");
    let refused = server.metric("switchboard_webhooks_total{outcome=\"refused\"}").await;
    assert_eq!(refused, 1.0);
}

/// Two nodes, one receiver: each event comes once, from the node where it happened.
#[tokio::test]
async fn across_two_nodes_each_event_is_sent_once_by_its_own_node() {
    let (receiver, addr) = Receiver::start().await;
    let redis = Redis::start();
    let url = format!("http://{addr}/hook");
    let flags = ["--redis", &redis.url(), "--node-ttl", "1s", "--redis-timeout", "500ms"];
    let (one, two) = (hooked(&url, &flags), hooked(&url, &flags));
    for server in [&one, &two] {
        while server.metric("switchboard_broker_up").await != 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut a = one.client().await;
    let mut b = two.client().await;
    a.join("call").await.unwrap();
    b.join("call").await.unwrap();
    b.send(&json!({"type": "leave", "room": "call"})).await.unwrap();
    while recv_json(&mut b).await["type"] != "left" {}
    a.send(&json!({"type": "leave", "room": "call"})).await.unwrap();
    let events = receiver.wait(6).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let events_later = receiver.verified();
    assert_eq!(events_later.len(), 6, "no copies: {:?}", summary(&events_later));
    let kinds: Vec<String> = summary(&events).into_iter().map(|(kind, _, _)| kind).collect();
    for kind in ["room.started", "room.finished"] {
        assert_eq!(kinds.iter().filter(|k| *k == kind).count(), 1, "{kind} once: {kinds:?}");
    }
    let node_of = |peer: &str| {
        events
            .iter()
            .filter(|(_, e)| e["data"]["peer"] == peer)
            .map(|(_, e)| e["data"]["node"].clone())
            .collect::<HashSet<_>>()
    };
    let (from_a, from_b) = (node_of(a.id()), node_of(b.id()));
    assert_eq!((from_a.len(), from_b.len()), (1, 1), "a peer's events come from one node");
    assert_ne!(from_a, from_b, "each from its own");
}

/// The join hook decides: allow, allow with its meta and capacity, deny, and
/// a hook that does not answer.
#[tokio::test]
async fn the_join_hook_allows_rewrites_refuses_and_times_out() {
    let (receiver, addr) = Receiver::start().await;
    let url = format!("http://{addr}/hook");
    let server = Server::start(&[
        "--join-hook-url",
        &url,
        "--webhook-secret",
        SECRET,
        "--join-hook-timeout",
        "500ms",
        "--rate-limit-messages",
        "0",
    ]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    let no_delay = Duration::ZERO;
    receiver.answer(vec![
        (200, json!({"allow": true, "meta": {"role": "host"}, "capacity": 2}).to_string(), no_delay),
        (200, json!({"allow": true}).to_string(), no_delay),
        (200, json!({"allow": false, "reason": "not invited"}).to_string(), no_delay),
        (200, "{}".into(), Duration::from_secs(2)),
    ]);
    a.join_with(json!({"type": "join", "room": "show", "meta": {"role": "guest"}})).await.unwrap();
    b.send(&json!({"type": "join", "room": "show"})).await.unwrap();
    let seen = recv_json(&mut b).await;
    assert_eq!(seen["type"], "joined");
    assert_eq!(seen["peers"][0]["meta"], json!({"role": "host"}), "the hook's meta, not the peer's: {seen}");
    assert_eq!(seen["capacity"], 2, "the hook's capacity for the room it created");

    c.send(&json!({"type": "join", "room": "other", "rid": 1})).await.unwrap();
    let denied = recv_json(&mut c).await;
    assert_eq!((denied["code"].as_str(), denied["message"].as_str()), (Some("forbidden"), Some("not invited")));

    // The hook sleeps past the timeout: refused with `unavailable`, and meanwhile
    // another peer's messages are not held up.
    c.send(&json!({"type": "join", "room": "slow", "rid": 2})).await.unwrap();
    a.send(&json!({"type": "broadcast", "room": "show", "data": "still here"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["data"], "still here");
    let timed_out = recv_json(&mut c).await;
    assert_eq!(timed_out["code"], "unavailable", "{timed_out}");

    // What the hook was asked: signed, with the peer, its user, the room and its meta.
    let questions = receiver.verified();
    assert_eq!(questions.len(), 4);
    assert_eq!(questions[0].1, json!({"peer": a.id(), "user": null, "room": "show", "meta": {"role": "guest"}}));
}

#[tokio::test]
async fn with_join_hook_failure_allow_a_silent_hook_admits() {
    let server = Server::start(&[
        "--join-hook-url",
        "http://127.0.0.1:9/nobody-listens",
        "--webhook-secret",
        SECRET,
        "--join-hook-failure",
        "allow",
    ]);
    let mut a = server.client().await;
    a.join("r").await.expect("admitted when the hook fails");
    assert_eq!(server.metric("switchboard_join_hook_total{outcome=\"failed\"}").await, 1.0);
}

/// A node dies (kill -9): the one survivor that reaps it sends the departures
/// of its peers, once, with reason `node-lost`.
#[tokio::test]
async fn a_dead_node_s_peers_leave_once_with_reason_node_lost() {
    let (receiver, addr) = Receiver::start().await;
    let redis = Redis::start();
    let url = format!("http://{addr}/hook");
    let flags = ["--redis", &redis.url(), "--node-ttl", "1s", "--redis-timeout", "500ms"];
    let (survivor, mut doomed) = (hooked(&url, &flags), hooked(&url, &flags));
    for server in [&survivor, &doomed] {
        while server.metric("switchboard_broker_up").await != 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut a = survivor.client().await;
    let mut b = doomed.client().await;
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    let before = receiver.wait(3).await; // room.started, two peer.joined
    let doomed_node = before.iter().find(|(_, e)| e["data"]["peer"] == b.id()).unwrap().1["data"]["node"].clone();
    doomed.kill();
    // a hears b leave once the survivor reaps the dead node.
    a.set_timeout(Duration::from_secs(10));
    while recv_json(&mut a).await["type"] != "peer-left" {}
    let events = receiver.wait(4).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let lost: Vec<Value> =
        receiver.verified().into_iter().map(|(_, event)| event).filter(|e| e["type"] == "peer.left").collect();
    assert_eq!(lost.len(), 1, "once: {:?}", summary(&events));
    assert_eq!(lost[0]["data"]["peer"], b.id());
    assert_eq!(lost[0]["data"]["reason"], "node-lost");
    assert_ne!(lost[0]["data"]["node"], doomed_node, "sent by the survivor");
}
