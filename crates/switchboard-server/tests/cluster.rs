//! Scale-out: two and three real server processes sharing rooms over a real
//! `redis-server`. Peers on different nodes must not notice that they are.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::redis::{Redis, RedisCluster};
use support::{http_get, Server};
use switchboard_client::{Client, ClientError};

/// A node on `redis`, reaping dead peers after a short TTL, with no rate limit
/// (the tests send bursts on purpose).
fn node(redis: &Redis) -> Server {
    Server::start(&[
        "--redis",
        &redis.url(),
        "--node-ttl",
        "1s",
        "--redis-timeout",
        "500ms",
        "--rate-limit-messages",
        "0",
    ])
}

async fn recv_json(client: &mut Client) -> Value {
    let text = client.recv_text().await.expect("a message");
    serde_json::from_str(&text).expect("JSON from the server")
}

/// Reads messages until one of type `kind` arrives (others are returned too, for checks).
async fn recv_type(client: &mut Client, kind: &str) -> Value {
    for _ in 0..100 {
        let message = recv_json(client).await;
        if message["type"] == kind {
            return message;
        }
    }
    panic!("no {kind} message");
}

async fn assert_quiet(client: &mut Client) {
    client.set_timeout(Duration::from_millis(300));
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(switchboard_client::DEFAULT_TIMEOUT);
}

async fn nodes(redis: &Redis, count: usize) -> Vec<Server> {
    let servers: Vec<Server> = (0..count).map(|_| node(redis)).collect();
    for server in &servers {
        server.wait_broker_up().await;
    }
    servers
}

