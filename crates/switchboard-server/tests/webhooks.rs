//! Signed webhooks and the join hook (#13), against the real binary.
//!
//! Every receiver here is a real HTTP server inside the test (axum on a free
//! loopback port). It records each request as it arrives, checks its signature
//! with the Standard Webhooks reference library (`standardwebhooks`), and
//! answers what the test tells it to. The server runs alone, or as two nodes
//! over a real `redis-server`.
//!
//! "Nothing more arrived" is proved with a sentinel wherever possible: each URL
//! is served by one sender per node, in order, so once an event generated
//! after the others has arrived from a node, everything that node queued
//! before it has arrived too (a retry or a duplicate included).

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use switchboard_client::{Client, ClientError};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// The secret every server here signs with.
const SECRET: &str = "whsec_eo6RuDVJjjj6ES2KmwB7H0imi/em3jNlE86fH5egG/g=";
/// The secret the receivers verify with: the same one (a check of these tests
/// sets another, and every signature check must then fail).
const RECEIVER_SECRET: &str = SECRET;
/// The server API key (for node ids, minted tokens and removals).
const API_KEY: &str = "webhooks-test-api-key-0123456789";
/// For `--auth optional`: tokens minted through the API name a user.
const AUTH_SECRET: &str = "webhooks-test-auth-secret-0123456789";
/// The longest any wait here may take (a limit, not an expectation).
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

/// One request as a receiver got it.
struct Hit {
    headers: HeaderMap,
    body: Bytes,
    json: Value,
    /// The reference library's verdict on the signature, checked on arrival.
    signature: Result<(), String>,
    /// Which attempt of its `webhook-id` this was at this receiver (1 = first).
    attempt: usize,
    /// The status the receiver answered, once it has.
    status: OnceLock<u16>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn id(&self) -> &str {
        self.header("webhook-id")
    }

    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    fn data(&self, field: &str) -> &str {
        self.json["data"][field].as_str().unwrap_or("")
    }

    fn is(&self, kind: &str, room: &str, peer: &str) -> bool {
        self.kind() == kind && self.data("room") == room && self.data("peer") == peer
    }

    fn describe(&self) -> String {
        format!(
            "#{} {} {:?} [{}] signature {:?}: {}",
            self.attempt,
            self.id(),
            self.status.get(),
            self.header("webhook-timestamp"),
            self.signature,
            String::from_utf8_lossy(&self.body)
        )
    }
}

type Reply = Pin<Box<dyn Future<Output = (u16, Value)> + Send>>;
/// Decides the answer to one request.
type Responder = Arc<dyn Fn(Arc<Hit>) -> Reply + Send + Sync>;

/// An answer decided at once from the request.
fn reply(decide: impl Fn(&Hit) -> (u16, Value) + Send + Sync + 'static) -> Responder {
    Arc::new(move |hit: Arc<Hit>| {
        let answer = decide(&hit);
        Box::pin(async move { answer }) as Reply
    })
}

/// `200 {}` to everything.
fn ok() -> Responder {
    reply(|_| (200, json!({})))
}

/// A real HTTP server that records every request and answers as its responder says.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Arc<Hit>>>>,
    responder: Responder,
}

impl Receiver {
    /// On a free loopback port.
    async fn start(responder: Responder) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a receiver");
        Receiver::serve(listener, responder)
    }

    /// On `listener`.
    fn serve(listener: tokio::net::TcpListener, responder: Responder) -> Receiver {
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Receiver { addr, hits: Arc::default(), responder };
        let app = Router::new().route("/hooks", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Everything so far, in arrival order.
    fn hits(&self) -> Vec<Arc<Hit>> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what has arrived; panics (showing it) after [`WAIT`].
    async fn wait_until(&self, what: &str, done: impl Fn(&[Arc<Hit>]) -> bool) -> Vec<Arc<Hit>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            assert!(Instant::now() < deadline, "the receiver never got {what}; it got:\n{}", describe(&hits));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for an event of `kind` in `room` about `peer` ("" for none).
    async fn wait_for(&self, kind: &str, room: &str, peer: &str) -> Vec<Arc<Hit>> {
        let what = format!("{kind} in {room:?} for {peer:?}");
        self.wait_until(&what, |hits| hits.iter().any(|h| h.is(kind, room, peer))).await
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = standardwebhooks::Webhook::new(RECEIVER_SECRET)
        .map_err(|e| e.to_string())
        .and_then(|hook| hook.verify(&body, &headers).map_err(|e| e.to_string()));
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hit = {
        let mut hits = receiver.hits.lock().unwrap();
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let attempt = hits.iter().filter(|h| h.id() == id).count() + 1;
        let hit = Arc::new(Hit { headers, body, json, signature, attempt, status: OnceLock::new() });
        hits.push(hit.clone());
        hit
    };
    let (status, answer) = (receiver.responder)(hit.clone()).await;
    let _ = hit.status.set(status);
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
}

fn describe(hits: &[Arc<Hit>]) -> String {
    hits.iter().map(|h| h.describe()).collect::<Vec<_>>().join("\n")
}

/// Every request is signed as the reference library checks it, with this
/// secret and a fresh timestamp.
fn assert_signed(hits: &[Arc<Hit>]) {
    assert!(!hits.is_empty());
    let bad: Vec<&Arc<Hit>> = hits.iter().filter(|h| h.signature.is_err()).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests fail the reference verification:\n{}",
        bad.len(),
        hits.len(),
        describe(hits)
    );
}

/// `(type, peer, reason)` of each hit.
fn summary<'a>(hits: impl IntoIterator<Item = &'a Arc<Hit>>) -> Vec<(String, String, String)> {
    hits.into_iter().map(|h| ev(h.kind(), h.data("peer"), h.data("reason"))).collect()
}

fn ev(kind: &str, peer: &str, reason: &str) -> (String, String, String) {
    (kind.to_owned(), peer.to_owned(), reason.to_owned())
}

/// The hits about `room`.
fn in_room<'a>(hits: &'a [Arc<Hit>], room: &str) -> Vec<&'a Arc<Hit>> {
    hits.iter().filter(|h| h.data("room") == room).collect()
}

fn keys(value: &Value) -> HashSet<&str> {
    value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

fn set<'a>(items: &[&'a str]) -> HashSet<&'a str> {
    items.iter().copied().collect()
}

// ---------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------

/// A server signing with [`SECRET`], with the API on and no rate limit.
fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--webhook-secret", SECRET, "--api-key", API_KEY, "--rate-limit-messages", "0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A node on `redis` (short node TTL) that sends its webhooks to `url`.
async fn node(redis: &Redis, url: &str) -> Server {
    let redis_url = redis.url();
    let server = server(&["--webhook-url", url, "--redis", &redis_url, "--node-ttl", "1s", "--redis-timeout", "500ms"]);
    server.wait_broker_up().await;
    server
}

