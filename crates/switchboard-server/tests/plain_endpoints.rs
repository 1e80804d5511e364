//! The seeds' plain endpoints: echo, broadcast, Server-Sent Events; and the
//! membership stream of a signaling room.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{http_get, http_open, read_until, Server};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(server: &Server, path: &str) -> Socket {
    connect_async(server.ws_url(path)).await.expect("connect").0
}

async fn next(socket: &mut Socket) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("open socket")
            .expect("valid frame");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

async fn assert_quiet(socket: &mut Socket) {
    if let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(300), socket.next()).await {
        panic!("expected silence, got {message:?}");
    }
}

#[tokio::test]
async fn echo_answers_text_like_the_seed_and_returns_binary_unchanged() {
    let server = Server::start(&[]);
    let mut socket = open(&server, "/ws/echo").await;
    socket.send(Message::text("Hello from client!")).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("Server received: Hello from client!"));
    let bytes: Vec<u8> = (0..=255).collect();
    socket.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::binary(bytes));
}

#[tokio::test]
async fn a_client_close_frame_is_answered_with_the_same_code() {
    let server = Server::start(&[]);
    for path in ["/ws/echo", "/ws"] {
        let mut socket = open(&server, path).await;
        let goodbye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
        socket.send(Message::Close(Some(goodbye))).await.unwrap();
        // The server's echo of the close frame completes the handshake; without
        // it the client sees the TCP connection reset or end without one.
        let answer = loop {
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer in time") {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("{path}: expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(answer.map(|frame| frame.code), Some(CloseCode::Normal), "{path}");
    }
}

#[tokio::test]
async fn broadcast_goes_to_every_other_client_of_the_channel_only() {
    let server = Server::start(&[]);
    let mut a = open(&server, "/ws/broadcast").await;
    let mut b = open(&server, "/ws/broadcast").await;
    let mut c = open(&server, "/ws/broadcast").await;
    let mut other_channel = open(&server, "/ws/broadcast?channel=news").await;
    // Subscription happens after the upgrade; give it a moment to land.
    tokio::time::sleep(Duration::from_millis(100)).await;

    a.send(Message::text("hi all")).await.unwrap();
    assert_eq!(next(&mut b).await, Message::text("hi all"));
    assert_eq!(next(&mut c).await, Message::text("hi all"));
    c.send(Message::binary(vec![7, 8, 9])).await.unwrap();
    assert_eq!(next(&mut a).await, Message::binary(vec![7, 8, 9]));
    assert_eq!(next(&mut b).await, Message::binary(vec![7, 8, 9]));
    assert_quiet(&mut a).await;
    assert_quiet(&mut c).await;
    assert_quiet(&mut other_channel).await;

    let mut news_reader = open(&server, "/ws/broadcast?channel=news").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    other_channel.send(Message::text("headline")).await.unwrap();
    assert_eq!(next(&mut news_reader).await, Message::text("headline"));
    assert_quiet(&mut a).await;
}

#[tokio::test]
async fn a_bad_channel_name_is_refused_before_the_upgrade() {
    let server = Server::start(&["--max-room-name-len", "4"]);
    let err = connect_async(server.ws_url("/ws/broadcast?channel=far-too-long")).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
}

#[tokio::test]
async fn sse_ticks_with_ids_and_resumes_after_last_event_id() {
    let server = Server::start(&["--sse-interval", "50ms"]);
    let mut stream = http_open(server.addr, "/sse", "").await;
    let seen = read_until(&mut stream, "\n\n", 4).await;
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let events: Vec<(u64, Value)> = parse_events(&seen);
    assert!(events.len() >= 2, "{seen}");
    for (i, (id, data)) in events.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1);
        assert_eq!(data["message"], "Hello from server!");
        assert_eq!(data["seq"], *id);
    }

    let mut resumed = http_open(server.addr, "/sse", "Last-Event-ID: 41\r\n").await;
    let seen = read_until(&mut resumed, "data:", 1).await;
    assert_eq!(parse_events(&seen)[0].0, 42);
}

