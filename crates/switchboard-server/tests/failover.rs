//! Sessions survive their node: real server processes over a real
//! `redis-server`. A node stopped with SIGTERM hands its resumable sessions to
//! Redis and the clients resume on other nodes; a node killed with SIGKILL
//! loses only what it had not written; a parked session nobody resumes is
//! expired by a survivor. Nobody in the room notices what it should not.

mod chaos_support;
mod support;

use std::time::Duration;

use chaos_support::{frame, RawWs, CLOSE, FIN};
use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use switchboard_client::{Client, ClientError};

/// A node on `redis` that hands its sessions over when stopped (1012), with
/// heartbeats of `ttl` and a resume grace period of `grace`.
fn node(redis: &Redis, ttl: &str, grace: &str) -> Server {
    Server::handing_over(redis, ttl, grace, &["--rate-limit-messages", "0"])
}

async fn nodes(redis: &Redis, count: usize, ttl: &str, grace: &str) -> Vec<Server> {
    let servers: Vec<Server> = (0..count).map(|_| node(redis, ttl, grace)).collect();
    for server in &servers {
        server.wait_broker_up().await;
    }
    servers
}

async fn resumable(server: &Server, token: Option<&str>) -> Client {
    Client::connect_resumable(&server.ws_url("/ws"), token).await.expect("connect")
}

/// What one peer has received from the other: the numbers of its offers, in
/// arrival order. Anything a room mate should never see fails the test.
#[derive(Default)]
struct Inbox {
    offers: Vec<i64>,
}

impl Inbox {
    /// Takes one message; returns it unless it was an offer (kept).
    fn take(&mut self, message: Value) -> Option<Value> {
        match message["type"].as_str() {
            Some("offer") => {
                self.offers.push(message["n"].as_i64().expect("n"));
                None
            }
            Some("peer-left" | "peer-joined" | "error") => panic!("the room noticed: {message}"),
            _ => Some(message),
        }
    }
}

async fn recv_json(client: &mut Client) -> Result<Value, ClientError> {
    let text = client.recv_text().await?;
    Ok(serde_json::from_str(&text).expect("JSON from the server"))
}

/// Sends offers `range` to `target`, each acked, keeping what arrives meanwhile.
async fn send_offers(client: &mut Client, target: &str, range: std::ops::Range<i64>, inbox: &mut Inbox) {
    for n in range {
        client.send(&json!({"type": "offer", "target": target, "n": n, "rid": n})).await.expect("send");
        loop {
            let message = recv_json(client).await.expect("the ack");
            if let Some(other) = inbox.take(message) {
                assert_eq!(other, json!({"type": "ack", "rid": n}), "each relay is accepted");
                break;
            }
        }
    }
}

/// Reads until the server closes the connection; returns the close code.
async fn until_closed(client: &mut Client, inbox: &mut Inbox) -> u16 {
    loop {
        match recv_json(client).await {
            Ok(message) => assert_eq!(inbox.take(message), None, "only offers arrive"),
            Err(ClientError::Closed(frame)) => return frame.map_or(0, |f| u16::from(f.code)),
            Err(other) => panic!("{other:?}"),
        }
    }
}

/// Reads until `count` offers have arrived, then checks that nothing else does.
async fn until_offers(client: &mut Client, inbox: &mut Inbox, count: usize) {
    client.set_timeout(Duration::from_secs(10));
    while inbox.offers.len() < count {
        let message = recv_json(client).await.expect("an offer");
        assert_eq!(inbox.take(message.clone()), None, "unexpected {message}");
    }
    client.set_timeout(Duration::from_millis(500));
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(switchboard_client::DEFAULT_TIMEOUT);
}