/// A metric's value, if `/metrics` shows it.
async fn metric(server: &Server, name: &str) -> Option<f64> {
    let (_, body) = support::http_get(server.addr, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

fn outcome(outcome: &str) -> String {
    format!("switchboard_webhooks_total{{outcome=\"{outcome}\"}}")
}

/// Polls a metric until `ok` holds for it (absent counts as 0).
async fn wait_metric(server: &Server, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(server, name).await.unwrap_or(0.0);
        if ok(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server API call: (status, JSON body or null).
async fn api(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().request(method, format!("http://{}/api/v1{path}", server.addr)).bearer_auth(API_KEY);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.expect("API request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("API body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The node id the server reports for itself (the first of `/nodes`).
async fn node_id(server: &Server) -> String {
    let (status, nodes) = api(server, reqwest::Method::GET, "/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    nodes["nodes"][0]["id"].as_str().expect("a node id").to_owned()
}

/// A token for `user`, minted by the server (`--auth optional --auth-secret`).
async fn token_for(server: &Server, user: &str) -> String {
    let (status, minted) = api(server, reqwest::Method::POST, "/tokens", Some(json!({"sub": user}))).await;
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().expect("a token").to_owned()
}

async fn recv_json(client: &mut Client) -> Value {
    let text = client.recv_text().await.expect("a message");
    serde_json::from_str(&text).expect("JSON from the server")
}

/// Reads messages until one of type `kind` arrives.
async fn recv_type(client: &mut Client, kind: &str) -> Value {
    let mut skipped = Vec::new();
    for _ in 0..100 {
        let message = recv_json(client).await;
        if message["type"] == kind {
            return message;
        }
        skipped.push(message);
    }
    panic!("no {kind} message; got {skipped:?}");
}

/// Reads messages until `peer-left` for `peer` in `room`.
async fn recv_peer_left(client: &mut Client, room: &str, peer: &str) {
    loop {
        let message = recv_type(client, "peer-left").await;
        if message["data"] == peer && message["room"] == room {
            return;
        }
    }
}

async fn join_with_meta(client: &mut Client, room: &str, meta: Value) {
    client.join_with(json!({"type": "join", "room": room, "meta": meta})).await.expect("joined");
}

async fn leave(client: &mut Client, room: &str) {
    client.send(&json!({"type": "leave", "room": room})).await.unwrap();
    let left = recv_type(client, "left").await;
    assert_eq!(left["rooms"], json!([room]));
}

/// Sends `join` and reads past anything else (earlier rooms' news) to its `joined`.
async fn join_past(client: &mut Client, message: Value) -> Value {
    client.send(&message).await.unwrap();
    recv_type(client, "joined").await
}

async fn assert_quiet(client: &mut Client, window: Duration) {
    client.set_timeout(window);
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(switchboard_client::DEFAULT_TIMEOUT);
}

/// A fresh peer on `server` joins `room`; returns once `receiver` has its
/// `peer.joined`, so everything the server queued before has arrived too.
async fn sentinel(server: &Server, receiver: &Receiver, room: &str) -> Client {
    let mut peer = server.client().await;
    peer.join(room).await.expect("sentinel joins");
    receiver.wait_for("peer.joined", room, peer.id()).await;
    peer
}

fn rfc3339(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

// ---------------------------------------------------------------------------
// 1. One node: a room's life
// ---------------------------------------------------------------------------

/// Two peers join (one anonymous, one a user with meta), one leaves, one
/// drops: the receiver gets the room's six events, in order, each signed and
/// with its own id, with the fields of each kind and nothing else.
#[tokio::test]
async fn one_node_tells_a_room_s_life_signed_in_order_with_its_fields() {
    let receiver = Receiver::start(ok()).await;
    let server = server(&["--webhook-url", &receiver.url(), "--auth", "optional", "--auth-secret", AUTH_SECRET]);
    let node = node_id(&server).await;
    let token = token_for(&server, "alice").await;
    let before = SystemTime::now() - Duration::from_secs(2);

    let mut a = server.client().await; // anonymous, no meta
    let mut b = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await.expect("connect with a token");
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    let meta = json!({"name": "Alice", "tags": ["host", 1]});
    a.join("demo").await.unwrap();
    join_with_meta(&mut b, "demo", meta.clone()).await;
    assert_eq!(recv_type(&mut a, "peer-joined").await["data"], b_id);
    leave(&mut a, "demo").await;
    recv_peer_left(&mut b, "demo", &a_id).await;
    drop(b); // no close frame: the connection is simply lost

    receiver.wait_for("room.finished", "demo", "").await;
    let _sentinel = sentinel(&server, &receiver, "sentinel").await;
    let hits = receiver.hits();
    assert_signed(&hits);
    assert_eq!(hits.len(), 8, "six for demo and two for the sentinel, each once:\n{}", describe(&hits));

    let demo = in_room(&hits, "demo");
    assert_eq!(
        summary(demo.iter().copied()),
        [
            ev("room.started", "", ""),
            ev("peer.joined", &a_id, ""),
            ev("peer.joined", &b_id, ""),
            ev("peer.left", &a_id, "left"),
            ev("peer.left", &b_id, "disconnected"),
            ev("room.finished", "", ""),
        ],
        "\n{}",
        describe(&hits)
    );
    let ids: HashSet<&str> = hits.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), hits.len(), "every event has its own webhook-id:\n{}", describe(&hits));
    let after = SystemTime::now() + Duration::from_secs(2);
    for hit in &hits {
        assert!(hit.id().starts_with("msg_") && hit.id().len() > 4, "{}", hit.describe());
        assert!(hit.header("content-type").starts_with("application/json"), "{}", hit.describe());
        assert!(hit.header("webhook-signature").starts_with("v1,"), "{}", hit.describe());
        assert_eq!(keys(&hit.json), set(&["type", "timestamp", "data"]), "{}", hit.describe());
        let at = rfc3339(hit.json["timestamp"].as_str().expect("a timestamp"));
        assert!(before <= at && at <= after, "the event's time is now: {}", hit.describe());
        assert_eq!(hit.data("node"), node, "sent by this node: {}", hit.describe());
    }
    let data = |i: usize| &demo[i].json["data"];
    assert_eq!(keys(data(0)), set(&["room", "node"]), "room.started");
    assert_eq!(keys(data(1)), set(&["room", "node", "peer"]), "an anonymous peer without meta: no user, no meta");
    assert_eq!(keys(data(2)), set(&["room", "node", "peer", "user", "meta"]));
    assert_eq!(data(2)["user"], "alice", "the token's user");
    assert_eq!(data(2)["meta"], meta, "the meta as given");
    assert_eq!(keys(data(3)), set(&["room", "node", "peer", "reason"]));
    assert_eq!(keys(data(4)), set(&["room", "node", "peer", "user", "meta", "reason"]));
    assert_eq!((&data(4)["user"], &data(4)["meta"]), (&json!("alice"), &meta), "who left, as shown");
    assert_eq!(keys(data(5)), set(&["room", "node"]), "room.finished");
    // Every event was delivered at its first attempt.
    assert!(hits.iter().all(|h| h.attempt == 1));
    wait_metric(&server, &outcome("delivered"), |v| v == 8.0).await;
}

// ---------------------------------------------------------------------------
// 2. Two nodes: each event once, from the peer's own node
// ---------------------------------------------------------------------------

/// Two nodes over one Redis send to one URL. Four peers, two on each, join one
/// room and go (by `leave` and by dropping): every event arrives exactly once,
/// a peer's from its own node, `room.started` from the node that created the
/// room and `room.finished` from the node of the last to go.
#[tokio::test]
async fn two_nodes_send_each_event_once_from_the_peer_s_own_node() {
    let receiver = Receiver::start(ok()).await;
    let redis = Redis::start();
    let one = node(&redis, &receiver.url()).await;
    let two = node(&redis, &receiver.url()).await;
    let (one_id, two_id) = (node_id(&one).await, node_id(&two).await);
    assert_ne!(one_id, two_id);

    let mut a1 = one.client().await;
    let mut b1 = two.client().await;
    let mut a2 = one.client().await;
    let mut b2 = two.client().await;
    let id = |c: &Client| c.id().to_owned();
    let (a1_id, b1_id, a2_id, b2_id) = (id(&a1), id(&b1), id(&a2), id(&b2));

    a1.join("call").await.unwrap();
    b1.join("call").await.unwrap();
    assert_eq!(recv_type(&mut a1, "peer-joined").await["data"], b1_id);
    join_with_meta(&mut a2, "call", json!({"n": 2})).await;
    b2.join("call").await.unwrap();
    for client in [&mut a1, &mut b1, &mut a2] {
        // Every member has heard the room fill up before anyone goes.
        while recv_type(client, "peer-joined").await["data"] != b2_id {}
    }

    leave(&mut b1, "call").await;
    leave(&mut a1, "call").await;
    drop(a2);
    recv_peer_left(&mut b2, "call", &b1_id).await;
    recv_peer_left(&mut b2, "call", &a1_id).await;
    recv_peer_left(&mut b2, "call", &a2_id).await;
    b2.close().await.unwrap();

    receiver.wait_for("room.finished", "call", "").await;
    // Sentinels on both nodes; then a moment for anything a node heard late.
    let _s1 = sentinel(&one, &receiver, "sentinel-1").await;
    let _s2 = sentinel(&two, &receiver, "sentinel-2").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let hits = receiver.hits();
    assert_signed(&hits);
    let call = in_room(&hits, "call");
    let all = describe(&hits);
    // Exactly once, by id and by what it says.
    let ids: HashSet<&str> = hits.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), hits.len(), "no event arrived twice:\n{all}");
    let mut counts: HashMap<(String, String, String), usize> = HashMap::new();
    for event in summary(call.iter().copied()) {
        *counts.entry(event).or_default() += 1;
    }
    let expected = [
        (ev("room.started", "", ""), &one_id),
        (ev("peer.joined", &a1_id, ""), &one_id),
        (ev("peer.joined", &b1_id, ""), &two_id),
        (ev("peer.joined", &a2_id, ""), &one_id),
        (ev("peer.joined", &b2_id, ""), &two_id),
        (ev("peer.left", &b1_id, "left"), &two_id),
        (ev("peer.left", &a1_id, "left"), &one_id),
        (ev("peer.left", &a2_id, "disconnected"), &one_id),
        (ev("peer.left", &b2_id, "disconnected"), &two_id),
        (ev("room.finished", "", ""), &two_id),
    ];
    assert_eq!(call.len(), expected.len(), "ten events for the room:\n{all}");
    for (event, node) in &expected {
        assert_eq!(counts.get(event), Some(&1), "{event:?} exactly once:\n{all}");
        let hit = call.iter().find(|h| summary([**h])[0] == *event).unwrap();
        assert_eq!(hit.data("node"), node.as_str(), "{event:?} is sent by its peer's node:\n{all}");
    }
    let a2_joined = call.iter().find(|h| h.is("peer.joined", "call", &a2_id)).unwrap();
    assert_eq!(a2_joined.json["data"]["meta"], json!({"n": 2}));
    // Each node's events arrive in the order it saw them.
    for node in [&one_id, &two_id] {
        let arrived: Vec<_> = summary(call.iter().copied().filter(|h| h.data("node") == node.as_str()));
        let wanted: Vec<_> = expected.iter().filter(|(_, n)| *n == node).map(|(e, _)| e.clone()).collect();
        assert_eq!(arrived, wanted, "node {node}'s events in its order:\n{all}");
    }
}

// ---------------------------------------------------------------------------
// 3. A node dies
// ---------------------------------------------------------------------------

/// Of three nodes, one is killed with a peer in a room shared with both
/// survivors' peers and in a room of its own. One survivor reaps it and sends,
/// once each, the peer's `peer.left` (reason `node-lost`) for both rooms, and
/// `room.finished` for the room it emptied; the other survivor sends nothing.
#[tokio::test]
async fn a_killed_node_s_peer_leaves_once_as_node_lost_told_by_one_survivor() {
    let receiver = Receiver::start(ok()).await;
    let redis = Redis::start();
    let one = node(&redis, &receiver.url()).await;
    let two = node(&redis, &receiver.url()).await;
    let mut doomed = node(&redis, &receiver.url()).await;
    let (one_id, two_id, doomed_id) = (node_id(&one).await, node_id(&two).await, node_id(&doomed).await);

    let mut a = one.client().await;
    let mut c = two.client().await;
    let mut b = doomed.client().await;
    let b_id = b.id().to_owned();
    a.join("shared").await.unwrap();
    c.join("shared").await.unwrap();
    b.join("shared").await.unwrap();
    b.join("alone").await.unwrap();
    for survivor in [&mut a, &mut c] {
        while recv_type(survivor, "peer-joined").await["data"] != b_id.as_str() {}
    }
    // The dead node can tell nothing more: wait for what it told before.
    receiver.wait_for("peer.joined", "alone", &b_id).await;
    receiver.wait_for("peer.joined", "shared", &b_id).await;

    doomed.kill();
    for survivor in [&mut a, &mut c] {
        survivor.set_timeout(WAIT);
        recv_peer_left(survivor, "shared", &b_id).await;
    }
    receiver.wait_for("room.finished", "alone", "").await;
    receiver.wait_for("peer.left", "shared", &b_id).await;
    // After sentinels, and a further reaper round or two, nothing more.
    let _s1 = sentinel(&one, &receiver, "sentinel-1").await;
    let _s2 = sentinel(&two, &receiver, "sentinel-2").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let hits = receiver.hits();
    assert_signed(&hits);
    let all = describe(&hits);
    let lost: Vec<&Arc<Hit>> = hits.iter().filter(|h| h.kind() == "peer.left").collect();
    assert_eq!(lost.len(), 2, "one peer.left per room of the dead node's peer:\n{all}");
    let reaper = lost[0].data("node").to_owned();
    assert!(reaper == one_id || reaper == two_id, "told by a survivor, not the dead {doomed_id}:\n{all}");
    for room in ["shared", "alone"] {
        let left: Vec<_> = lost.iter().filter(|h| h.data("room") == room).collect();
        assert_eq!(left.len(), 1, "{room}: once:\n{all}");
        assert_eq!(left[0].data("peer"), b_id);
        assert_eq!(left[0].data("reason"), "node-lost");
        assert_eq!(left[0].data("node"), reaper, "by the one survivor that reaped:\n{all}");
    }
    let finished: Vec<_> = hits.iter().filter(|h| h.kind() == "room.finished").collect();
    assert_eq!(finished.len(), 1, "only the emptied room finished:\n{all}");
    assert_eq!((finished[0].data("room"), finished[0].data("node")), ("alone", reaper.as_str()));
    let alone = in_room(&hits, "alone");
    assert_eq!(
        summary(alone.iter().copied()),
        [
            ev("room.started", "", ""),
            ev("peer.joined", &b_id, ""),
            ev("peer.left", &b_id, "node-lost"),
            ev("room.finished", "", "")
        ],
        "\n{all}"
    );
    let ids: HashSet<&str> = hits.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), hits.len(), "no event twice:\n{all}");
}

// ---------------------------------------------------------------------------
// 4. Delivery: retries, refusals, a receiver that comes back
// ---------------------------------------------------------------------------

/// A URL where nothing listens yet: its events wait (retried) while another
/// URL of the same server gets all of them; once it listens, it gets every
/// one, in order, each under the id the other URL saw.
#[tokio::test]
async fn a_receiver_that_was_down_gets_every_event_in_order_and_another_url_is_not_held_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let late_url = format!("http://127.0.0.1:{port}/hooks");
    let healthy = Receiver::start(ok()).await;
    let server = server(&["--webhook-url", &late_url, "--webhook-url", &healthy.url(), "--webhook-retry-for", "30s"]);
    let down_until = Instant::now() + Duration::from_millis(2500);

    let mut a = server.client().await;
    let mut b = server.client().await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    leave(&mut a, "r").await;
    drop(b);
    let expected = [
        ev("room.started", "", ""),
        ev("peer.joined", &a_id, ""),
        ev("peer.joined", &b_id, ""),
        ev("peer.left", &a_id, "left"),
        ev("peer.left", &b_id, "disconnected"),
        ev("room.finished", "", ""),
    ];
    // The healthy URL has them all while the other is still down...
    let sent = healthy.wait_for("room.finished", "r", "").await;
    assert_eq!(summary(&sent), expected);
    assert_signed(&sent);
    // ...and the server has been failing to reach the other, for a while.
    wait_metric(&server, &outcome("retried"), |v| v >= 3.0).await;
    tokio::time::sleep_until(down_until.into()).await;

    let deadline = Instant::now() + WAIT;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(error) => assert!(Instant::now() < deadline, "cannot listen on {port} again: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let late = Receiver::serve(listener, ok());
    let hits = late.wait_for("room.finished", "r", "").await;
    let _sentinel = sentinel(&server, &late, "sentinel").await;
    let hits_then = late.hits();
    assert_signed(&hits_then);
    assert_eq!(summary(&hits), expected, "none lost, in order:\n{}", describe(&hits_then));
    assert_eq!(hits_then.len(), 8, "each once (the sentinel's two after):\n{}", describe(&hits_then));
    let late_ids: Vec<&str> = hits.iter().map(|h| h.id()).collect();
    let sent_ids: Vec<&str> = sent.iter().map(|h| h.id()).collect();
    assert_eq!(late_ids, sent_ids, "one id per event, at every URL");
}

/// The receiver answers 503, 500 and 429 to the first event, then 200; 400
/// to one later event. The first is retried under its id until delivered,
/// each attempt signed afresh, the others wait behind it in order; the 400 is
/// never sent again and the queue moves on.
#[tokio::test]
async fn failures_are_retried_under_one_id_and_a_4xx_is_not() {
    let responder = reply(|hit| {
        let status = match (hit.kind(), hit.data("room"), hit.data("reason"), hit.attempt) {
            ("room.started", "r", _, 1) => 503,
            ("room.started", "r", _, 2) => 500,
            ("room.started", "r", _, 3) => 429,
            ("peer.left", "r", "left", _) => 400,
            _ => 200,
        };
        (status, json!({}))
    });
    let receiver = Receiver::start(responder).await;
    let server = server(&["--webhook-url", &receiver.url(), "--webhook-retry-for", "30s"]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    leave(&mut a, "r").await;
    b.close().await.unwrap();
    receiver.wait_for("room.finished", "r", "").await;
    let sentinel = sentinel(&server, &receiver, "after").await;

    let hits = receiver.hits();
    assert_signed(&hits);
    let all = describe(&hits);
    let attempts: Vec<(String, String, usize, u16)> = hits
        .iter()
        .map(|h| (h.kind().to_owned(), h.data("peer").to_owned(), h.attempt, *h.status.get().unwrap_or(&0)))
        .collect();
    let at = |kind: &str, peer: &str, attempt, status| (kind.to_owned(), peer.to_owned(), attempt, status);
    assert_eq!(
        attempts,
        [
            at("room.started", "", 1, 503),
            at("room.started", "", 2, 500),
            at("room.started", "", 3, 429),
            at("room.started", "", 4, 200),
            at("peer.joined", &a_id, 1, 200),
            at("peer.joined", &b_id, 1, 200),
            at("peer.left", &a_id, 1, 400),
            at("peer.left", &b_id, 1, 200),
            at("room.finished", "", 1, 200),
            at("room.started", "", 1, 200),
            at("peer.joined", sentinel.id(), 1, 200),
        ],
        "\n{all}"
    );
    // The retried event: one id, one body, on every attempt.
    let first = &hits[0];
    let stamp = |h: &Hit| h.header("webhook-timestamp").parse::<u64>().expect("unix seconds");
    for (retry, before) in hits[1..4].iter().zip(&hits[..3]) {
        assert_eq!(retry.id(), first.id(), "a retry keeps its id:\n{all}");
        assert_eq!(retry.body, first.body, "and its body:\n{all}");
        assert!(stamp(retry) >= stamp(before), "each attempt is signed at its own time:\n{all}");
    }
    let ids: HashSet<&str> = hits[3..].iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), hits.len() - 3, "every other event has its own id:\n{all}");
    wait_metric(&server, &outcome("retried"), |v| v == 3.0).await;
    wait_metric(&server, &outcome("refused"), |v| v == 1.0).await;
    wait_metric(&server, &outcome("delivered"), |v| v == 7.0).await;
}

/// An event that keeps failing is given up after `--webhook-retry-for`; the
/// ones behind it are delivered.
#[tokio::test]
async fn an_event_that_keeps_failing_is_given_up_after_its_retry_period() {
    let responder = reply(|hit| (if hit.kind() == "room.started" { 503 } else { 200 }, json!({})));
    let receiver = Receiver::start(responder).await;
    let server = server(&["--webhook-url", &receiver.url(), "--webhook-retry-for", "1s"]);
    let mut a = server.client().await;
    a.join("r").await.unwrap();
    let hits = receiver.wait_for("peer.joined", "r", a.id()).await;
    assert_signed(&hits);
    let (started, rest) = hits.split_at(hits.len() - 1);
    assert!(started.len() >= 2, "retried before giving up:\n{}", describe(&hits));
    assert!(started.iter().all(|h| h.kind() == "room.started" && h.id() == started[0].id()), "{}", describe(&hits));
    assert_eq!(summary(rest), [ev("peer.joined", a.id(), "")]);
    wait_metric(&server, &outcome("expired"), |v| v == 1.0).await;
    wait_metric(&server, &outcome("delivered"), |v| v == 1.0).await;
}

/// An attempt that gets no answer within 5 s is abandoned and retried, under
/// the same id.
#[tokio::test]
async fn an_attempt_without_an_answer_in_time_is_retried() {
    let responder: Responder = Arc::new(|hit: Arc<Hit>| {
        Box::pin(async move {
            if hit.kind() == "room.started" && hit.attempt == 1 {
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            (200u16, json!({}))
        }) as Reply
    });
    let receiver = Receiver::start(responder).await;
    let server = server(&["--webhook-url", &receiver.url(), "--webhook-retry-for", "30s"]);
    let mut a = server.client().await;
    a.join("r").await.unwrap();
    let hits = receiver.wait_for("peer.joined", "r", a.id()).await;
    assert_signed(&hits);
    let all = describe(&hits);
    assert_eq!(
        hits.iter().map(|h| (h.kind(), h.attempt)).collect::<Vec<_>>(),
        [("room.started", 1), ("room.started", 2), ("peer.joined", 1)],
        "\n{all}"
    );
    assert_eq!(hits[0].id(), hits[1].id(), "retried under its id:\n{all}");
    wait_metric(&server, &outcome("retried"), |v| v == 1.0).await;
}

/// A URL's queue holds `--webhook-queue` events: while its receiver is down,
/// the events that do not fit are dropped (the newest), counted; the rest
/// arrive once it is back.
#[tokio::test]
async fn events_beyond_a_full_queue_are_dropped_and_counted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let server = server(&["--webhook-url", &url, "--webhook-retry-for", "30s", "--webhook-queue", "2"]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    // room.started and peer.joined a: the two fit.
    a.join("r").await.unwrap();
    // The sender has taken room.started (it is failing), which frees a place.
    wait_metric(&server, &outcome("retried"), |v| v >= 1.0).await;
    b.join("r").await.unwrap(); // peer.joined b: fits
    leave(&mut a, "r").await; // peer.left a: dropped
    leave(&mut b, "r").await; // peer.left b, room.finished: dropped
    wait_metric(&server, &outcome("dropped"), |v| v == 3.0).await;

    let deadline = Instant::now() + WAIT;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(error) => assert!(Instant::now() < deadline, "cannot listen on {port} again: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let receiver = Receiver::serve(listener, ok());
    receiver.wait_for("peer.joined", "r", &b_id).await;
    let _sentinel = sentinel(&server, &receiver, "sentinel").await;
    let hits = receiver.hits();
    assert_signed(&hits);
    assert_eq!(
        summary(in_room(&hits, "r")),
        [ev("room.started", "", ""), ev("peer.joined", &a_id, ""), ev("peer.joined", &b_id, "")],
        "\n{}",
        describe(&hits)
    );
    assert_eq!(hits.len(), 5, "and the sentinel's two:\n{}", describe(&hits));
}

// ---------------------------------------------------------------------------
// 5. The join hook
// ---------------------------------------------------------------------------

/// The hook's answers, by room.
fn hook_answers() -> Responder {
    reply(|hit| {
        let meta = &hit.json["meta"];
        let answer = match hit.json["room"].as_str().unwrap_or("") {
            "open" | "sentinel" => json!({"allow": true}),
            "badge" => json!({"allow": true, "meta": {"badge": "gold"}}),
            "pair" => json!({"allow": true, "capacity": 1}),
            "late-cap" if meta["cap"] == 1 => json!({"allow": true, "capacity": 1}),
            "late-cap" => json!({"allow": true}),
            "closed" => json!({"allow": false, "reason": "members only"}),
            "broken" => return (500, json!({})),
            _ => json!({"allow": false, "reason": "unknown room"}),
        };
        (200, answer)
    })
}

async fn expect_error(client: &mut Client, code: &str) -> Value {
    let error = recv_type(client, "error").await;
    assert_eq!(error["code"], code, "{error}");
    error
}

/// Allow, allow with the hook's meta, allow with a capacity, deny; each
/// request signed and carrying the peer, its user, the room and its meta.
#[tokio::test]
async fn the_join_hook_admits_replaces_meta_sets_capacity_and_refuses() {
    let hook = Receiver::start(hook_answers()).await;
    let events = Receiver::start(ok()).await;
    let server = server(&[
        "--join-hook-url",
        &hook.url(),
        "--join-hook-timeout",
        "10s",
        "--webhook-url",
        &events.url(),
        "--auth",
        "optional",
        "--auth-secret",
        AUTH_SECRET,
    ]);
    let token = token_for(&server, "carol").await;
    let mut x = server.client().await;
    let mut y = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await.unwrap();
    let mut z = server.client().await;
    let (x_id, y_id) = (x.id().to_owned(), y.id().to_owned());

    // Allow: joined; the request says who, as whom, where, with what.
    join_with_meta(&mut x, "open", json!({"n": 1})).await;
    let asked = hook.hits();
    assert_eq!(asked.len(), 1);
    assert_signed(&asked);
    assert_eq!(asked[0].json, json!({"peer": x_id, "user": null, "room": "open", "meta": {"n": 1}}));
    assert!(asked[0].id().starts_with("msg_"));
    assert!(asked[0].header("content-type").starts_with("application/json"));
    y.join("open").await.expect("allowed");
    assert_eq!(hook.hits()[1].json, json!({"peer": y_id, "user": "carol", "room": "open", "meta": null}));

    // Allow with meta: the hook's meta is what the room, and the webhooks, see.
    join_past(&mut x, json!({"type": "join", "room": "badge"})).await;
    join_past(&mut y, json!({"type": "join", "room": "badge", "meta": {"name": "Carol", "badge": "none"}})).await;
    let joined = loop {
        let message = recv_type(&mut x, "peer-joined").await;
        if message["room"] == "badge" {
            break message;
        }
    };
    assert_eq!(joined["data"], y_id);
    assert_eq!(joined["meta"], json!({"badge": "gold"}), "the hook's meta replaces the peer's: {joined}");
    assert_eq!(joined["user"], "carol", "the user stays: {joined}");
    z.send(&json!({"type": "join", "room": "badge"})).await.unwrap();
    let seen = recv_type(&mut z, "joined").await;
    let peers = seen["peers"].as_array().unwrap();
    assert!(peers.iter().all(|p| p["meta"] == json!({"badge": "gold"})), "as newcomers see them too: {seen}");
    let told = events.wait_for("peer.joined", "badge", &y_id).await;
    let told = told.iter().find(|h| h.is("peer.joined", "badge", &y_id)).unwrap();
    assert_eq!(told.json["data"]["meta"], json!({"badge": "gold"}), "{}", told.describe());

    // Allow with a capacity: it applies to the room the join creates.
    let pair = join_past(&mut x, json!({"type": "join", "room": "pair"})).await;
    assert_eq!(pair["capacity"], 1, "{pair}");
    y.send(&json!({"type": "join", "room": "pair", "rid": 5})).await.unwrap();
    let full = expect_error(&mut y, "room-full").await;
    assert_eq!(full["rid"], 5);
    // ...and not to a room that exists already.
    join_past(&mut x, json!({"type": "join", "room": "late-cap"})).await;
    join_past(&mut y, json!({"type": "join", "room": "late-cap", "meta": {"cap": 1}})).await;
    z.send(&json!({"type": "join", "room": "late-cap"})).await.unwrap();
    assert_eq!(recv_type(&mut z, "joined").await["room"], "late-cap", "the room was made without a capacity");

    // Deny: forbidden, with the hook's reason.
    z.send(&json!({"type": "join", "room": "closed", "rid": "c"})).await.unwrap();
    let refused = expect_error(&mut z, "forbidden").await;
    assert_eq!(refused["message"], "members only");
    assert_eq!(refused["rid"], "c");
    // A hook that fails (500): unavailable, by default.
    z.send(&json!({"type": "join", "room": "broken"})).await.unwrap();
    expect_error(&mut z, "unavailable").await;
    // A refused join left no trace in the webhooks.
    let _sentinel = sentinel(&server, &events, "sentinel").await;
    let told = events.hits();
    assert!(told.iter().all(|h| !["closed", "broken"].contains(&h.data("room"))), "{}", describe(&told));
    assert!(!told.iter().any(|h| h.is("peer.joined", "pair", &y_id)), "{}", describe(&told));

    let asked = hook.hits();
    assert_signed(&asked);
    let ids: HashSet<&str> = asked.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), asked.len(), "every request its own id");
    assert_eq!(asked.iter().filter(|h| h.json["room"] == "closed").count(), 1, "asked once per join");
    assert_eq!(metric(&server, "switchboard_join_hook_total{outcome=\"denied\"}").await, Some(1.0));
}

/// A hook that answers too late: the join is refused as `unavailable`, or,
/// with `--join-hook-failure allow`, admitted.
#[tokio::test]
async fn a_join_hook_that_answers_too_late_refuses_or_admits_as_configured() {
    let slow: Responder = Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (200u16, json!({"allow": false, "reason": "too late to matter"}))
        }) as Reply
    });
    let hook = Receiver::start(slow).await;
    let deny = server(&["--join-hook-url", &hook.url(), "--join-hook-timeout", "300ms"]);
    let allow =
        server(&["--join-hook-url", &hook.url(), "--join-hook-timeout", "300ms", "--join-hook-failure", "allow"]);

    let mut refused = deny.client().await;
    refused.send(&json!({"type": "join", "room": "slow", "rid": 1})).await.unwrap();
    let error = expect_error(&mut refused, "unavailable").await;
    assert_eq!(error["rid"], 1);
    // Not in the room: a second try is a fresh join (asked again), not already-joined.
    refused.send(&json!({"type": "join", "room": "slow"})).await.unwrap();
    expect_error(&mut refused, "unavailable").await;
    assert_eq!(metric(&deny, "switchboard_join_hook_total{outcome=\"failed\"}").await, Some(2.0));

    let mut admitted = allow.client().await;
    admitted.join("slow").await.expect("admitted when the hook fails, with --join-hook-failure allow");
    let mut other = allow.client().await;
    let peers = other.join("slow").await.expect("admitted");
    assert_eq!(peers.len(), 1, "the first is really in the room");

    let asked = hook.wait_until("four requests", |h| h.len() >= 4).await;
    assert_signed(&asked);
}

