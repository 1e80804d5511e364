//! The matchbox dialect (`/matchbox/{room}[?next=N]`) at the wire, against the
//! real binary: what `matchbox_socket` 0.14 relies on, the grouping of
//! `?next=N`, room isolation, what is dropped, auth, and two nodes over Redis.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "matchbox-test-secret-for-hs256";

/// One matchbox connection, past its `IdAssigned`.
struct Peer {
    ws: Socket,
    id: String,
}

fn is_uuid_v4(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && id.chars().all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        && parts[2].starts_with('4')
        && parts[3].starts_with(['8', '9', 'a', 'b'])
}

async fn open(url: &str) -> Result<Socket, WsError> {
    connect_async(url).await.map(|(ws, _)| ws)
}

/// Connects to `{server}/matchbox/{room}` (`room` may carry a query) and reads `IdAssigned`.
async fn join(server: &Server, room: &str) -> Peer {
    let ws = open(&server.ws_url(&format!("/matchbox/{room}"))).await.expect("connect to /matchbox");
    assigned(ws).await
}

async fn assigned(ws: Socket) -> Peer {
    let mut peer = Peer { ws, id: String::new() };
    let first = peer.next().await;
    let id = first["IdAssigned"].as_str().unwrap_or_else(|| panic!("first frame is IdAssigned, got {first}"));
    assert!(is_uuid_v4(id), "{id} is a lower-case v4 UUID");
    peer.id = id.to_owned();
    peer
}

