//! One membership path, two deployments: the same scenarios run against a
//! single in-memory node and against two nodes sharing rooms over a real
//! Redis, with the peers split between the nodes. The servers run in this
//! process through the library's `serve_on`, over real sockets; the tests get
//! their addresses from it rather than from logs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_client::Client;
use switchboard_server::server::{bind, serve_on};
use switchboard_server::Settings;
use tokio::sync::oneshot;

use support::redis::Redis;

/// A server in this process; stopped (gracefully) when dropped.
struct Node {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Node {
    async fn start(extra: &[&str]) -> Node {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--node-ttl", "1s"];
        args.extend_from_slice(extra);
        let settings = Settings::from_args(args).expect("valid settings");
        settings.validate().expect("valid settings");
        let listener = bind(settings.listen).expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, server) = serve_on(listener, settings, async move {
            let _ = stopped.await;
        })
        .await
        .expect("the server starts");
        tokio::spawn(server);
        let node = Node { addr, stop: Some(stop) };
        node.wait_ready().await;
        node
    }

    /// Until `/readyz` says the broker (if any) is up.
    async fn wait_ready(&self) {
        for _ in 0..200 {
            let (status, body) = support::http_get(self.addr, "/readyz").await;
            if status == 200 && !body.contains("\"down\"") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} never became ready", self.addr);
    }

    async fn client(&self) -> Client {
        let mut client = Client::connect(&format!("ws://{}/ws", self.addr)).await.expect("connect");
        client.set_timeout(Duration::from_secs(10));
        client
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The deployments every scenario runs on: each gives two nodes, which are
/// the same node on its own.
enum Deployment {
    Single(Node),
    Shared(Node, Node, #[allow(dead_code)] Redis),
}

impl Deployment {
    async fn single() -> Deployment {
        Deployment::Single(Node::start(&[]).await)
    }

    async fn shared() -> Deployment {
        let redis = Redis::start();
        let url = redis.url();
        let one = Node::start(&["--redis", &url]).await;
        let two = Node::start(&["--redis", &url]).await;
        Deployment::Shared(one, two, redis)
    }

    fn nodes(&self) -> (&Node, &Node) {
        match self {
            Deployment::Single(node) => (node, node),
            Deployment::Shared(one, two, _) => (one, two),
        }
    }
}

async fn recv_json(client: &mut Client) -> Value {
    serde_json::from_str(&client.recv_text().await.expect("a message")).expect("JSON")
}

async fn join(client: &mut Client, room: &str, extra: Value) -> Value {
    let mut message = json!({"type": "join", "room": room});
    message.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    client.send(&message).await.unwrap();
    recv_json(client).await
}

/// Join, relay (with a forged and a blanked `from`), broadcast, capacity,
/// leave: what a peer sees does not depend on the deployment.
async fn membership_and_delivery(deployment: Deployment) {
    let (one, two) = deployment.nodes();
    let (mut a, mut b, mut c) = (one.client().await, two.client().await, two.client().await);
    let joined = join(&mut a, "call", json!({"capacity": 2, "meta": {"name": "a"}})).await;
    assert_eq!((&joined["type"], &joined["capacity"]), (&json!("joined"), &json!(2)), "{joined}");
    assert_eq!(joined["peers"], json!([]));

    let joined = join(&mut b, "call", json!({"meta": {"name": "b"}})).await;
    assert_eq!(joined["peers"], json!([{"id": a.id(), "meta": {"name": "a"}}]), "{joined}");
    let event = recv_json(&mut a).await;
    assert_eq!(event, json!({"type": "peer-joined", "room": "call", "data": b.id(), "meta": {"name": "b"}}));

    let full = join(&mut c, "call", json!({"rid": 1})).await;
    assert_eq!((&full["code"], &full["rid"]), (&json!("room-full"), &json!(1)), "{full}");

    // `from` is always the real sender, however the client spelled its own.
    for forged in [r#""from":null"#, r#""from":"mallory""#, r#""fr\u006fm":null"#] {
        let frame = format!(r#"{{"type":"offer","target":"{}",{forged},"sdp":"v=0"}}"#, b.id());
        a.send_text(&frame).await.unwrap();
        let offer = recv_json(&mut b).await;
        assert_eq!((&offer["from"], &offer["sdp"]), (&json!(a.id()), &json!("v=0")), "{forged}: {offer}");
    }
    b.send(&json!({"type": "answer", "target": a.id(), "sdp": "ok", "rid": "r"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await, json!({"type": "ack", "rid": "r"}));
    assert_eq!(recv_json(&mut a).await["from"], json!(b.id()));

    b.send(&json!({"type": "broadcast", "data": {"hello": 1}})).await.unwrap();
    let broadcast = recv_json(&mut a).await;
    assert_eq!(broadcast, json!({"type": "broadcast", "from": b.id(), "room": "call", "data": {"hello": 1}}));

    // A relay to a peer in none of the sender's rooms is refused, not delivered.
    c.send(&json!({"type": "join", "room": "elsewhere"})).await.unwrap();
    recv_json(&mut c).await;
    a.send(&json!({"type": "offer", "target": c.id(), "sdp": "x", "rid": 2})).await.unwrap();
    let refused = recv_json(&mut a).await;
    assert_eq!(refused["rid"], json!(2), "{refused}");
    assert!(refused["code"] == json!("no-shared-room") || refused["code"] == json!("unknown-target"), "{refused}");

    b.send(&json!({"type": "leave", "room": "call", "rid": 3})).await.unwrap();
    assert_eq!(recv_json(&mut b).await, json!({"type": "left", "rooms": ["call"], "rid": 3}));
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "room": "call", "data": b.id()}));

    // The place b left is free again, and a disconnect is a departure too.
    let joined = join(&mut c, "call", json!({})).await;
    assert_eq!(joined["peers"], json!([{"id": a.id(), "meta": {"name": "a"}}]), "{joined}");
    assert_eq!(recv_json(&mut a).await["data"], json!(c.id()));
    let c_id = c.id().to_owned();
    c.close().await.unwrap();
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "room": "call", "data": c_id}));
}