fn ids(peers: &Value) -> HashSet<String> {
    peers.as_array().expect("peers").iter().map(|p| p["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn peers_on_two_nodes_join_relay_broadcast_and_leave_as_if_on_one() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2).await;
    let mut a = servers[0].client().await;
    let mut b = servers[1].client().await;

    a.send(&json!({"type": "join", "room": "call", "meta": {"name": "Ann"}})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["peers"], json!([]));
    b.send(&json!({"type": "join", "room": "call", "meta": {"name": "Bob"}})).await.unwrap();
    let joined = recv_json(&mut b).await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["peers"], json!([{"id": a.id(), "meta": {"name": "Ann"}}]));
    assert_eq!(
        recv_json(&mut a).await,
        json!({"type": "peer-joined", "data": b.id(), "room": "call", "meta": {"name": "Bob"}})
    );

    // Relay across nodes, both ways, with every field kept and `from` stamped.
    let offer = json!({"type": "offer", "target": a.id(), "from": "forged", "sdp": "v=0\r\n", "n": 1.50});
    b.send(&offer).await.unwrap();
    let mut expected = offer.clone();
    expected["from"] = json!(b.id());
    assert_eq!(recv_json(&mut a).await, expected);
    a.send(&json!({"type": "ice-candidate", "target": b.id(), "candidate": {"candidate": "c"}, "rid": 9}))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut a).await, json!({"type": "ack", "rid": 9}));
    assert_eq!(
        recv_json(&mut b).await,
        json!({"type": "ice-candidate", "target": b.id(), "candidate": {"candidate": "c"}, "rid": 9, "from": a.id()})
    );

    // Broadcast reaches the other node, never the sender.
    a.send(&json!({"type": "broadcast", "data": {"chat": "hi"}})).await.unwrap();
    assert_eq!(
        recv_json(&mut b).await,
        json!({"type": "broadcast", "from": a.id(), "room": "call", "data": {"chat": "hi"}})
    );
    assert_quiet(&mut a).await;

    // Leave is seen on the other node; the room is gone from Redis once empty.
    b.send(&json!({"type": "leave", "rid": "bye"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["type"], "left");
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b.id(), "room": "call"}));
    // A peer that shares no room any more is not reachable.
    b.send(&json!({"type": "join", "room": "elsewhere"})).await.unwrap();
    recv_type(&mut b, "joined").await;
    b.send(&json!({"type": "offer", "target": a.id(), "sdp": "x"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["code"], "unknown-target");

    // Disconnecting is a leave too.
    a.close().await.unwrap();
    let mut c = servers[1].client().await;
    c.send(&json!({"type": "join", "room": "call"})).await.unwrap();
    let joined = recv_type(&mut c, "joined").await;
    assert_eq!(joined["peers"], json!([]), "a's disconnect on node 0 emptied the room");
}

#[tokio::test]
async fn three_nodes_list_every_member_and_keep_each_senders_order() {
    let redis = Redis::start();
    let servers = nodes(&redis, 3).await;
    let mut clients = Vec::new();
    for round in 0..2 {
        for server in &servers {
            let mut client = server.client().await;
            client.send(&json!({"type": "join", "room": "mesh", "meta": {"round": round}})).await.unwrap();
            let joined = recv_type(&mut client, "joined").await;
            let expected: HashSet<String> = clients.iter().map(|c: &Client| c.id().to_owned()).collect();
            assert_eq!(ids(&joined["peers"]), expected, "joined lists every member on every node");
            clients.push(client);
        }
    }
    // Every member heard of every later joiner, in join order.
    let all: Vec<String> = clients.iter().map(|c| c.id().to_owned()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        for later in &all[i + 1..] {
            let event = recv_json(client).await;
            assert_eq!(event["type"], "peer-joined", "client {i}: {event}");
            assert_eq!(event["data"], *later, "client {i}");
        }
    }
    // Many messages from one sender across nodes arrive exactly once, in order.
    let target = clients[1].id().to_owned();
    for n in 0..300 {
        clients[0].send(&json!({"type": "signal", "target": target, "n": n})).await.unwrap();
    }
    for n in 0..300 {
        let message = recv_type(&mut clients[1], "signal").await;
        assert_eq!(message["n"], n, "in order, once");
        assert_eq!(message["from"], clients[0].id());
    }
    assert_quiet(&mut clients[1]).await;
}

#[tokio::test]
async fn capacity_holds_across_nodes_when_peers_race_for_the_last_places() {
    let redis = Redis::start();
    let servers = nodes(&redis, 3).await;
    let mut racers = Vec::new();
    for i in 0..12 {
        racers.push(servers[i % 3].client().await);
    }
    // Everyone sends at once; Redis decides who gets in.
    for racer in &mut racers {
        racer.send(&json!({"type": "join", "room": "duo", "capacity": 2})).await.unwrap();
    }
    let mut admitted = 0;
    let mut refused = 0;
    for racer in &mut racers {
        let answer = recv_json(racer).await;
        match (answer["type"].as_str(), answer["code"].as_str()) {
            (Some("joined"), _) => admitted += 1,
            (Some("error"), Some("room-full")) => refused += 1,
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    assert_eq!((admitted, refused), (2, 10));
}

#[tokio::test]
async fn a_killed_node_s_peers_leave_their_rooms_for_the_survivors() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 2).await;
    let mut a = servers[0].client().await;
    let mut b = servers[1].client().await;
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    assert_eq!(recv_json(&mut a).await["type"], "peer-joined");

    servers[1].kill();
    // The survivors notice within the TTL plus a beat; allow the test ample time.
    a.set_timeout(Duration::from_secs(10));
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b.id(), "room": "r"}));
    // The metric follows the script that published the event; wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while servers[0].metric("switchboard_broker_reaped_peers_total").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "reaped peers were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the dead peer is no longer listed for newcomers.
    let mut c = servers[0].client().await;
    let peers = c.join("r").await.unwrap();
    assert_eq!(peers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec![a.id()]);
}

