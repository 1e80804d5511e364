//! The server API (`/api/v1/`), against the real binary over real HTTP: on one
//! node, and on two nodes sharing rooms over a real Redis with the API called
//! on one node about peers on the other.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use switchboard_client::{Client, ClientError};

const KEY: &str = "test-api-key-0123456789";
const OTHER_KEY: &str = "rotated-api-key-9876543210";

/// An API client for one server.
struct Api {
    base: String,
    http: reqwest::Client,
    key: String,
}

impl Api {
    fn new(addr: std::net::SocketAddr) -> Api {
        Api { base: format!("http://{addr}/api/v1"), http: reqwest::Client::new(), key: KEY.into() }
    }

    fn with_key(mut self, key: &str) -> Api {
        self.key = key.into();
        self
    }

    /// A request: its status and JSON body (`null` when empty).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        // Routes that are not the API's (it is off, or elsewhere) answer in plain text.
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body.to_string())).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn with_api(extra: &[&str]) -> Server {
    let mut args = vec!["--api-key", KEY, "--api-key", OTHER_KEY, "--rate-limit-messages", "0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn client(server: &Server) -> Client {
    let mut client = server.client().await;
    client.set_timeout(Duration::from_secs(10));
    client
}

async fn recv_json(client: &mut Client) -> Value {
    serde_json::from_str(&client.recv_text().await.expect("a message")).expect("JSON")
}

/// Reads until a message of type `kind`; fails on a `peer-left` first if `no_peer_left`.
async fn recv_type(client: &mut Client, kind: &str) -> Value {
    for _ in 0..50 {
        let message = recv_json(client).await;
        if message["type"] == kind {
            return message;
        }
    }
    panic!("no {kind}");
}

/// The close frame the server ends a client's connection with.
async fn closed_with(client: &mut Client) -> (u16, String) {
    loop {
        match client.recv_text().await {
            Ok(_) => continue,
            Err(ClientError::Closed(Some(frame))) => return (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn assert_quiet(client: &mut Client) {
    client.set_timeout(Duration::from_millis(300));
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(Duration::from_secs(10));
}

#[tokio::test]
async fn without_a_key_the_api_and_dashboard_are_not_there() {
    let server = Server::start(&[]);
    let api = Api::new(server.addr);
    assert_eq!(api.get("/rooms").await.0, 404);
    assert_eq!(support::http_get(server.addr, "/admin").await.0, 404);
}

#[tokio::test]
async fn every_call_needs_a_configured_key_and_errors_are_json_with_stable_codes() {
    let server = with_api(&[]);
    for key in ["", "wrong-key-wrong-key-wrong"] {
        let (status, body) = Api::new(server.addr).with_key(key).get("/rooms").await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    }
    let (status, _) = reqwest::Client::new()
        .get(format!("http://{}/api/v1/nodes", server.addr))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "no Authorization header");
    // Both configured keys work: keys rotate without downtime.
    assert_eq!(Api::new(server.addr).get("/rooms").await, (200, json!({"rooms": [], "next_cursor": null})));
    assert_eq!(Api::new(server.addr).with_key(OTHER_KEY).get("/rooms").await.0, 200);

    let api = Api::new(server.addr);
    assert_eq!(api.get("/rooms/nowhere").await.1["code"], "unknown-room");
    assert_eq!(api.get("/no-such-route").await.0, 404);
    assert_eq!(api.post("/peers/AAAAAAAAAAAAAAAAAAAAAB/send", json!({"data": 1})).await.1["code"], "unknown-target");
    assert_eq!(api.delete("/peers/not-an-id").await.1["code"], "unknown-target");
    let bad = api.call(reqwest::Method::POST, "/rooms/x/broadcast", Some("{not json".into())).await;
    assert_eq!((bad.0, bad.1["code"].as_str()), (400, Some("malformed-json")));
    let missing = api.post("/rooms/x/broadcast", json!({"nothing": 1})).await;
    assert_eq!((missing.0, missing.1["code"].as_str()), (400, Some("invalid-field")));
    let huge = json!({"data": "x".repeat(1024 * 1024 + 1)}).to_string();
    let big = api.call(reqwest::Method::POST, "/rooms/x/broadcast", Some(huge)).await;
    assert_eq!((big.0, big.1["code"].as_str()), (413, Some("message-too-large")));
    assert_eq!(api.get("/rooms?limit=0").await.1["code"], "invalid-field");
    assert_eq!(api.get("/rooms?cursor=%25%25").await.1["code"], "invalid-field");

    // Logged by the key's fingerprint, never the key; counted.
    let calls = server.wait_log_lines("api call", 12).await;
    assert!(calls.len() >= 12, "{}", server.logs());
    assert!(!server.logs().contains(KEY), "the key itself is never logged");
    assert!(server.metric("switchboard_api_requests_total{route=\"rooms\",status=\"401\"}").await >= 2.0);
}

/// Rooms are listed by name, a page at a time; members with their user, meta,
/// node and join time.
#[tokio::test]
async fn rooms_and_their_members_are_listed_and_paginated() {
    let secret = "api-test-secret-api-test-secret";
    let server = with_api(&["--auth", "optional", "--auth-secret", secret]);
    let api = Api::new(server.addr);
    let (status, minted) = api.post("/tokens", json!({"sub": "alice", "rooms": ["b-room"], "ttl": "1h"})).await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["token"].as_str().expect("a token");
    let mut alice = Client::connect(&server.ws_url(&format!("/ws?token={token}"))).await.unwrap();
    alice.join_with(json!({"type": "join", "room": "b-room", "meta": {"name": "Alice"}})).await.unwrap();
    assert!(alice.join("c-room").await.is_err(), "the minted token keeps its rooms claim");
    let mut others = Vec::new();
    for room in ["a-room", "b-room", "c-room"] {
        let mut peer = client(&server).await;
        peer.join(room).await.unwrap();
        others.push(peer);
    }
    let (_, first) = api.get("/rooms?limit=2").await;
    let names: Vec<&str> = first["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a-room", "b-room"], "{first}");
    assert_eq!(first["rooms"][1]["members"], 2);
    assert!(first["rooms"][1]["created"].as_str().is_some_and(|t| t.ends_with('Z')), "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = api.get(&format!("/rooms?limit=2&cursor={cursor}")).await;
    assert_eq!(second["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(second["rooms"][0]["name"], "c-room");
    assert_eq!(second["next_cursor"], Value::Null);

    let (status, room) = api.get("/rooms/b-room").await;
    assert_eq!(status, 200);
    let members = room["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["id"], alice.id());
    assert_eq!(members[0]["user"], "alice");
    assert_eq!(members[0]["meta"], json!({"name": "Alice"}));
    assert!(members[0]["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(members[0]["joined"].as_str().is_some());
    assert!(members[1].get("user").is_none(), "an anonymous peer has no user: {room}");

    let (_, nodes) = api.get("/nodes").await;
    let node = &nodes["nodes"][0];
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    assert_eq!((node["connections"].as_u64(), node["rooms"].as_u64()), (Some(4), Some(3)), "{nodes}");
    assert_eq!(node["address"], server.addr.to_string());
    assert_eq!(node["id"], members[0]["node"]);
    assert!(node["messages_in"].as_u64().unwrap() >= 4, "the joins were counted");
}

/// Everything an app's backend steers, on one node or across two.
async fn steer(a_server: &Server, b_server: &Server) {
    let api = Api::new(a_server.addr);
    let mut a = client(a_server).await;
    let mut b = client(b_server).await;
    let mut c = client(b_server).await;
    a.join("call").await.unwrap();
    b.join("call").await.unwrap();
    c.join("call").await.unwrap();
    recv_type(&mut a, "peer-joined").await;
    recv_type(&mut a, "peer-joined").await;
    recv_type(&mut b, "peer-joined").await;

    // The room's members, across nodes.
    let (_, room) = api.get("/rooms/call").await;
    let listed: Vec<&str> = room["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [a.id(), b.id(), c.id()]);

    // A broadcast from the server reaches everyone, the senderless way.
    assert_eq!(api.post("/rooms/call/broadcast", json!({"data": {"notice": 1}})).await.0, 204);
    for peer in [&mut a, &mut b, &mut c] {
        let broadcast = recv_type(peer, "broadcast").await;
        assert_eq!(broadcast, json!({"type": "broadcast", "from": "server", "room": "call", "data": {"notice": 1}}));
    }
    assert_eq!(api.post("/rooms/nobody-here/broadcast", json!({"data": 1})).await.1["code"], "unknown-room");

    // A message for one peer, wherever it is.
    assert_eq!(api.post(&format!("/peers/{}/send", b.id()), json!({"data": [1, "two"]})).await.0, 204);
    assert_eq!(recv_json(&mut b).await, json!({"type": "server-message", "data": [1, "two"]}));
    assert_quiet(&mut a).await;

    // Removing a peer closes it with the code asked for; the room hears it leave.
    let (status, body) = api.delete(&format!("/peers/{}?code=3000", c.id())).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid-field")), "codes are 4000-4999");
    assert_eq!(api.delete(&format!("/peers/{}?code=4010&reason=abuse", c.id())).await.0, 204);
    assert_eq!(closed_with(&mut c).await, (4010, "abuse".to_owned()));
    for peer in [&mut a, &mut b] {
        let left = recv_type(peer, "peer-left").await;
        assert_eq!(left["data"], c.id());
    }
    assert_eq!(api.delete(&format!("/peers/{}", c.id())).await.1["code"], "unknown-target", "gone");

    // Closing the room: its members are told once, and hear no peer-left for each other.
    assert_eq!(api.delete("/rooms/call").await.0, 204);
    for peer in [&mut a, &mut b] {
        assert_eq!(recv_json(peer).await, json!({"type": "room-closed", "room": "call"}));
        assert_quiet(peer).await;
    }
    assert_eq!(api.get("/rooms/call").await.1["code"], "unknown-room");
    assert_eq!(api.delete("/rooms/call").await.1["code"], "unknown-room");
    // Out of the room for good: a relay into it is refused, and a new join works.
    a.relay("offer", b.id(), json!({"sdp": "v=0"})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["code"], "not-in-room");
    a.join("call").await.expect("a closed room can be joined afresh");
    b.join("call").await.expect("by everyone it held");
    assert_eq!(recv_type(&mut a, "peer-joined").await["data"], b.id());
}

#[tokio::test]
async fn a_backend_steers_rooms_and_peers_on_one_node() {
    let server = with_api(&[]);
    steer(&server, &server).await;
}

#[tokio::test]
async fn a_backend_steers_rooms_and_peers_on_another_node_over_redis() {
    let redis = Redis::start();
    let node = |redis: &Redis| with_api(&["--redis", &redis.url(), "--node-ttl", "1s", "--redis-timeout", "500ms"]);
    let (one, two) = (node(&redis), node(&redis));
    one.wait_broker_up().await;
    two.wait_broker_up().await;
    steer(&one, &two).await;

    // Both nodes are listed, each with its own connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, nodes) = Api::new(one.addr).get("/nodes").await;
        let addresses: Vec<&str> =
            nodes["nodes"].as_array().unwrap().iter().map(|n| n["address"].as_str().unwrap()).collect();
        if addresses.len() == 2 {
            assert!(
                addresses.contains(&one.addr.to_string().as_str())
                    && addresses.contains(&two.addr.to_string().as_str())
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rooms cluster-wide, from either node.
    let mut peer = client(&two).await;
    peer.join("elsewhere").await.unwrap();
    let (_, rooms) = Api::new(one.addr).get("/rooms").await;
    let names: Vec<&str> = rooms["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"elsewhere"), "{rooms}");
}

/// A removed session is over: it cannot be resumed, even if it was waiting
/// for a resume when it was removed.
#[tokio::test]
async fn a_removed_peer_cannot_resume_its_session() {
    let server = with_api(&[]);
    let api = Api::new(server.addr);
    let mut watcher = client(&server).await;
    watcher.join("r").await.unwrap();

    let mut live = Client::connect_resumable(&server.ws_url("/ws"), None).await.unwrap();
    live.join("r").await.unwrap();
    let token = live.resume_token().unwrap().to_owned();
    assert_eq!(api.delete(&format!("/peers/{}", live.id())).await.0, 204);
    assert_eq!(closed_with(&mut live).await, (4003, "removed by the server".to_owned()), "the documented default");
    assert_eq!(recv_type(&mut watcher, "peer-left").await["data"], live.id());
    let again = Client::connect_resumable(&server.ws_url("/ws"), Some(&token)).await.unwrap();
    assert!(!again.resumed(), "no way back");

    // Suspended (its connection dropped without a close): removed at once, not after the grace period.
    let mut away = Client::connect_resumable(&server.ws_url("/ws"), None).await.unwrap();
    away.join("r").await.unwrap();
    recv_type(&mut watcher, "peer-joined").await;
    let (id, token) = (away.id().to_owned(), away.resume_token().unwrap().to_owned());
    drop(away);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.delete(&format!("/peers/{id}")).await.0, 204);
    watcher.set_timeout(Duration::from_secs(5)); // well under the 15 s grace period
    assert_eq!(recv_type(&mut watcher, "peer-left").await["data"], id);
    let again = Client::connect_resumable(&server.ws_url("/ws"), Some(&token)).await.unwrap();
    assert!(!again.resumed());
}

/// With `--api-listen` the API has an address of its own, and only there.
#[tokio::test]
async fn the_api_can_listen_on_its_own_address_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api_addr = format!("127.0.0.1:{port}");
    let server = with_api(&["--api-listen", &api_addr]);
    server.wait_log_lines("server API listening", 1).await;
    assert_eq!(Api::new(server.addr).get("/rooms").await.0, 404, "not on the public address");
    assert_eq!(support::http_get(server.addr, "/admin").await.0, 404);
    let api = Api::new(api_addr.parse().unwrap());
    assert_eq!(api.get("/rooms").await.0, 200);
    assert_eq!(support::http_get(api_addr.parse().unwrap(), "/admin").await.0, 200, "the dashboard is there");
    assert_eq!(support::http_get(api_addr.parse().unwrap(), "/ws").await.0, 404, "and nothing else");
}