/// A join hook that admits everything, but holds joins to room "gated" until
/// the returned gate is opened.
fn gated_hook() -> (Arc<Notify>, Responder) {
    let gate = Arc::new(Notify::new());
    let opened = gate.clone();
    let responder: Responder = Arc::new(move |hit: Arc<Hit>| {
        let gate = opened.clone();
        Box::pin(async move {
            if hit.json["room"] == "gated" {
                gate.notified().await;
            }
            (200u16, json!({"allow": true}))
        }) as Reply
    });
    (gate, responder)
}

/// While one peer's join waits on a slow hook, the peers already in rooms
/// relay, broadcast and join as usual; the waiting join ends when the hook
/// answers.
#[tokio::test]
async fn a_slow_join_hook_holds_up_only_its_own_join() {
    let (gate, responder) = gated_hook();
    let hook = Receiver::start(responder).await;
    let server = server(&["--join-hook-url", &hook.url(), "--join-hook-timeout", "60s"]);
    let mut x = server.client().await;
    let mut y = server.client().await;
    let mut z = server.client().await;
    let (x_id, y_id) = (x.id().to_owned(), y.id().to_owned());
    x.join("open").await.unwrap();
    y.join("open").await.unwrap();
    assert_eq!(recv_type(&mut x, "peer-joined").await["data"], y_id);

    z.send(&json!({"type": "join", "room": "gated", "rid": "g"})).await.unwrap();
    hook.wait_until("z's join", |hits| hits.iter().any(|h| h.json["room"] == "gated")).await;

    // The hook is holding z's join; the others carry on.
    x.send(&json!({"type": "broadcast", "room": "open", "data": {"n": 1}})).await.unwrap();
    let broadcast = recv_type(&mut y, "broadcast").await;
    assert_eq!((&broadcast["from"], &broadcast["data"]), (&json!(x_id), &json!({"n": 1})));
    x.send(&json!({"type": "offer", "target": y_id, "sdp": "v=0"})).await.unwrap();
    let offer = recv_type(&mut y, "offer").await;
    assert_eq!((&offer["from"], &offer["sdp"]), (&json!(x_id), &json!("v=0")));
    let mut w = server.client().await;
    w.join("open").await.expect("another join is asked and answered meanwhile");
    assert_quiet(&mut z, Duration::from_millis(300)).await;
    let gated = hook.hits().into_iter().find(|h| h.json["room"] == "gated").unwrap();
    assert!(gated.status.get().is_none(), "the hook is still holding z's join: {}", gated.describe());

    gate.notify_one();
    let joined = recv_type(&mut z, "joined").await;
    assert_eq!((&joined["room"], &joined["rid"]), (&json!("gated"), &json!("g")));
    assert_signed(&hook.hits());
}