#[tokio::test]
async fn while_redis_is_down_local_signaling_works_and_cross_node_work_is_refused_then_resumes() {
    let mut redis = Redis::start();
    let servers = nodes(&redis, 2).await;
    let mut a = servers[0].client().await;
    let mut b = servers[0].client().await;
    let mut c = servers[1].client().await;
    a.join("room").await.unwrap();
    b.join("room").await.unwrap();
    c.join("room").await.unwrap();
    for _ in 0..2 {
        recv_type(&mut a, "peer-joined").await;
    }
    recv_type(&mut b, "peer-joined").await;

    redis.stop();
    // Wait until node 0 has noticed (its heartbeat fails).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while servers[0].metric("switchboard_broker_up").await != 0.0 {
        assert!(std::time::Instant::now() < deadline, "node never noticed Redis was gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = http_get(servers[0].addr, "/readyz").await;
    assert_eq!(status, 200, "local peers still work: the node stays ready");
    assert!(body.contains("\"broker\":\"down\""), "{body}");

    // Same node: still fine.
    a.send(&json!({"type": "offer", "target": b.id(), "sdp": "local"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["sdp"], "local");
    // Across nodes: a clear error, never a silent drop.
    a.send(&json!({"type": "offer", "target": c.id(), "sdp": "far", "rid": 1})).await.unwrap();
    let error = recv_json(&mut a).await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("unavailable")), "{error}");
    assert_eq!(error["rid"], 1);
    // A join needs Redis.
    let mut d = servers[0].client().await;
    d.send(&json!({"type": "join", "room": "room"})).await.unwrap();
    assert_eq!(recv_json(&mut d).await["code"], "unavailable");
    // b leaves while Redis is down; the others must learn it once Redis is back.
    b.send(&json!({"type": "leave"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["type"], "left");

    // Redis comes back empty; the nodes re-register their peers on their own.
    redis.resume();
    for server in &servers {
        server.wait_broker_up().await;
    }
    // c learns that b left during the outage, and nothing else: a never left,
    // whichever node wrote its peers back first.
    c.set_timeout(Duration::from_secs(10));
    assert_eq!(recv_json(&mut c).await, json!({"type": "peer-left", "data": b.id(), "room": "room"}));
    assert_quiet(&mut c).await;
    // Cross-node signaling resumes without anyone reconnecting.
    a.send(&json!({"type": "offer", "target": c.id(), "sdp": "again"})).await.unwrap();
    assert_eq!(recv_type(&mut c, "offer").await["sdp"], "again");
    c.send(&json!({"type": "answer", "target": a.id(), "sdp": "back"})).await.unwrap();
    assert_eq!(recv_type(&mut a, "answer").await["sdp"], "back");
    // A newcomer sees the room as it is: a and c, not b.
    let mut e = servers[1].client().await;
    let peers = e.join("room").await.unwrap();
    let listed: HashSet<&str> = peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(listed, HashSet::from([a.id(), c.id()]));
    assert!(servers[0].metric("switchboard_broker_resyncs_total").await >= 1.0);
}

#[tokio::test]
async fn a_relay_to_a_peer_that_just_left_another_node_comes_back_as_an_error() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2).await;
    let mut a = servers[0].client().await;
    let mut b = servers[1].client().await;
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    recv_type(&mut a, "peer-joined").await;
    let b_id = b.id().to_owned();
    // Drop b's socket without waiting; a relays before (or as) node 1 hears of it.
    drop(b);
    let mut outcomes = Vec::new();
    for n in 0..50 {
        a.send(&json!({"type": "offer", "target": b_id, "sdp": "x", "rid": n})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.set_timeout(Duration::from_secs(3));
    while let Ok(text) = a.recv_text().await {
        outcomes.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    // Every relay is accounted for: acked, then possibly reported undeliverable,
    // or refused outright once b's departure is known. None vanishes silently.
    for n in 0..50 {
        let about: Vec<&Value> = outcomes.iter().filter(|m| m["rid"] == n).collect();
        assert!(!about.is_empty(), "relay {n} got no answer: {outcomes:?}");
    }
    assert!(outcomes.iter().any(|m| m["type"] == "peer-left"), "{outcomes:?}");
    assert!(outcomes.iter().any(|m| m["code"] == "unknown-target"), "relays after b left are refused: {outcomes:?}");
}

#[tokio::test]
async fn a_room_observer_on_a_node_with_no_members_sees_the_whole_room() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2).await;
    let mut a = servers[0].client().await;
    a.join("watched").await.unwrap();
    let mut stream = support::http_open(servers[1].addr, "/sse/rooms/watched", "").await;
    let snapshot = support::read_until(&mut stream, "room-state", 1).await;
    assert!(snapshot.contains(a.id()), "{snapshot}");
    let mut b = servers[0].client().await;
    b.join("watched").await.unwrap();
    let events = support::read_until(&mut stream, "peer-joined", 1).await;
    assert!(events.contains(b.id()), "{events}");
}

#[test]
fn a_standalone_node_needs_no_redis() {
    // The embedded default: no --redis, no broker series moving, no Redis needed.
    let server = Server::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, body) = http_get(server.addr, "/readyz").await;
        assert_eq!(status, 200);
        assert!(!body.contains("broker"), "{body}");
    });
}