/// Resumes `token` on `server`: the same peer, in the same room.
async fn resume(server: &Server, token: &str, id: &str) -> Client {
    let client = resumable(server, Some(token)).await;
    assert!(client.resumed(), "the session resumes on another node");
    assert_eq!(client.id(), id, "with its id");
    assert_eq!(client.rooms(), ["r"], "and its room");
    client
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_hands_its_sessions_over_and_nobody_notices() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 3, "1s", "10s").await;
    let mut a = resumable(&servers[0], None).await;
    let mut b = resumable(&servers[0], None).await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    assert_eq!(recv_json(&mut a).await.unwrap()["type"], "peer-joined");
    let (mut at_a, mut at_b) = (Inbox::default(), Inbox::default());

    // Before: both on node 1.
    send_offers(&mut a, &b_id, 0..50, &mut at_a).await;
    send_offers(&mut b, &a_id, 0..50, &mut at_b).await;

    // Node 1 stops: both connections close with 1012, and their sessions
    // wait in Redis, with whatever node 1 had not yet sent them.
    servers[0].terminate();
    assert_eq!(until_closed(&mut a, &mut at_a).await, 1012);
    assert_eq!(until_closed(&mut b, &mut at_b).await, 1012);
    let (a_token, b_token) = (a.resume_token().unwrap().to_owned(), b.resume_token().unwrap().to_owned());

    // During: `a` is back on node 2 and signals `b` while `b` is still away,
    // and while `b` comes back on node 3 and signals `a`.
    let (node2, node3) = (&servers[1], &servers[2]);
    let a_side = async {
        let mut a = resume(node2, &a_token, &a_id).await;
        send_offers(&mut a, &b_id, 50..150, &mut at_a).await;
        a
    };
    let b_side = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut b = resume(node3, &b_token, &b_id).await;
        send_offers(&mut b, &a_id, 50..150, &mut at_b).await;
        b
    };
    let (mut a, mut b) = tokio::join!(a_side, b_side);

    // After: on two nodes, as if nothing happened.
    send_offers(&mut a, &b_id, 150..200, &mut at_a).await;
    send_offers(&mut b, &a_id, 150..200, &mut at_b).await;
    until_offers(&mut a, &mut at_a, 200).await;
    until_offers(&mut b, &mut at_b, 200).await;
    let all: Vec<i64> = (0..200).collect();
    assert_eq!(at_b.offers, all, "b got every offer from a exactly once, in order");
    assert_eq!(at_a.offers, all, "a got every offer from b exactly once, in order");

    assert!(servers[0].wait_exit(Duration::from_secs(10)).is_some_and(|status| status.success()));
    // Nobody left: a newcomer finds both.
    let mut c = servers[1].client().await;
    let mut members: Vec<String> = c.join("r").await.unwrap().into_iter().map(|p| p.id).collect();
    members.sort();
    let mut expected = vec![a_id, b_id];
    expected.sort();
    assert_eq!(members, expected);
}

#[tokio::test]
async fn a_killed_node_s_sessions_resume_elsewhere_until_it_is_reaped() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 3, "3s", "10s").await;
    let mut b = servers[1].client().await;
    let mut a = resumable(&servers[0], None).await;
    let mut late = resumable(&servers[0], None).await;
    for client in [&mut b, &mut a, &mut late] {
        client.join("r").await.unwrap();
    }
    let (a_id, late_id) = (a.id().to_owned(), late.id().to_owned());
    let (a_token, late_token) = (a.resume_token().unwrap().to_owned(), late.resume_token().unwrap().to_owned());
    // `b` saw both arrive.
    for _ in 0..2 {
        assert_eq!(recv_json(&mut b).await.unwrap()["type"], "peer-joined");
    }
    // What a killed node had not yet written to Redis dies with it
    // (docs/deploy.md): the kill comes after the sessions' rooms are written.
    for id in [&a_id, &late_id] {
        wait_session_field(&redis, id, "rooms", "[\"r\"]").await;
    }

    servers[0].kill();
    drop((a, late));
    // `a` comes back at once, on node 2: its session was in Redis.
    let mut a = resume(&servers[1], &a_token, &a_id).await;
    a.send(&json!({"type": "offer", "target": b.id(), "n": 1})).await.unwrap();
    let offer = recv_json(&mut b).await.unwrap();
    assert_eq!((offer["type"].as_str(), offer["from"].as_str()), (Some("offer"), Some(a_id.as_str())));
    b.send(&json!({"type": "answer", "target": a_id, "n": 2, "rid": 2})).await.unwrap();
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "ack", "rid": 2}));
    assert_eq!(recv_json(&mut a).await.unwrap()["n"], 2, "and it is reachable where it is now");

    // `late` does not: once the survivors reap node 1, it has left, and its token is spent.
    b.set_timeout(Duration::from_secs(15));
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "peer-left", "data": late_id, "room": "r"}));
    let stale = resumable(&servers[2], Some(&late_token)).await;
    assert!(!stale.resumed(), "a session of a reaped node is gone");
    assert_ne!(stale.id(), late_id);
    // And `a` never left.
    b.set_timeout(Duration::from_millis(500));
    assert!(matches!(b.recv_text().await, Err(ClientError::Timeout)), "no peer-left for the resumed session");
}