/// A resumed session is not asked about again and tells no webhook; when it
/// is not resumed in time it leaves as `timed-out`.
#[tokio::test]
async fn a_resumed_session_asks_no_hook_and_tells_nothing_until_it_times_out() {
    let hook = Receiver::start(reply(|_| (200, json!({"allow": true})))).await;
    let events = Receiver::start(ok()).await;
    let server = server(&[
        "--join-hook-url",
        &hook.url(),
        "--join-hook-timeout",
        "10s",
        "--webhook-url",
        &events.url(),
        "--resume-grace",
        "3s",
    ]);
    let mut a = server.client().await;
    a.join("room").await.unwrap();
    let b = Client::connect_resumable(&server.ws_url("/ws"), None).await.unwrap();
    let (b_id, token) = (b.id().to_owned(), b.resume_token().expect("a resume token").to_owned());
    let mut b = b;
    b.join("room").await.unwrap();
    drop(b); // lost, not closed: suspended for the grace period

    let b = Client::connect_resumable(&server.ws_url("/ws"), Some(&token)).await.unwrap();
    assert!(b.resumed(), "resumed");
    assert_eq!((b.id(), b.rooms()), (b_id.as_str(), &["room".to_owned()][..]));
    let _sentinel = sentinel(&server, &events, "sentinel").await;
    let asked_for_b = hook.hits().iter().filter(|h| h.json["peer"] == b_id.as_str()).count();
    assert_eq!(asked_for_b, 1, "asked at the join, not at the resume");
    let told = events.hits();
    assert_eq!(
        summary(in_room(&told, "room")),
        [ev("room.started", "", ""), ev("peer.joined", a.id(), ""), ev("peer.joined", &b_id, "")],
        "the resume told nothing:\n{}",
        describe(&told)
    );

    drop(b);
    let told = events.wait_for("peer.left", "room", &b_id).await;
    let left = told.iter().find(|h| h.is("peer.left", "room", &b_id)).unwrap();
    assert_eq!(left.data("reason"), "timed-out", "{}", left.describe());
    recv_peer_left(&mut a, "room", &b_id).await;
    assert_signed(&events.hits());
    assert_signed(&hook.hits());
}