impl Peer {
    /// The next text frame, as sent.
    async fn next_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a frame within 5 s")
                .expect("the connection is open")
                .expect("a frame");
            match frame {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).expect("JSON")
    }

    /// Nothing arrives for `ms`, and the connection is still open.
    async fn quiet(&mut self, ms: u64) {
        match tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await {
            Err(_) => {}
            Ok(frame) => panic!("{} expected silence, got {frame:?}", self.id),
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    async fn signal(&mut self, to: &Peer, data: Value) {
        self.send(&json!({"Signal": {"receiver": to.id, "data": data}}).to_string()).await;
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
        // Until the server's close frame: the close is done.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), self.ws.next()).await {}
    }
}

fn new_peer(peer: &Peer) -> Value {
    json!({"NewPeer": peer.id})
}

fn peer_left(peer: &Peer) -> Value {
    json!({"PeerLeft": peer.id})
}

fn dropped(reason: &str) -> String {
    format!("switchboard_dialect_dropped_total{{dialect=\"matchbox\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn ids_new_peer_and_peer_left_as_matchbox_server_sends_them() {
    let server = Server::start(&[]);
    let mut a = join(&server, "lobby").await;
    let mut b = join(&server, "lobby").await;
    assert_ne!(a.id, b.id);
    // Only the peers already there hear of a newcomer; the newcomer hears nothing.
    assert_eq!(a.next().await, new_peer(&b));
    let mut c = join(&server, "lobby").await;
    assert_eq!(a.next().await, new_peer(&c));
    assert_eq!(b.next().await, new_peer(&c));
    c.quiet(300).await;
    b.close().await;
    assert_eq!(a.next().await, peer_left(&b));
    assert_eq!(c.next().await, peer_left(&b));
    // An abrupt drop is a leave too.
    drop(c.ws);
    assert_eq!(a.next().await, json!({"PeerLeft": c.id}));
    a.quiet(200).await;
    server.wait_metric("switchboard_connections{endpoint=\"matchbox\"}", 1.0).await;
}

#[tokio::test]
async fn a_signal_is_relayed_within_its_room_only_with_its_data_untouched() {
    let server = Server::start(&[]);
    let mut a = join(&server, "r").await;
    let mut b = join(&server, "r").await;
    let mut x = join(&server, "s").await;
    assert_eq!(a.next().await, new_peer(&b));
    // The data's bytes are passed on as they came, spacing and all.
    a.send(&format!(r#"{{"Signal":{{"receiver":"{}","data":{{ "Offer" : "v=0\r\n" }}}}}}"#, b.id)).await;
    assert_eq!(
        b.next_text().await,
        format!(r#"{{"Signal":{{"sender":"{}","data":{{ "Offer" : "v=0\r\n" }}}}}}"#, a.id)
    );
    b.signal(&a, json!([1, "two", {"three": null}])).await;
    assert_eq!(a.next().await, json!({"Signal": {"sender": b.id, "data": [1, "two", {"three": null}]}}));
    // Another room's peer is out of reach (the original would deliver it).
    a.signal(&x, json!("cross-room")).await;
    x.quiet(300).await;
    server.wait_metric(&dropped("unknown-target"), 1.0).await;
    // ...and so is a peer that is not there at all.
    a.send(r#"{"Signal":{"receiver":"6f1c1d5e-8a40-4d5b-9c66-0c0ffee00000","data":1}}"#).await;
    server.wait_metric(&dropped("unknown-target"), 2.0).await;
    a.signal(&b, json!("still here")).await;
    assert_eq!(b.next().await, json!({"Signal": {"sender": a.id, "data": "still here"}}));
}

#[tokio::test]
async fn malformed_frames_are_dropped_counted_and_the_connection_kept() {
    let server = Server::start(&["--max-message-size", "1024"]);
    let mut a = join(&server, "m").await;
    let mut b = join(&server, "m").await;
    assert_eq!(a.next().await, new_peer(&b));
    a.send("{not json").await;
    a.send(r#"{"Nope":1}"#).await;
    a.send(r#"{"type":"join","room":"m"}"#).await;
    a.send(r#"{"Signal":{"receiver":"not-a-uuid","data":1}}"#).await;
    a.ws.send(Message::binary(vec![1, 2, 3, 4])).await.unwrap();
    a.send(&format!(r#"{{"Signal":{{"receiver":"{}","data":"{}"}}}}"#, b.id, "x".repeat(2000))).await;
    a.send(r#""KeepAlive""#).await;
    a.quiet(300).await;
    b.quiet(0).await;
    server.wait_metric(&dropped("malformed"), 3.0).await;
    server.wait_metric(&dropped("unknown-target"), 1.0).await;
    server.wait_metric(&dropped("binary"), 1.0).await;
    server.wait_metric(&dropped("limit"), 1.0).await;
    a.signal(&b, json!("after all that")).await;
    assert_eq!(b.next().await, json!({"Signal": {"sender": a.id, "data": "after all that"}}));
}

#[tokio::test]
async fn next_2_groups_arrivals_in_pairs_and_a_leave_is_not_refilled() {
    let server = Server::start(&[]);
    let mut a = join(&server, "game?next=2").await;
    let mut b = join(&server, "game?next=2").await;
    let mut c = join(&server, "game?next=2").await;
    let mut d = join(&server, "game?next=2").await;
    assert_eq!(a.next().await, new_peer(&b));
    assert_eq!(c.next().await, new_peer(&d));
    for peer in [&mut a, &mut b, &mut c, &mut d] {
        peer.quiet(200).await;
    }
    // Signals stay within a group.
    a.signal(&b, json!("in group")).await;
    assert_eq!(b.next().await, json!({"Signal": {"sender": a.id, "data": "in group"}}));
    a.signal(&c, json!("other group")).await;
    c.quiet(300).await;
    // A leave is told to the rest of its group only, and the place stays empty.
    b.close().await;
    assert_eq!(a.next().await, json!({"PeerLeft": b.id}));
    c.quiet(200).await;
    let mut e = join(&server, "game?next=2").await;
    a.quiet(300).await;
    // The fifth arrival starts the third group, which the sixth completes.
    let mut f = join(&server, "game?next=2").await;
    assert_eq!(e.next().await, new_peer(&f));
    for peer in [&mut a, &mut c, &mut d, &mut f] {
        peer.quiet(200).await;
    }
}

#[tokio::test]
async fn a_complete_group_stays_closed_when_one_leaves_before_anyone_else_arrives() {
    let server = Server::start(&[]);
    let mut a = join(&server, "duel?next=2").await;
    let mut b = join(&server, "duel?next=2").await;
    assert_eq!(a.next().await, new_peer(&b));
    // Nobody has found the group full yet: the group itself must refuse the newcomer.
    b.close().await;
    assert_eq!(a.next().await, json!({"PeerLeft": b.id}));
    let mut c = join(&server, "duel?next=2").await;
    a.quiet(300).await;
    let d = join(&server, "duel?next=2").await;
    assert_eq!(c.next().await, new_peer(&d));
    a.quiet(200).await;
}

#[tokio::test]
async fn a_waiting_group_is_not_passed_over_when_earlier_groups_have_emptied() {
    let server = Server::start(&[]);
    let mut a = join(&server, "queue?next=2").await;
    let mut b = join(&server, "queue?next=2").await;
    assert_eq!(a.next().await, new_peer(&b));
    let mut c = join(&server, "queue?next=2").await;
    // The first group empties (and is gone); c still waits in the second.
    a.close().await;
    assert_eq!(b.next().await, json!({"PeerLeft": a.id}));
    b.close().await;
    let d = join(&server, "queue?next=2").await;
    assert_eq!(c.next().await, new_peer(&d));
}

#[tokio::test]
async fn an_incomplete_group_keeps_its_place_for_the_next_arrivals() {
    let server = Server::start(&[]);
    let mut a = join(&server, "trio?next=3").await;
    let mut b = join(&server, "trio?next=3").await;
    assert_eq!(a.next().await, new_peer(&b));
    // Before the group is complete, a leave frees a place, as in the original.
    b.close().await;
    assert_eq!(a.next().await, json!({"PeerLeft": b.id}));
    let mut c = join(&server, "trio?next=3").await;
    assert_eq!(a.next().await, new_peer(&c));
    let d = join(&server, "trio?next=3").await;
    assert_eq!(a.next().await, new_peer(&d));
    assert_eq!(c.next().await, new_peer(&d));
    // Complete now: the next arrival is in a new group.
    let _e = join(&server, "trio?next=3").await;
    a.quiet(300).await;
    c.quiet(0).await;
}

#[tokio::test]
async fn rooms_differ_by_name_and_by_next() {
    let server = Server::start(&[]);
    let mut plain = join(&server, "r").await;
    let mut two = join(&server, "r?next=2").await;
    let mut three = join(&server, "r?next=3").await;
    let mut zero = join(&server, "r?next=0").await;
    let mut other = join(&server, "s").await;
    let mut root = open(&server.ws_url("/matchbox")).await.map(assigned).unwrap().await;
    for peer in [&mut plain, &mut two, &mut three, &mut zero, &mut other, &mut root] {
        peer.quiet(100).await;
    }
    // An unparsable next is no next (as in the original), and other parameters are ignored.
    let plain2 = join(&server, "r?next=abc&foo=1").await;
    assert_eq!(plain.next().await, new_peer(&plain2));
    let two2 = join(&server, "r?next=2").await;
    assert_eq!(two.next().await, new_peer(&two2));
    let three2 = join(&server, "r?next=3").await;
    assert_eq!(three.next().await, new_peer(&three2));
    // next=0 is one room of its own without grouping (the original's release build).
    let zero2 = join(&server, "r?next=0").await;
    let zero3 = join(&server, "r?next=0").await;
    assert_eq!(zero.next().await, new_peer(&zero2));
    assert_eq!(zero.next().await, new_peer(&zero3));
    let other2 = join(&server, "s").await;
    assert_eq!(other.next().await, new_peer(&other2));
    let root2 = open(&server.ws_url("/matchbox")).await.map(assigned).unwrap().await;
    assert_eq!(root.next().await, new_peer(&root2));
    // next=1 is a group of one: nobody is ever met.
    let mut one = join(&server, "r?next=1").await;
    let mut one2 = join(&server, "r?next=1").await;
    one.signal(&one2, json!("alone")).await;
    one.quiet(200).await;
    one2.quiet(0).await;
    for peer in [&mut plain, &mut two, &mut three, &mut zero, &mut other, &mut root] {
        peer.quiet(100).await;
    }
}

#[tokio::test]
async fn room_names_and_next_are_checked_at_the_upgrade() {
    let server = Server::start(&["--max-room-name-len", "8", "--max-peers-per-room", "4"]);
    let status = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    };
    assert_eq!(status(open(&server.ws_url("/matchbox/ninechars")).await), 400);
    assert_eq!(status(open(&server.ws_url("/matchbox/a%01b")).await), 400);
    assert_eq!(status(open(&server.ws_url("/matchbox/r?next=5")).await), 400);
    // At the limits: fine.
    join(&server, "eightchr").await;
    join(&server, "r?next=4").await;
    // A full room (max-peers-per-room) closes the newcomer, saying why.
    let mut full = Vec::new();
    for _ in 0..4 {
        full.push(join(&server, "full").await);
    }
    let mut fifth = open(&server.ws_url("/matchbox/full")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), fifth.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "room is full");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Mints a token with the real `switchboard token` command.
fn token(sub: &str, rooms: &[&str]) -> String {
    let mut args = vec!["token", "--sub", sub, "--auth-secret", SECRET];
    for room in rooms {
        args.extend(["--room", room]);
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn with_auth_required_the_token_comes_on_the_url_and_its_rooms_apply() {
    let server = Server::start(&["--auth", "required", "--auth-secret", SECRET]);
    let status = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    };
    assert_eq!(status(open(&server.ws_url("/matchbox/r")).await), 401);
    assert_eq!(status(open(&server.ws_url("/matchbox/r?token=not.a.jwt")).await), 401);
    let alice = token("alice", &["game-*"]);
    let bob = token("bob", &[]);
    // The token's room patterns apply to the room's name, whatever `next`.
    assert_eq!(status(open(&server.ws_url(&format!("/matchbox/lobby?token={alice}"))).await), 403);
    assert_eq!(status(open(&server.ws_url(&format!("/matchbox/lobby?next=2&token={alice}"))).await), 403);
    // The token is not part of the room, nor of next.
    let url = |room: &str, query: &str| server.ws_url(&format!("/matchbox/{room}?{query}"));
    let mut a = assigned(open(&url("game-1", &format!("next=2&token={alice}"))).await.unwrap()).await;
    let b = assigned(open(&url("game-1", &format!("token={bob}&next=2"))).await.unwrap()).await;
    assert_eq!(a.next().await, new_peer(&b));
    let mut c = assigned(open(&url("game-1", &format!("token={alice}"))).await.unwrap()).await;
    let d = assigned(open(&url("game-1", &format!("token={bob}"))).await.unwrap()).await;
    assert_eq!(c.next().await, new_peer(&d));
    a.quiet(200).await;
}

/// A node on `redis` (see tests/cluster.rs).
fn node(redis: &Redis) -> Server {
    Server::start(&["--redis", &redis.url(), "--node-ttl", "1s", "--redis-timeout", "500ms"])
}

#[tokio::test]
async fn across_two_nodes_rooms_and_next_groups_are_cluster_wide() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis)];
    for server in &nodes {
        server.wait_broker_up().await;
    }
    // A plain room: NewPeer, Signal and PeerLeft between the nodes.
    let mut a = join(&nodes[0], "call").await;
    let mut b = join(&nodes[1], "call").await;
    assert_eq!(a.next().await, new_peer(&b));
    a.signal(&b, json!({"Offer": "v=0"})).await;
    assert_eq!(b.next().await, json!({"Signal": {"sender": a.id, "data": {"Offer": "v=0"}}}));
    b.signal(&a, json!({"Answer": "v=0"})).await;
    assert_eq!(a.next().await, json!({"Signal": {"sender": b.id, "data": {"Answer": "v=0"}}}));
    let mut x = join(&nodes[1], "elsewhere").await;
    a.signal(&x, json!("cross-room")).await;
    b.close().await;
    assert_eq!(a.next().await, json!({"PeerLeft": b.id}));

    // next=2: a group completed across nodes stays closed after a leave, though
    // neither node has seen it full.
    let mut g = join(&nodes[0], "pair?next=2").await;
    let mut h = join(&nodes[1], "pair?next=2").await;
    assert_eq!(g.next().await, new_peer(&h));
    h.close().await;
    assert_eq!(g.next().await, json!({"PeerLeft": h.id}));
    let mut i = join(&nodes[1], "pair?next=2").await;
    g.quiet(300).await;
    let j = join(&nodes[0], "pair?next=2").await;
    assert_eq!(i.next().await, new_peer(&j));
    g.quiet(200).await;

    // The groups are the cluster's, not each node's.
    let mut p = join(&nodes[0], "match?next=2").await;
    let mut q = join(&nodes[1], "match?next=2").await;
    let mut r = join(&nodes[1], "match?next=2").await;
    let mut s = join(&nodes[0], "match?next=2").await;
    assert_eq!(p.next().await, new_peer(&q));
    assert_eq!(r.next().await, new_peer(&s));
    // A leave across nodes reaches the rest of the group, and is not refilled.
    q.close().await;
    assert_eq!(p.next().await, json!({"PeerLeft": q.id}));
    let mut t = join(&nodes[1], "match?next=2").await;
    let u = join(&nodes[0], "match?next=2").await;
    assert_eq!(t.next().await, new_peer(&u));
    for peer in [&mut p, &mut r, &mut s, &mut a, &mut x] {
        peer.quiet(200).await;
    }
}