#[tokio::test]
async fn a_parked_session_nobody_resumes_is_expired_by_a_survivor() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 2, "1s", "4s").await;
    let mut a = resumable(&servers[0], None).await;
    let mut b = servers[1].client().await;
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    assert_eq!(recv_json(&mut a).await.unwrap()["type"], "peer-joined");

    servers[0].terminate();
    let mut nothing = Inbox::default();
    assert_eq!(until_closed(&mut a, &mut nothing).await, 1012);
    assert!(servers[0].wait_exit(Duration::from_secs(10)).is_some());
    // Node 1 is gone; its parked session is not, until its grace period ends.
    b.set_timeout(Duration::from_millis(1000));
    let heard = b.recv_text().await;
    assert!(matches!(heard, Err(ClientError::Timeout)), "parked, not left: {heard:?}");
    b.send(&json!({"type": "offer", "target": a.id(), "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "ack", "rid": 1}), "queued for it");
    b.set_timeout(Duration::from_secs(10));
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "peer-left", "data": a.id(), "room": "r"}));
    let token = a.resume_token().unwrap().to_owned();
    let stale = resumable(&servers[1], Some(&token)).await;
    assert!(!stale.resumed(), "an expired session cannot be resumed");
    assert_eq!(servers[1].metric("switchboard_resume_expired_total").await, 1.0);
}

#[tokio::test]
async fn the_server_api_removes_a_parked_session_that_no_node_holds() {
    let redis = Redis::start();
    let url = redis.url();
    let key = "failover-api-key-0123456789";
    let args = [
        "--redis",
        url.as_str(),
        "--node-ttl",
        "1s",
        "--redis-timeout",
        "500ms",
        "--resume-grace",
        "30s",
        "--shutdown-close-code",
        "1012",
        "--shutdown-delay",
        "0s",
        "--api-key",
        key,
    ];
    let mut servers = [Server::start(&args), Server::start(&args)];
    for server in &servers {
        server.wait_broker_up().await;
    }
    let mut b = servers[1].client().await;
    let mut a = resumable(&servers[0], None).await;
    b.join("r").await.unwrap();
    a.join("r").await.unwrap();
    let (a_id, token) = (a.id().to_owned(), a.resume_token().unwrap().to_owned());
    assert_eq!(recv_json(&mut b).await.unwrap()["type"], "peer-joined");

    servers[0].terminate();
    assert_eq!(until_closed(&mut a, &mut Inbox::default()).await, 1012);
    assert!(servers[0].wait_exit(Duration::from_secs(10)).is_some());
    // Parked: no node has it, yet the API finds it, and it leaves its room now.
    let removal = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/peers/{a_id}", servers[1].addr))
        .bearer_auth(key)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(removal.status().as_u16(), 204);
    b.set_timeout(Duration::from_secs(5));
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "peer-left", "data": a_id, "room": "r"}));
    let stale = resumable(&servers[1], Some(&token)).await;
    assert!(!stale.resumed(), "a removed session cannot be resumed");
}

#[tokio::test]
async fn a_live_session_is_taken_over_on_its_own_node_and_from_another() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2, "1s", "10s").await;
    let mut b = servers[1].client().await;
    let mut old = resumable(&servers[0], None).await;
    b.join("r").await.unwrap();
    old.join("r").await.unwrap();
    let id = old.id().to_owned();
    assert_eq!(recv_json(&mut b).await.unwrap()["type"], "peer-joined");
    // The old connection is still open (half-open, as far as the server knows):
    // first on its own node, then from the other node, the token takes it over.
    for server in [&servers[0], &servers[1]] {
        let token = old.resume_token().unwrap().to_owned();
        let mut new = resume(server, &token, &id).await;
        assert_eq!(until_closed(&mut old, &mut Inbox::default()).await, 4001, "the old connection is switched off");
        b.send(&json!({"type": "offer", "target": id, "n": 7})).await.unwrap();
        let offer = recv_json(&mut new).await.unwrap();
        assert_eq!((offer["type"].as_str(), offer["n"].as_i64()), (Some("offer"), Some(7)), "{offer}");
        old = new;
    }
    b.set_timeout(Duration::from_millis(500));
    assert!(matches!(b.recv_text().await, Err(ClientError::Timeout)), "the room saw nothing");
}