#[tokio::test]
async fn membership_and_delivery_on_one_node() {
    membership_and_delivery(Deployment::single().await).await;
}

#[tokio::test]
async fn membership_and_delivery_across_two_nodes_over_redis() {
    membership_and_delivery(Deployment::shared().await).await;
}

/// Twelve peers race for a room of three, half of them on each node: exactly
/// three get in, and the three agree on who is there.
async fn capacity_under_a_race(deployment: Deployment) {
    let (one, two) = deployment.nodes();
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(if i % 2 == 0 { one.client().await } else { two.client().await });
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let answer = join(&mut client, "race", json!({"capacity": 3})).await;
                (answer["type"] == json!("joined"), answer, client)
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        let (ok, answer, client) = task.await.unwrap();
        if ok {
            admitted.push((answer, client));
        } else {
            assert_eq!(answer["code"], json!("room-full"), "{answer}");
        }
    }
    assert_eq!(admitted.len(), 3);
    let ids: Vec<String> = admitted.iter().map(|(_, c)| c.id().to_owned()).collect();
    for (answer, client) in &mut admitted {
        let mut seen: Vec<String> =
            answer["peers"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
        while seen.len() < 2 {
            let event = recv_json(client).await;
            assert_eq!(event["type"], json!("peer-joined"), "{event}");
            seen.push(event["data"].as_str().unwrap().to_owned());
        }
        let mut expected: Vec<String> = ids.iter().filter(|id| *id != client.id()).cloned().collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
    }
}

#[tokio::test]
async fn capacity_under_a_race_on_one_node() {
    capacity_under_a_race(Deployment::single().await).await;
}

#[tokio::test]
async fn capacity_under_a_race_across_two_nodes_over_redis() {
    capacity_under_a_race(Deployment::shared().await).await;
}