#[tokio::test]
async fn nodes_on_a_redis_cluster_share_rooms_over_sharded_pub_sub() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let args = ["--redis", &urls, "--redis-cluster", "--node-ttl", "1s", "--rate-limit-messages", "0"];
    let servers = [Server::start(&args), Server::start(&args)];
    for server in &servers {
        server.wait_broker_up().await;
    }
    // Rooms whose names hash to different shards.
    for room in ["alpha", "beta", "gamma", "delta"] {
        let mut a = servers[0].client().await;
        let mut b = servers[1].client().await;
        a.send(&json!({"type": "join", "room": room, "capacity": 2})).await.unwrap();
        recv_type(&mut a, "joined").await;
        b.send(&json!({"type": "join", "room": room})).await.unwrap();
        let joined = recv_type(&mut b, "joined").await;
        assert_eq!(ids(&joined["peers"]), HashSet::from([a.id().to_owned()]), "{room}");
        assert_eq!(recv_json(&mut a).await["data"], b.id());
        for n in 0..20 {
            b.send(&json!({"type": "offer", "target": a.id(), "n": n})).await.unwrap();
        }
        for n in 0..20 {
            assert_eq!(recv_json(&mut a).await["n"], n, "{room}: in order across nodes");
        }
        a.send(&json!({"type": "broadcast", "data": room})).await.unwrap();
        assert_eq!(recv_json(&mut b).await["data"], room);
        let mut third = servers[1].client().await;
        third.send(&json!({"type": "join", "room": room})).await.unwrap();
        assert_eq!(recv_type(&mut third, "error").await["code"], "room-full", "{room}: capacity holds");
        drop(b);
        assert_eq!(recv_type(&mut a, "peer-left").await["room"], room);
    }
}

#[tokio::test]
async fn a_peer_s_relays_reach_another_node_before_its_peer_left() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2).await;
    // A third node whose resumable peer `z` is parked when it stops: relays to
    // `z` are then queued in Redis one round trip each, so the first node's
    // publisher has a backlog when its peer `x` leaves.
    let mut third = Server::handing_over(&redis, "1s", "30s", &[]);
    third.wait_broker_up().await;
    let mut z = Client::connect_resumable(&third.ws_url("/ws"), None).await.unwrap();
    let mut x = servers[0].client().await;
    let mut y = servers[1].client().await;
    for client in [&mut z, &mut y, &mut x] {
        client.join("r").await.unwrap();
    }
    assert_eq!(recv_type(&mut y, "peer-joined").await["data"], x.id());
    let z_id = z.id().to_owned();
    third.terminate();
    assert!(third.wait_exit(Duration::from_secs(10)).is_some());
    for n in 0..300 {
        x.send(&json!({"type": "offer", "target": z_id, "n": n})).await.unwrap();
    }
    x.send(&json!({"type": "candidate", "target": y.id(), "n": 1})).await.unwrap();
    x.send(&json!({"type": "leave", "rid": "bye"})).await.unwrap();
    let first = recv_json(&mut y).await;
    assert_eq!(first["type"], "candidate", "the relay before its sender's peer-left: {first}");
    assert_eq!(recv_json(&mut y).await["type"], "peer-left");
}