#[tokio::test]
async fn what_a_client_sends_after_the_stopping_node_s_close_frame_is_handled_and_its_ack_follows_the_session() {
    let redis = Redis::start();
    let servers = nodes(&redis, 2, "1s", "10s").await;
    let mut b = servers[1].client().await;
    b.join("r").await.unwrap();
    // A raw client, to send a frame after it has read the server's close frame.
    let mut a = RawWs::upgrade(servers[0].addr, "/ws?resume").await;
    let welcome = a.next_json().await;
    let (a_id, token) = (welcome["id"].as_str().unwrap().to_owned(), welcome["resume"].as_str().unwrap().to_owned());
    a.join("r").await;
    assert_eq!(recv_json(&mut b).await.unwrap()["type"], "peer-joined");

    servers[0].terminate();
    loop {
        let frame = a.read_frame().await.expect("the close frame comes");
        if let Some(code) = frame.close_code() {
            assert_eq!(code, 1012);
            break;
        }
    }
    // Sent before this client's own close frame: the server must not drop it.
    a.send_text(&json!({"type": "offer", "target": b.id(), "n": 1, "rid": 1}).to_string()).await;
    a.write(&frame(FIN | CLOSE, &1000u16.to_be_bytes())).await;
    b.set_timeout(Duration::from_secs(10));
    let offer = recv_json(&mut b).await.unwrap();
    assert_eq!(
        (offer["type"].as_str(), offer["from"].as_str(), offer["n"].as_i64()),
        (Some("offer"), Some(&*a_id), Some(1))
    );

    // Its ack could not be sent after the close frame: it waited with the session.
    let mut a = resume(&servers[1], &token, &a_id).await;
    assert_eq!(recv_json(&mut a).await.unwrap(), json!({"type": "ack", "rid": 1}));
    b.set_timeout(Duration::from_millis(500));
    assert!(matches!(b.recv_text().await, Err(ClientError::Timeout)), "the room saw nothing");
}