/// A session waiting for its resume that the server API removes leaves as
/// `kicked`, at once.
#[tokio::test]
async fn a_suspended_session_removed_by_the_api_leaves_as_kicked() {
    let events = Receiver::start(ok()).await;
    let server = server(&["--webhook-url", &events.url(), "--resume-grace", "60s"]);
    let mut a = server.client().await;
    a.join("room").await.unwrap();
    let mut b = Client::connect_resumable(&server.ws_url("/ws"), None).await.unwrap();
    let b_id = b.id().to_owned();
    b.join("room").await.unwrap();
    drop(b);
    // Suspended once the server has noticed; until then the removal closes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = api(&server, reqwest::Method::DELETE, &format!("/peers/{b_id}"), None).await;
    assert_eq!(status, 204, "{body}");
    recv_peer_left(&mut a, "room", &b_id).await;
    let told = events.wait_for("peer.left", "room", &b_id).await;
    let left: Vec<_> = told.iter().filter(|h| h.kind() == "peer.left").collect();
    assert_eq!(left.len(), 1, "{}", describe(&told));
    assert_eq!(left[0].data("reason"), "kicked", "{}", left[0].describe());
    let _sentinel = sentinel(&server, &events, "sentinel").await;
    let told = events.hits();
    assert_eq!(told.iter().filter(|h| h.kind() == "peer.left").count(), 1, "once:\n{}", describe(&told));
    assert_signed(&told);
}