#[tokio::test]
async fn an_sse_client_that_goes_away_leaves_nothing_behind() {
    let server = Server::start(&["--sse-interval", "20ms"]);
    let gauge = "switchboard_sse_streams{endpoint=\"sse\"}";
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut stream = http_open(server.addr, "/sse", "").await;
        read_until(&mut stream, "data:", 1).await;
        streams.push(stream);
    }
    server.wait_metric(gauge, 5.0).await;
    drop(streams);
    // The server notices on its next write and drops the stream, its timer with it.
    server.wait_metric(gauge, 0.0).await;
}

#[tokio::test]
async fn a_room_stream_shows_membership_as_it_changes() {
    let server = Server::start(&[]);
    let mut first = server.client().await;
    first.join_with(json!({"type": "join", "room": "stage", "meta": {"name": "Ada"}})).await.unwrap();

    let mut stream = http_open(server.addr, "/sse/rooms/stage", "").await;
    let seen = read_until(&mut stream, "data:", 1).await;
    let snapshot = parse_data(&seen);
    assert_eq!(
        snapshot[0],
        json!({"type": "room-state", "room": "stage", "peers": [{"id": first.id(), "meta": {"name": "Ada"}}]})
    );

    let second = server.client().await;
    let second_id = second.id().to_owned();
    let mut second = second;
    second.join("stage").await.unwrap();
    second.close().await.unwrap();
    let seen = read_until(&mut stream, "data:", 2).await;
    let events = parse_data(&seen);
    assert_eq!(events[0], json!({"type": "peer-joined", "data": second_id, "room": "stage"}));
    assert_eq!(events[1], json!({"type": "peer-left", "data": second_id, "room": "stage"}));

    let gauge = "switchboard_sse_streams{endpoint=\"room\"}";
    server.wait_metric(gauge, 1.0).await;
    drop(stream);
    // Leave traffic on the room so the server writes, notices the gone client, and cleans up.
    first.send(&json!({"type": "leave"})).await.unwrap();
    server.wait_metric(gauge, 0.0).await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = Server::start(&[]);
    assert_eq!(http_get(server.addr, "/healthz").await, (200, "ok".into()));
    let (status, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"status": "ready"}));

    let mut client = server.client().await;
    client.join("m").await.unwrap();
    server.wait_metric("switchboard_connections{endpoint=\"signaling\"}", 1.0).await;
    assert_eq!(server.metric("switchboard_rooms").await, 1.0);
    assert_eq!(server.metric("switchboard_peers").await, 1.0);
    assert_eq!(server.metric("switchboard_messages_in_total{type=\"join\"}").await, 1.0);
    assert_eq!(server.metric("switchboard_messages_out_total{type=\"welcome\"}").await, 1.0);
    drop(client);
    server.wait_metric("switchboard_rooms", 0.0).await;
    server.wait_metric("switchboard_connections{endpoint=\"signaling\"}", 0.0).await;
    assert_eq!(http_get(server.addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn demo_pages_and_the_sdk_are_served_with_revalidation() {
    let server = Server::start(&[]);
    let (status, head, body) = support::http_get_with(server.addr, "/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.to_ascii_lowercase().contains("<html"), "{body}");

    let (status, head, body) = support::http_get_with(server.addr, "/sdk/switchboard.js", "").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/javascript") || head.contains("content-type: application/javascript"),
        "{head}"
    );
    assert!(body.contains("export"), "the SDK is an ES module");
    let etag = head.lines().find_map(|line| line.strip_prefix("etag: ")).expect("an etag").to_owned();
    let (status, _, body) =
        support::http_get_with(server.addr, "/sdk/switchboard.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!((status, body.as_str()), (304, ""));

    assert_eq!(http_get(server.addr, "/sdk/Cargo.toml").await.0, 404, "only the SDK files are exposed");
    assert_eq!(http_get(server.addr, "/no-such-page.html").await.0, 404);
    assert_eq!(http_get(server.addr, "/../Cargo.toml").await.0, 404);
}

/// The `data:` JSON of every complete event.
fn parse_data(stream: &str) -> Vec<Value> {
    stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

/// `(id, data)` of every complete event.
fn parse_events(stream: &str) -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    let mut id = None;
    for line in stream.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().ok();
        } else if let Some(data) = line.strip_prefix("data:") {
            if let (Some(id), Ok(data)) = (id.take(), serde_json::from_str(data.trim())) {
                events.push((id, data));
            }
        }
    }
    events
}