#[tokio::test]
async fn a_relay_to_a_killed_node_is_refused_to_its_sender_not_dropped_unheard() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 2, "3s", "10s").await;
    let mut b = servers[1].client().await;
    let mut a = resumable(&servers[0], None).await;
    b.join("r").await.unwrap();
    a.join("r").await.unwrap();
    let a_id = a.id().to_owned();
    assert_eq!(recv_json(&mut b).await.unwrap()["type"], "peer-joined");

    servers[0].kill();
    drop(a);
    // Redis has dropped the dead node's connection, and with it its inbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Node 2 still lists `a` on node 1 (it is not reaped yet): the relay goes
    // there, nobody hears it, and `b` is told rather than left believing it arrived.
    b.send(&json!({"type": "offer", "target": a_id, "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut b).await.unwrap(), json!({"type": "ack", "rid": 1}));
    let refusal = recv_json(&mut b).await.unwrap();
    assert_eq!(
        (refusal["type"].as_str(), refusal["code"].as_str()),
        (Some("error"), Some("unknown-target")),
        "{refusal}"
    );
    assert_eq!(refusal["rid"], 1);
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_one_at_a_time_under_a_live_call_is_invisible() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 3, "1s", "10s").await;
    let mut a = resumable(&servers[0], None).await;
    let mut b = resumable(&servers[1], None).await;
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    assert_eq!(recv_json(&mut a).await.unwrap()["type"], "peer-joined");
    let (mut at_a, mut at_b) = (Inbox::default(), Inbox::default());
    // Which node each is on; offers sent so far, each way.
    let (mut on_a, mut on_b) = (0, 1);
    let (mut to_b, mut to_a) = (0, 0);
    for stopping in 0..servers.len() {
        send_offers(&mut a, &b_id, to_b..to_b + 20, &mut at_a).await;
        to_b += 20;
        send_offers(&mut b, &a_id, to_a..to_a + 20, &mut at_b).await;
        to_a += 20;
        servers[stopping].terminate();
        // The one on the stopping node is closed with 1012; the other signals
        // it while it is away, and it signals back as soon as it has resumed
        // on a node that is up and is not the other's.
        let (mover, stayer, moved_id, stayer_id, at_mover, at_stayer, on, other, sent_to_mover, sent_to_stayer) =
            if on_a == stopping {
                (&mut a, &mut b, &a_id, &b_id, &mut at_a, &mut at_b, &mut on_a, on_b, &mut to_a, &mut to_b)
            } else {
                (&mut b, &mut a, &b_id, &a_id, &mut at_b, &mut at_a, &mut on_b, on_a, &mut to_b, &mut to_a)
            };
        assert_eq!(*on, stopping);
        assert_eq!(until_closed(mover, at_mover).await, 1012);
        let token = mover.resume_token().unwrap().to_owned();
        send_offers(stayer, moved_id, *sent_to_mover..*sent_to_mover + 10, at_stayer).await;
        *sent_to_mover += 10;
        *on = (0..servers.len()).find(|&i| i != stopping && i != other).expect("a third node");
        *mover = resume(&servers[*on], &token, moved_id).await;
        send_offers(mover, stayer_id, *sent_to_stayer..*sent_to_stayer + 10, at_mover).await;
        *sent_to_stayer += 10;
        // The stopped node comes back (a new node) before the next one stops.
        assert!(servers[stopping].wait_exit(Duration::from_secs(10)).is_some_and(|status| status.success()));
        servers[stopping] = node(&redis, "1s", "10s");
        servers[stopping].wait_broker_up().await;
    }
    until_offers(&mut a, &mut at_a, usize::try_from(to_a).unwrap()).await;
    until_offers(&mut b, &mut at_b, usize::try_from(to_b).unwrap()).await;
    assert_eq!(at_b.offers, (0..to_b).collect::<Vec<_>>(), "b got every offer from a exactly once, in order");
    assert_eq!(at_a.offers, (0..to_a).collect::<Vec<_>>(), "a got every offer from b exactly once, in order");
    assert!(on_a != 0 || on_b != 1, "they moved");
}

#[tokio::test]
async fn a_resumed_session_gets_what_a_departed_peer_sent_it_before_that_peer_s_peer_left() {
    let redis = Redis::start();
    let mut servers = nodes(&redis, 2, "1s", "10s").await;
    let mut y = resumable(&servers[0], None).await;
    let mut x = servers[1].client().await;
    y.join("r").await.unwrap();
    x.join("r").await.unwrap();
    let (x_id, y_id) = (x.id().to_owned(), y.id().to_owned());
    assert_eq!(recv_json(&mut y).await.unwrap()["type"], "peer-joined");

    servers[0].terminate();
    assert_eq!(until_closed(&mut y, &mut Inbox::default()).await, 1012);
    let token = y.resume_token().unwrap().to_owned();
    // Parked for good once its node is gone.
    assert!(servers[0].wait_exit(Duration::from_secs(10)).is_some());
    // While `y` is away, `x` sends it an offer and then leaves.
    x.send(&json!({"type": "offer", "target": y_id, "n": 1, "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut x).await.unwrap(), json!({"type": "ack", "rid": 1}));
    x.send(&json!({"type": "leave", "rid": 2})).await.unwrap();
    assert_eq!(recv_json(&mut x).await.unwrap()["type"], "left");

    let client = resumable(&servers[1], Some(&token)).await;
    assert!(client.resumed());
    let mut y = client;
    let offer = recv_json(&mut y).await.unwrap();
    assert_eq!(
        (offer["type"].as_str(), offer["from"].as_str()),
        (Some("offer"), Some(&*x_id)),
        "first what it sent: {offer}"
    );
    assert_eq!(
        recv_json(&mut y).await.unwrap(),
        json!({"type": "peer-left", "data": x_id, "room": "r"}),
        "then that it left"
    );
}

/// Waits (up to 5 s) until the Redis record of `peer`'s session has `field` = `value`.
async fn wait_session_field(redis: &Redis, peer: &str, field: &str, value: &str) {
    let keys = switchboard_server::cluster::keys::Keys::new("switchboard");
    let session = keys.session(switchboard_server::peer_id::PeerId::parse(peer).expect("a peer id"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis.cli(&["HGET", &session, field]) != value {
        assert!(std::time::Instant::now() < deadline, "{peer}'s session never had {field} = {value}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops (`STOP`) or continues (`CONT`) a node's process.
fn signal(server: &Server, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(server.pid().to_string()).status();
    assert!(status.expect("kill").success(), "kill -{signal}");
}

/// The node id `server` logged when it joined the deployment.
fn node_id(server: &Server) -> String {
    let logs = server.logs();
    let line = logs.lines().find(|l| l.contains("sharing rooms over Redis")).expect("the node logs its id");
    let record: Value = serde_json::from_str(line).expect("a JSON log line");
    record["fields"]["node"].as_str().expect("node").to_owned()
}

/// Publishes, as a node that has not yet heard that `target` moved would, a
/// relay from `sender` into the inbox of `node`, where `target` was.
fn relay_to_old_node(redis: &Redis, node: &str, target: &str, sender: &str) {
    use switchboard_server::cluster::{keys::Keys, wire};
    use switchboard_server::peer_id::{NodeId, PeerId};
    let keys = Keys::new("switchboard");
    let (target, sender) = (PeerId::parse(target).expect("id"), PeerId::parse(sender).expect("id"));
    let node = NodeId::parse(node).expect("a node id");
    let frame = json!({"type": "offer", "target": target.as_str(), "n": 1, "from": sender.as_str()}).to_string();
    let payload = String::from_utf8(wire::relay(target, sender, node, &frame)).expect("text");
    assert_eq!(redis.cli(&["PUBLISH", &keys.inbox(node), &payload]), "1", "the old node hears its inbox");
}

/// Reads the next two messages: the departed peer's offer, then its `peer-left`.
async fn offer_then_peer_left(client: &mut Client, departed: &str) {
    let first = recv_json(client).await.expect("a message");
    assert_eq!(
        (first["type"].as_str(), first["from"].as_str()),
        (Some("offer"), Some(departed)),
        "first the relay the departed peer sent before it left: {first}"
    );
    assert_eq!(
        recv_json(client).await.expect("a message"),
        json!({"type": "peer-left", "data": departed, "room": "r"}),
        "then that it left"
    );
}

/// Three nodes; a resumable target `t` on the first and a sender `s` on the
/// third, in room "r": the first parks `t`, the second claims it.
struct Handover {
    redis: Redis,
    servers: Vec<Server>,
    t: Client,
    s: Client,
    t_id: String,
    s_id: String,
    token: String,
}

impl Handover {
    async fn start() -> Handover {
        let redis = Redis::start();
        let servers = nodes(&redis, 3, "1s", "10s").await;
        let mut t = resumable(&servers[0], None).await;
        let mut s = servers[2].client().await;
        t.join("r").await.unwrap();
        s.join("r").await.unwrap();
        assert_eq!(recv_json(&mut t).await.unwrap()["type"], "peer-joined");
        let (t_id, s_id) = (t.id().to_owned(), s.id().to_owned());
        let token = t.resume_token().unwrap().to_owned();
        Handover { redis, servers, t, s, t_id, s_id, token }
    }
}

#[tokio::test]
async fn a_departure_waits_for_the_relays_the_parking_node_still_passes_on_to_a_claimed_session() {
    let Handover { redis, servers, t, mut s, t_id, s_id, token } = Handover::start().await;
    let (parking, claiming) = (&servers[0], &servers[1]);

    // Taken over from its live node, which parks it and passes relays on.
    let _taken_over = t;
    let mut t = resume(claiming, &token, &t_id).await;
    // A relay sent to the old node before its sender heard of the move is
    // still on its way there (the node is slow: stopped), when its sender leaves.
    signal(parking, "STOP");
    relay_to_old_node(&redis, &node_id(parking), &t_id, &s_id);
    s.send(&json!({"type": "leave", "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut s).await.unwrap()["type"], "left");
    tokio::time::sleep(Duration::from_millis(150)).await;
    signal(parking, "CONT");
    offer_then_peer_left(&mut t, &s_id).await;
}

#[tokio::test]
async fn a_session_claimed_after_a_departure_gets_the_relays_its_parking_node_passes_on_first() {
    let Handover { redis, servers, t, mut s, t_id, s_id, token } = Handover::start().await;
    let (parking, claiming) = (&servers[0], &servers[1]);

    // The connection drops: its node (alive) parks the session.
    drop(t);
    let session = switchboard_server::cluster::keys::Keys::new("switchboard")
        .session(switchboard_server::peer_id::PeerId::parse(&t_id).expect("id"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let parked = || {
        redis.cli(&["HEXISTS", &session, "owner"]) == "1"
            && redis.cli(&["HGET", &session, "owner"]).is_empty()
            && redis.cli(&["HGET", &session, "parking"]).is_empty()
    };
    while !parked() {
        assert!(std::time::Instant::now() < deadline, "parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A relay on its way to the parking node (slow: stopped) when its sender leaves.
    signal(parking, "STOP");
    relay_to_old_node(&redis, &node_id(parking), &t_id, &s_id);
    s.send(&json!({"type": "leave", "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut s).await.unwrap()["type"], "left");
    let pid = parking.pid();
    let wake = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = std::process::Command::new("kill").arg("-CONT").arg(pid.to_string()).status();
    });
    let mut t = resume(claiming, &token, &t_id).await;
    wake.await.unwrap();
    offer_then_peer_left(&mut t, &s_id).await;
}