// ---------------------------------------------------------------------------
// 6. Removals by the server API, on two nodes
// ---------------------------------------------------------------------------

/// A peer removed through the API leaves as `kicked`, told by its own node; a
/// room closed through the API tells `room-closed` for every member and
/// `room.finished`, once, from the node that closed it.
#[tokio::test]
async fn removals_by_the_server_api_are_told_once_as_kicked_and_room_closed() {
    let receiver = Receiver::start(ok()).await;
    let redis = Redis::start();
    let one = node(&redis, &receiver.url()).await;
    let two = node(&redis, &receiver.url()).await;
    let (one_id, two_id) = (node_id(&one).await, node_id(&two).await);
    let mut a = one.client().await;
    let mut b = two.client().await;
    let mut c = two.client().await;
    let (a_id, b_id, c_id) = (a.id().to_owned(), b.id().to_owned(), c.id().to_owned());
    a.join("talk").await.unwrap();
    b.join("talk").await.unwrap();
    c.join("talk").await.unwrap();
    receiver.wait_for("peer.joined", "talk", &c_id).await;

    // Removed on node one's API; b is on node two.
    let (status, body) = api(&one, reqwest::Method::DELETE, &format!("/peers/{b_id}"), None).await;
    assert_eq!(status, 204, "{body}");
    recv_peer_left(&mut a, "talk", &b_id).await;
    recv_peer_left(&mut c, "talk", &b_id).await;

    let (status, body) = api(&one, reqwest::Method::DELETE, "/rooms/talk", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(recv_type(&mut a, "room-closed").await["room"], "talk");
    assert_eq!(recv_type(&mut c, "room-closed").await["room"], "talk");
    // Going now tells nothing more: they are out of the room already.
    drop(a);
    drop(c);
    receiver.wait_for("room.finished", "talk", "").await;
    let _s1 = sentinel(&one, &receiver, "sentinel-1").await;
    let _s2 = sentinel(&two, &receiver, "sentinel-2").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let hits = receiver.hits();
    assert_signed(&hits);
    let all = describe(&hits);
    let talk = in_room(&hits, "talk");
    let after_joins: Vec<_> =
        talk.iter().copied().filter(|h| h.kind() != "peer.joined" && h.kind() != "room.started").collect();
    let mut got: Vec<_> = after_joins.iter().map(|h| (summary([*h])[0].clone(), h.data("node").to_owned())).collect();
    got.sort();
    let mut want = vec![
        (ev("peer.left", &b_id, "kicked"), two_id.clone()),
        (ev("peer.left", &a_id, "room-closed"), one_id.clone()),
        (ev("peer.left", &c_id, "room-closed"), one_id.clone()),
        (ev("room.finished", "", ""), one_id.clone()),
    ];
    want.sort();
    assert_eq!(got, want, "\n{all}");
    let closing: Vec<_> =
        summary(talk.iter().copied().filter(|h| h.kind() != "peer.joined" && h.data("node") == one_id));
    assert_eq!(closing.last(), Some(&ev("room.finished", "", "")), "the closing node tells room.finished last:\n{all}");
    let ids: HashSet<&str> = hits.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), hits.len(), "no event twice:\n{all}");
}

