//! The y-webrtc dialect (`/y-webrtc`) at the wire, against the real binary:
//! subscribe, publish with `clients`, ping, the limits, what is dropped, auth,
//! and topics shared by two nodes over a real Redis.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::redis::Redis;
use support::Server;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "test-secret-for-hs256";

async fn open(server: &Server) -> Socket {
    open_url(&server.ws_url("/y-webrtc")).await
}

async fn open_url(url: &str) -> Socket {
    connect_async(url.into_client_request().unwrap()).await.expect("connect to /y-webrtc").0
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("send");
}

/// The next text frame, as it came.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("open socket")
            .expect("valid frame");
        match message {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn next(socket: &mut Socket) -> Value {
    serde_json::from_str(&next_text(socket).await).expect("JSON from the server")
}

async fn assert_quiet(socket: &mut Socket) {
    if let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(300), socket.next()).await {
        panic!("expected silence, got {message:?}");
    }
}

/// Ping → pong: everything sent before the ping has been handled.
async fn sync(socket: &mut Socket) {
    send(socket, json!({"type": "ping"})).await;
    assert_eq!(next_text(socket).await, r#"{"type":"pong"}"#);
}

async fn subscribe(socket: &mut Socket, topics: &[&str]) {
    send(socket, json!({"type": "subscribe", "topics": topics})).await;
    sync(socket).await;
}

/// Waits for the server to close the socket; returns the close code.
async fn closed(socket: &mut Socket) -> Option<CloseCode> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

fn dropped(reason: &str) -> String {
    format!(r#"switchboard_dialect_dropped_total{{dialect="y-webrtc",reason="{reason}"}}"#)
}

#[tokio::test]
async fn publish_reaches_every_subscriber_with_the_count_and_its_bytes_untouched() {
    let server = Server::start(&[]);
    let (mut a, mut b, mut outsider) = (open(&server).await, open(&server).await, open(&server).await);
    subscribe(&mut a, &["doc"]).await;
    subscribe(&mut b, &["doc", "doc"]).await; // twice is once
    subscribe(&mut outsider, &["other"]).await;

    // Forwarded whole, the sender included, `clients` set (a forged one replaced),
    // every other byte as the client wrote it.
    let frame = r#"{"type":"publish","topic":"doc","data":{"n":1.50,"s":"\u00e9"},"clients":99}"#;
    a.send(Message::text(frame)).await.unwrap();
    let expected = r#"{"type":"publish","topic":"doc","data":{"n":1.50,"s":"\u00e9"},"clients":2}"#;
    assert_eq!(next_text(&mut a).await, expected);
    assert_eq!(next_text(&mut b).await, expected);
    assert_quiet(&mut outsider).await;

    // A non-subscriber may publish: the subscribers get it, it does not.
    send(&mut outsider, json!({"type": "publish", "topic": "doc", "data": "c2VjcmV0"})).await;
    for socket in [&mut a, &mut b] {
        assert_eq!(next(socket).await, json!({"type": "publish", "topic": "doc", "data": "c2VjcmV0", "clients": 2}));
    }
    assert_quiet(&mut outsider).await;

    // Unsubscribe stops delivery and lowers the count; non-string topics are ignored.
    send(&mut b, json!({"type": "unsubscribe", "topics": [1, "doc", null]})).await;
    sync(&mut b).await;
    send(&mut a, json!({"type": "publish", "topic": "doc", "data": 1})).await;
    assert_eq!(next(&mut a).await["clients"], 1);
    assert_quiet(&mut b).await;

    // A publish to a topic nobody subscribed to goes nowhere.
    send(&mut a, json!({"type": "publish", "topic": "nobody", "data": 1})).await;
    assert_quiet(&mut a).await;
}

#[tokio::test]
async fn topics_are_rooms_of_their_own_counted_and_left_on_disconnect() {
    let server = Server::start(&[]);
    let mut a = open(&server).await;
    let mut b = open(&server).await;
    server.wait_metric(r#"switchboard_connections{endpoint="y-webrtc"}"#, 2.0).await;
    subscribe(&mut a, &["shared", "lobby"]).await;
    subscribe(&mut b, &["shared"]).await;
    server.wait_metric("switchboard_rooms", 2.0).await;

    // A native room of the same name is another room: neither hears the other.
    let mut native = server.client().await;
    native.send(&json!({"type": "join", "room": "lobby"})).await.unwrap();
    let joined: Value = serde_json::from_str(&native.recv_text().await.unwrap()).unwrap();
    assert_eq!(joined["peers"], json!([]), "the y-webrtc subscriber is not in the native room");
    native.send(&json!({"type": "broadcast", "room": "lobby", "data": "hi"})).await.unwrap();
    assert_quiet(&mut a).await;
    server.wait_metric("switchboard_rooms", 3.0).await;

    // Closing leaves every topic.
    b.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        send(&mut a, json!({"type": "publish", "topic": "shared", "data": 1})).await;
        if next(&mut a).await["clients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "b's close did not lower the count");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_metric("switchboard_rooms", 3.0).await;
    a.close(None).await.unwrap();
    server.wait_metric("switchboard_rooms", 1.0).await;
    server.wait_metric(r#"switchboard_connections{endpoint="y-webrtc"}"#, 0.0).await;
}

#[tokio::test]
async fn ping_is_answered_with_exactly_pong() {
    let server = Server::start(&[]);
    let mut a = open(&server).await;
    a.send(Message::text(r#"{"type":"ping","extra":[1]}"#)).await.unwrap();
    assert_eq!(next_text(&mut a).await, r#"{"type":"pong"}"#);
    assert_quiet(&mut a).await;
}

#[tokio::test]
async fn frames_that_are_not_y_webrtc_messages_are_counted_and_the_connection_kept() {
    let server = Server::start(&[]);
    let mut a = open(&server).await;
    let mut b = open(&server).await;
    subscribe(&mut b, &["doc"]).await;
    for frame in [
        "this is not json{",
        "[1,2,3]",
        r#"{"type":"dance"}"#,
        r#"{"type":"subscribe","topics":"doc"}"#,
        r#"{"type":"publish","data":1}"#,
        r#"{"type":"publish","topic":7}"#,
    ] {
        a.send(Message::text(frame)).await.unwrap();
    }
    a.send(Message::binary(vec![0u8, 1, 2, 3])).await.unwrap();
    send(&mut a, json!({"type": "publish", "topic": "doc", "data": {"still": "alive"}})).await;
    assert_eq!(
        next(&mut b).await,
        json!({"type": "publish", "topic": "doc", "data": {"still": "alive"}, "clients": 1})
    );
    sync(&mut a).await;
    assert_eq!(server.metric(&dropped("malformed")).await, 6.0);
    assert_eq!(server.metric(&dropped("binary")).await, 1.0);
}

#[tokio::test]
async fn an_over_long_topic_is_refused_alone_and_too_many_topics_close_the_connection() {
    let server = Server::start(&["--y-webrtc-max-topics", "3", "--y-webrtc-max-topic-len", "16"]);
    let mut a = open(&server).await;
    let mut b = open(&server).await;
    let long = "x".repeat(17);
    let longest = "y".repeat(16);
    subscribe(&mut a, &[&long, &longest]).await;
    subscribe(&mut b, &[&long]).await;
    assert_eq!(server.metric(&dropped("limit")).await, 2.0);
    // The 16-byte topic works; the 17-byte one was never subscribed, nor can
    // it be published to.
    send(&mut b, json!({"type": "publish", "topic": long, "data": 1})).await;
    send(&mut b, json!({"type": "publish", "topic": longest, "data": 2})).await;
    assert_eq!(next(&mut a).await, json!({"type": "publish", "topic": longest, "data": 2, "clients": 1}));
    assert_eq!(server.metric(&dropped("limit")).await, 3.0);

    // Three topics in all: re-subscribing one already held costs nothing...
    subscribe(&mut a, &["t1", "t2", &longest]).await;
    // ...a fourth closes the connection (1008), after it has left every topic.
    send(&mut a, json!({"type": "subscribe", "topics": ["t3"]})).await;
    assert_eq!(closed(&mut a).await, Some(CloseCode::Policy));
    assert_eq!(server.metric(&dropped("limit")).await, 4.0);
    send(&mut b, json!({"type": "publish", "topic": "t1", "data": 3})).await;
    assert_quiet(&mut b).await;
    server.wait_metric("switchboard_rooms", 0.0).await;
}

/// One masked client text frame (a zero mask: the payload as it is).
fn raw_text_frame(text: &str) -> Vec<u8> {
    let mut frame = vec![0x81u8];
    match text.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    frame
}

#[tokio::test]
async fn a_client_that_talks_on_instead_of_answering_its_close_frame_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["--y-webrtc-max-topics", "1"]);
    // A hand-made client that never answers a close frame and keeps sending.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let handshake = format!(
        "GET /y-webrtc HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "no handshake answer");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&received));
    let head = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut frames = received.split_off(head);

    tcp.write_all(&raw_text_frame(r#"{"type":"subscribe","topics":["a","b"]}"#)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended = loop {
        assert!(Instant::now() < deadline, "the connection was not dropped");
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => frames.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if tcp.write_all(&raw_text_frame(r#"{"type":"ping"}"#)).await.is_err() {
            break true;
        }
    };
    assert!(ended);
    // What the server sent: a close frame (1008), and nothing after it.
    assert_eq!(frames.first(), Some(&0x88), "a close frame: {frames:?}");
    let len = (frames[1] & 0x7f) as usize;
    assert_eq!(&frames[2..4], &1008u16.to_be_bytes());
    assert_eq!(frames.len(), 2 + len, "nothing after the close frame");
    server.wait_metric(r#"switchboard_connections{endpoint="y-webrtc"}"#, 0.0).await;
}

#[tokio::test]
async fn a_frame_over_max_message_size_closes_with_1009() {
    let server = Server::start(&["--max-message-size", "2048"]);
    let mut a = open(&server).await;
    send(&mut a, json!({"type": "publish", "topic": "doc", "data": "x".repeat(4096)})).await;
    assert_eq!(closed(&mut a).await, Some(CloseCode::Size));
}

/// Mints a token with the real `switchboard token` command.
fn token(sub: &str, rooms: &[&str]) -> String {
    let mut args = vec!["token", "--sub", sub, "--ttl", "1h", "--auth-secret", SECRET];
    for room in rooms {
        args.extend(["--room", room]);
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn with_auth_required_the_token_comes_on_the_url_and_its_room_patterns_apply_to_topics() {
    let server = Server::start(&["--auth", "required", "--auth-secret", SECRET]);
    let url = server.ws_url("/y-webrtc");
    for bad in [url.clone(), format!("{url}?token=not.a.jwt")] {
        match connect_async(bad.into_client_request().unwrap()).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    let mut a = open_url(&format!("{url}?token={}", token("alice", &["doc-*"]))).await;
    let mut b = open_url(&format!("{url}?token={}", token("bob", &[]))).await;
    subscribe(&mut a, &["doc-1", "secret"]).await;
    subscribe(&mut b, &["doc-1", "secret"]).await;
    assert_eq!(server.metric(&dropped("limit")).await, 1.0);
    send(&mut b, json!({"type": "publish", "topic": "secret", "data": 1})).await;
    assert_eq!(next(&mut b).await["clients"], 1, "alice is not subscribed to `secret`");
    send(&mut b, json!({"type": "publish", "topic": "doc-1", "data": 2})).await;
    assert_eq!(next(&mut a).await, json!({"type": "publish", "topic": "doc-1", "data": 2, "clients": 2}));
    // Nor may alice publish outside her patterns.
    send(&mut a, json!({"type": "publish", "topic": "secret", "data": 3})).await;
    sync(&mut a).await;
    assert_eq!(server.metric(&dropped("limit")).await, 2.0);
    next(&mut b).await; // doc-1's publish, to b too
    assert_quiet(&mut b).await;
}

/// A node on `redis` that reaps dead peers quickly, with no rate limit.
fn node(redis: &Redis) -> Server {
    Server::start(&["--redis", &redis.url(), "--node-ttl", "1s", "--redis-timeout", "500ms"])
}

/// Publishes from `from` until its own copy says `clients`; returns that copy.
async fn publish_until(from: &mut Socket, topic: &str, data: Value, clients: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        send(from, json!({"type": "publish", "topic": topic, "data": data})).await;
        let got = next(from).await;
        if got["clients"] == clients {
            return got;
        }
        assert!(Instant::now() < deadline, "clients never reached {clients}: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn subscribers_on_two_nodes_get_each_other_s_publishes_counted_cluster_wide() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis)];
    for node in &nodes {
        node.wait_broker_up().await;
    }
    let mut a = open(&nodes[0]).await;
    let mut b = open(&nodes[1]).await;
    subscribe(&mut a, &["doc"]).await;
    subscribe(&mut b, &["doc"]).await;

    let got = publish_until(&mut a, "doc", json!({"from": "a"}), 2).await;
    assert_eq!(got, json!({"type": "publish", "topic": "doc", "data": {"from": "a"}, "clients": 2}));
    // b saw that one last (and maybe earlier ones while the count converged).
    let mut last = next(&mut b).await;
    while last != got {
        last = next(&mut b).await;
    }
    send(&mut b, json!({"type": "publish", "topic": "doc", "data": {"from": "b"}})).await;
    let back = json!({"type": "publish", "topic": "doc", "data": {"from": "b"}, "clients": 2});
    assert_eq!(next(&mut b).await, back);
    assert_eq!(next(&mut a).await, back);

    // A publisher on a node where nobody is subscribed: the count comes from Redis.
    let mut stranger = open(&nodes[1]).await;
    subscribe(&mut a, &["only-on-0"]).await;
    send(&mut stranger, json!({"type": "publish", "topic": "only-on-0", "data": "x"})).await;
    assert_eq!(next(&mut a).await, json!({"type": "publish", "topic": "only-on-0", "data": "x", "clients": 1}));
    assert_quiet(&mut stranger).await;

    // b's disconnect on node 1 lowers the count on node 0.
    b.close(None).await.unwrap();
    publish_until(&mut a, "doc", json!({"alone": true}), 1).await;
}