// ---------------------------------------------------------------------------
// 7. Dialects are not told, nor asked about
// ---------------------------------------------------------------------------

/// A y-webrtc topic is a room of its own namespace: subscribing to it asks no
/// join hook and tells no webhook.
#[tokio::test]
async fn dialect_rooms_ask_no_hook_and_tell_no_webhook() {
    let hook = Receiver::start(reply(|_| (200, json!({"allow": true})))).await;
    let events = Receiver::start(ok()).await;
    let server = server(&["--join-hook-url", &hook.url(), "--webhook-url", &events.url()]);
    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("/y-webrtc")).await.expect("y-webrtc");
    socket.send(Message::text(json!({"type": "subscribe", "topics": ["doc"]}).to_string())).await.unwrap();
    socket.send(Message::text(json!({"type": "publish", "topic": "doc", "data": 1}).to_string())).await.unwrap();
    socket.send(Message::text(json!({"type": "ping"}).to_string())).await.unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("pong in time").unwrap().unwrap();
        if message.to_text().unwrap_or("").contains("pong") {
            break;
        }
    }
    socket.close(None).await.unwrap();
    drop(socket);
    wait_metric(&server, "switchboard_connections{endpoint=\"y-webrtc\"}", |v| v == 0.0).await;

    let peer = sentinel(&server, &events, "native").await;
    let told = events.hits();
    assert_eq!(summary(&told), [ev("room.started", "", ""), ev("peer.joined", peer.id(), "")], "{}", describe(&told));
    let asked = hook.hits();
    assert_eq!(asked.len(), 1, "{}", describe(&asked));
    assert_eq!(asked[0].json["room"], "native");
    assert_signed(&asked);
    assert_signed(&told);
}

/// A peer whose connection goes while the hook holds its join leaves no ghost:
/// the join the hook admits is undone at once (`peer.left`, `room.finished`).
#[tokio::test]
async fn a_peer_that_goes_while_the_hook_holds_its_join_leaves_no_ghost() {
    let (gate, responder) = gated_hook();
    let hook = Receiver::start(responder).await;
    let events = Receiver::start(ok()).await;
    let server =
        server(&["--join-hook-url", &hook.url(), "--join-hook-timeout", "60s", "--webhook-url", &events.url()]);
    let mut z = server.client().await;
    let z_id = z.id().to_owned();
    z.send(&json!({"type": "join", "room": "gated"})).await.unwrap();
    hook.wait_until("z's join", |hits| hits.iter().any(|h| h.json["room"] == "gated")).await;
    drop(z);
    gate.notify_one();

    let told = events.wait_for("room.finished", "gated", "").await;
    assert_eq!(
        summary(&told),
        [
            ev("room.started", "", ""),
            ev("peer.joined", &z_id, ""),
            ev("peer.left", &z_id, "disconnected"),
            ev("room.finished", "", "")
        ],
        "{}",
        describe(&told)
    );
    let (status, body) = api(&server, reqwest::Method::GET, "/rooms/gated", None).await;
    assert_eq!(status, 404, "no member left behind: {body}");
    assert_signed(&told);
}

/// On SIGTERM the server closes its peers: their departures and the rooms'
/// ends are queued then, and must still reach the receiver before the process
/// exits (here a receiver that takes 200 ms per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // waiting for the exit blocks a thread

async fn the_departures_of_a_graceful_shutdown_are_delivered_before_exit() {
    let slow: Responder = Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (200u16, json!({}))
        }) as Reply
    });
    let events = Receiver::start(slow).await;
    let mut server = server(&["--webhook-url", &events.url()]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    events.wait_for("peer.joined", "r", &b_id).await;
    // The clients read on, as real ones do: they answer the close handshake at once.
    for mut client in [a, b] {
        tokio::spawn(async move { while !matches!(client.recv_text().await, Err(ClientError::Closed(_))) {} });
    }

    server.terminate();
    assert!(server.wait_exit(WAIT).is_some(), "the server exits");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let told = events.hits();
    let mut left: Vec<_> = summary(told.iter().filter(|h| h.kind() == "peer.left"));
    left.sort();
    let mut want = vec![ev("peer.left", &a_id, "disconnected"), ev("peer.left", &b_id, "disconnected")];
    want.sort();
    assert_eq!(left, want, "every departure told:\n{}", describe(&told));
    assert_eq!(told.last().map(|h| h.kind()), Some("room.finished"), "and the room's end:\n{}", describe(&told));
    assert_signed(&told);
}
