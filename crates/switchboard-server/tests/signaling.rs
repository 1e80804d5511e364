//! The signaling protocol on `/ws`, driven over real sockets against the real binary.

mod support;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::Server;
use switchboard_client::protocol::ServerMessage;
use switchboard_client::{Client, ClientError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn recv_json(client: &mut Client) -> Value {
    let text = client.recv_text().await.expect("a message");
    serde_json::from_str(&text).expect("JSON from the server")
}

/// Asserts the next message is an error with `code`, and returns it.
async fn expect_error(client: &mut Client, code: &str) -> Value {
    let message = recv_json(client).await;
    assert_eq!(message["type"], "error", "expected error {code}, got {message}");
    assert_eq!(message["code"], code, "{message}");
    assert!(message["message"].as_str().is_some_and(|m| !m.is_empty()), "{message}");
    message
}

/// Asserts the connection still works: a ping is answered with a pong.
async fn assert_alive(client: &mut Client) {
    client.send(&json!({"type": "ping", "rid": "alive"})).await.unwrap();
    assert_eq!(recv_json(client).await, json!({"type": "pong", "rid": "alive"}));
}

/// Asserts nothing arrives within a short window.
async fn assert_quiet(client: &mut Client) {
    client.set_timeout(std::time::Duration::from_millis(300));
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(switchboard_client::DEFAULT_TIMEOUT);
}

#[tokio::test]
async fn the_seed_flow_works_with_the_seed_message_shapes() {
    let server = Server::start(&[]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_ne!(a.id(), b.id());

    a.send(&json!({"type": "join"})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["type"], "joined");
    b.send(&json!({"type": "join"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await["peers"][0]["id"], a.id());
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-joined", "data": b.id(), "room": "default"}));

    let sdp = json!({"type": "sdp", "target": a.id(), "sdp": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}});
    b.send(&sdp).await.unwrap();
    let mut expected = sdp.clone();
    expected["from"] = json!(b.id());
    assert_eq!(recv_json(&mut a).await, expected);

    let ice = json!({"type": "ice-candidate", "target": b.id(), "candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}});
    a.send(&ice).await.unwrap();
    let mut expected = ice.clone();
    expected["from"] = json!(a.id());
    assert_eq!(recv_json(&mut b).await, expected);

    let b_id = b.id().to_owned();
    b.close().await.unwrap();
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b_id, "room": "default"}));
}

#[tokio::test]
async fn a_client_supplied_from_is_overwritten() {
    let server = Server::start(&[]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    recv_json(&mut a).await; // peer-joined
    b.send(&json!({"type": "offer", "target": a.id(), "from": a.id(), "sdp": "x"})).await.unwrap();
    let got = recv_json(&mut a).await;
    assert_eq!(got["from"], b.id());
    assert_eq!(got["sdp"], "x");
}

#[tokio::test]
async fn join_reports_who_is_there_with_meta_in_join_order() {
    let server = Server::start(&[]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.join_with(json!({"type": "join", "room": "call", "meta": {"name": "Ada"}})).await.unwrap();
    b.join_with(json!({"type": "join", "room": "call", "meta": {"name": "Bo"}})).await.unwrap();
    let joined_b = recv_json(&mut a).await;
    assert_eq!(joined_b, json!({"type": "peer-joined", "data": b.id(), "room": "call", "meta": {"name": "Bo"}}));

    c.send(&json!({"type": "join", "room": "call", "rid": 9})).await.unwrap();
    assert_eq!(
        recv_json(&mut c).await,
        json!({"type": "joined", "room": "call", "rid": 9, "peers": [
            {"id": a.id(), "meta": {"name": "Ada"}},
            {"id": b.id(), "meta": {"name": "Bo"}},
        ]})
    );
}

#[tokio::test]
async fn every_relay_type_reaches_its_target_with_every_field() {
    let server = Server::start(&[]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    recv_json(&mut a).await;
    for kind in ["sdp", "ice-candidate", "offer", "answer", "candidate", "signal"] {
        let message =
            json!({"type": kind, "target": b.id(), "payload": {"kind": kind, "n": [1, 2.5, null, true]}, "rid": kind});
        a.send(&message).await.unwrap();
        assert_eq!(recv_json(&mut a).await, json!({"type": "ack", "rid": kind}));
        let mut expected = message.clone();
        expected["from"] = json!(a.id());
        assert_eq!(recv_json(&mut b).await, expected);
    }
}

#[tokio::test]
async fn broadcast_reaches_every_other_member_and_not_the_sender() {
    let server = Server::start(&[]);
    let mut peers = Vec::new();
    for _ in 0..4 {
        let mut peer = server.client().await;
        peer.join("room").await.unwrap();
        peers.push(peer);
    }
    // Drain the peer-joined notices.
    for (i, peer) in peers.iter_mut().enumerate() {
        for _ in i + 1..4 {
            assert_eq!(recv_json(peer).await["type"], "peer-joined");
        }
    }
    let sender = peers[0].id().to_owned();
    peers[0].send(&json!({"type": "broadcast", "data": {"text": "hi"}})).await.unwrap();
    for peer in &mut peers[1..] {
        assert_eq!(
            recv_json(peer).await,
            json!({"type": "broadcast", "from": sender, "room": "room", "data": {"text": "hi"}})
        );
    }
    assert_quiet(&mut peers[0]).await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = Server::start(&[]);
    let (mut a, mut b, mut outsider) = (server.client().await, server.client().await, server.client().await);
    a.join("one").await.unwrap();
    b.join("one").await.unwrap();
    recv_json(&mut a).await;
    outsider.join("two").await.unwrap();
    outsider.send(&json!({"type": "broadcast", "data": 1})).await.unwrap();
    assert_quiet(&mut a).await;
    assert_quiet(&mut b).await;

    outsider.send(&json!({"type": "signal", "target": a.id(), "rid": 1})).await.unwrap();
    let error = expect_error(&mut outsider, "no-shared-room").await;
    assert_eq!(error["rid"], 1);
    assert_quiet(&mut a).await;
}

#[tokio::test]
async fn relay_errors_name_the_problem() {
    let server = Server::start(&[]);
    let (mut a, b) = (server.client().await, server.client().await);
    a.send(&json!({"type": "offer", "target": b.id()})).await.unwrap();
    expect_error(&mut a, "not-in-room").await;
    a.join("r").await.unwrap();
    a.send(&json!({"type": "offer", "target": "AAAAAAAAAAAAAAAAAAAAAA"})).await.unwrap();
    expect_error(&mut a, "unknown-target").await;
    a.send(&json!({"type": "offer", "target": "not an id at all"})).await.unwrap();
    expect_error(&mut a, "unknown-target").await;
    assert_alive(&mut a).await;
}

#[tokio::test]
async fn every_error_code_leaves_the_connection_working() {
    let server = Server::start(&["--max-rooms-per-peer", "2", "--max-room-name-len", "8", "--max-meta-size", "32"]);
    let mut a = server.client().await;
    let mut bystander = server.client().await;
    bystander.join("calm").await.unwrap();

    let cases: Vec<(Value, &str)> = vec![
        (json!("{not json"), "malformed-json"),
        (json!("[1,2,3]"), "malformed-json"),
        (json!({"type": "teleport", "rid": "t"}), "unknown-type"),
        (json!({"no": "type"}), "missing-field"),
        (json!({"type": "offer"}), "missing-field"),
        (json!({"type": "broadcast"}), "missing-field"),
        (json!({"type": "offer", "target": 42}), "invalid-field"),
        (json!({"type": "join", "room": "much-too-long"}), "invalid-field"),
        (json!({"type": "join", "room": "bad\u{7}"}), "invalid-field"),
        (json!({"type": "join", "room": ""}), "invalid-field"),
        (json!({"type": "join", "meta": "not an object"}), "invalid-field"),
        (json!({"type": "join", "meta": {"name": "x".repeat(40)}}), "invalid-field"),
        (json!({"type": "join", "capacity": 0}), "invalid-field"),
        (json!({"type": "ping", "rid": [1]}), "invalid-field"),
        (json!({"type": "leave"}), "not-in-room"),
        (json!({"type": "leave", "room": "nowhere"}), "not-in-room"),
        (json!({"type": "broadcast", "data": 1}), "not-in-room"),
    ];
    for (message, code) in cases {
        let text = match &message {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        a.send_text(&text).await.unwrap();
        expect_error(&mut a, code).await;
        assert_alive(&mut a).await;
    }

    a.join("r1").await.unwrap();
    a.send(&json!({"type": "join", "room": "r1", "rid": "again"})).await.unwrap();
    assert_eq!(expect_error(&mut a, "already-joined").await["rid"], "again");
    a.join("r2").await.unwrap();
    a.send(&json!({"type": "join", "room": "r3"})).await.unwrap();
    expect_error(&mut a, "too-many-rooms").await;
    a.send(&json!({"type": "broadcast", "data": 1})).await.unwrap();
    expect_error(&mut a, "missing-field").await;

    a.socket().send(Message::binary(vec![1, 2, 3])).await.unwrap();
    expect_error(&mut a, "binary-not-supported").await;
    assert_alive(&mut a).await;

    assert_quiet(&mut bystander).await;
    assert_alive(&mut bystander).await;
    assert!(server.metric("switchboard_errors_total{code=\"malformed-json\"}").await >= 2.0);
}

#[tokio::test]
async fn capacity_admits_exactly_that_many_even_when_racing() {
    let server = Server::start(&[]);
    let mut first = server.client().await;
    first.join_with(json!({"type": "join", "room": "duo", "capacity": 2})).await.unwrap();
    let mut racers = Vec::new();
    for _ in 0..6 {
        racers.push(server.client().await);
    }
    for racer in &mut racers {
        racer.send(&json!({"type": "join", "room": "duo"})).await.unwrap();
    }
    let mut admitted = 0;
    for racer in &mut racers {
        match recv_json(racer).await {
            m if m["type"] == "joined" => {
                assert_eq!(m["capacity"], 2);
                admitted += 1;
            }
            m => assert_eq!(m["code"], "room-full", "{m}"),
        }
    }
    assert_eq!(admitted, 1, "one seat was left next to the creator");
}

#[tokio::test]
async fn leave_tells_the_others_and_leave_without_room_leaves_all() {
    let server = Server::start(&[]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    for room in ["x", "y"] {
        a.join(room).await.unwrap();
        b.join(room).await.unwrap();
        recv_json(&mut a).await;
    }
    b.send(&json!({"type": "leave", "room": "x", "rid": 1})).await.unwrap();
    assert_eq!(recv_json(&mut b).await, json!({"type": "left", "rooms": ["x"], "rid": 1}));
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b.id(), "room": "x"}));
    // Still sharing y: relay works.
    b.send(&json!({"type": "signal", "target": a.id()})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["from"], b.id());

    b.send(&json!({"type": "leave"})).await.unwrap();
    assert_eq!(recv_json(&mut b).await, json!({"type": "left", "rooms": ["y"]}));
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b.id(), "room": "y"}));
    b.send(&json!({"type": "signal", "target": a.id()})).await.unwrap();
    expect_error(&mut b, "not-in-room").await;
}

#[tokio::test]
async fn a_disconnect_leaves_every_room() {
    let server = Server::start(&[]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    for room in ["x", "y"] {
        a.join(room).await.unwrap();
        b.join(room).await.unwrap();
        recv_json(&mut a).await;
    }
    let b_id = b.id().to_owned();
    drop(b); // no close frame: the TCP connection just goes away
    let mut rooms = vec![recv_json(&mut a).await, recv_json(&mut a).await];
    rooms.sort_by_key(|m| m["room"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        rooms,
        vec![
            json!({"type": "peer-left", "data": b_id, "room": "x"}),
            json!({"type": "peer-left", "data": b_id, "room": "y"}),
        ]
    );
}

#[tokio::test]
async fn oversized_frames_get_an_error_and_huge_ones_close_1009() {
    let server = Server::start(&["--max-message-size", "2048"]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    recv_json(&mut a).await;

    let big = json!({"type": "signal", "target": b.id(), "blob": "x".repeat(3000)});
    a.send(&big).await.unwrap();
    expect_error(&mut a, "message-too-large").await;
    assert_quiet(&mut b).await;
    assert_alive(&mut a).await;

    let huge = json!({"type": "signal", "target": b.id(), "blob": "x".repeat(9000)});
    a.send(&huge).await.unwrap();
    match a.recv().await {
        Err(ClientError::Closed(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    let b_sees = b.recv().await.unwrap();
    assert!(matches!(b_sees, ServerMessage::PeerLeft { .. }), "{b_sees:?}");
    assert_alive(&mut b).await;
}

#[tokio::test]
async fn invalid_utf8_closes_only_that_connection_with_1007() {
    let server = Server::start(&[]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    // Write a masked text frame with invalid UTF-8 by hand: tungstenite refuses to.
    let frame = raw_frame(0x1, &[0xff, 0xfe, 0xfd]);
    use tokio::io::AsyncWriteExt;
    let stream = a.socket().get_mut();
    match stream {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&frame).await.unwrap(),
        _ => unreachable!("plain ws"),
    }
    match a.recv().await {
        Err(ClientError::Closed(Some(frame))) => assert_eq!(frame.code, CloseCode::Invalid),
        Err(ClientError::WebSocket(_)) | Err(ClientError::Closed(None)) => {}
        other => panic!("expected a close, got {other:?}"),
    }
    assert_alive(&mut b).await;
}

#[tokio::test]
async fn garbage_never_takes_the_server_down() {
    let server = Server::start(&[]);
    let mut witness = server.client().await;
    witness.join("w").await.unwrap();
    // Raw TCP garbage, a truncated handshake, and a frame cut mid-way.
    for garbage in
        [&b"\x00\x01\x02 hello\r\n\r\n"[..], b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n", b"\xff\xff\xff\xff"]
    {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        tcp.write_all(garbage).await.unwrap();
    }
    let mut cut = server.client().await;
    let frame = raw_frame(0x1, br#"{"type":"join","room":"w"}"#);
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = cut.socket().get_mut() {
        use tokio::io::AsyncWriteExt;
        tcp.write_all(&frame[..frame.len() / 2]).await.unwrap();
    }
    drop(cut);
    for text in ["", "null", "{}", "{\"type\":{}}", "{\"type\":\"join\",\"room\":5}", "\u{0}", "{\"type\":\"join\"}{"] {
        let mut c = server.client().await;
        c.send_text(text).await.unwrap();
        assert_eq!(recv_json(&mut c).await["type"], "error", "for {text:?}");
    }
    assert_alive(&mut witness).await;
    let (status, _) = support::http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

/// A client-to-server frame (masked, FIN set) built by hand.
fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn welcome_carries_the_configured_ice_servers_and_only_then() {
    let server = Server::start(&[
        "--ice-server",
        "stun:127.0.0.1:3478",
        "--ice-server",
        "turn:127.0.0.1:3478",
        "--turn-username",
        "user",
        "--turn-credential",
        "secret",
    ]);
    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("/ws")).await.unwrap();
    let welcome = match futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str::<Value>(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        welcome["iceServers"],
        json!([
            {"urls": ["stun:127.0.0.1:3478"]},
            {"urls": ["turn:127.0.0.1:3478"], "username": "user", "credential": "secret"},
        ])
    );

    let plain = Server::start(&[]);
    let (mut socket, _) = tokio_tungstenite::connect_async(plain.ws_url("/ws")).await.unwrap();
    match futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap() {
        Message::Text(text) => {
            let welcome: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(welcome.as_object().unwrap().len(), 2, "exactly the seed shape: {welcome}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn welcome_ids_are_long_random_and_url_safe() {
    let server = Server::start(&[]);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let client = server.client().await;
        let id = client.id().to_owned();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        assert!(ids.insert(id));
    }
}

#[tokio::test]
async fn stream_of_messages_keeps_per_sender_order() {
    let server = Server::start(&["--rate-limit-messages", "0"]);
    let (mut a, mut b) = (server.client().await, server.client().await);
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    recv_json(&mut a).await;
    for n in 0..500 {
        a.send(&json!({"type": "signal", "target": b.id(), "n": n})).await.unwrap();
    }
    for n in 0..500 {
        assert_eq!(recv_json(&mut b).await["n"], n);
    }
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_its_sender_told() {
    let server =
        Server::start(&["--send-queue-messages", "16", "--rate-limit-messages", "0", "--rate-limit-bytes", "0"]);
    let (mut fast, mut slow) = (server.client().await, server.client().await);
    fast.join("r").await.unwrap();
    slow.join("r").await.unwrap();
    recv_json(&mut fast).await;
    let big = "x".repeat(16 * 1024);
    // The slow client never reads; its socket buffers fill, then its queue.
    let mut failed = false;
    for n in 0..2000 {
        fast.send(&json!({"type": "signal", "target": slow.id(), "n": n, "pad": big, "rid": n})).await.unwrap();
        let reply = recv_json(&mut fast).await;
        if reply["type"] == "error" {
            assert!(["delivery-failed", "unknown-target"].contains(&reply["code"].as_str().unwrap()), "{reply}");
            failed = true;
            break;
        }
        assert_eq!(reply["type"], "ack");
    }
    assert!(failed, "the slow consumer's queue never overflowed");
    server.wait_metric("switchboard_slow_consumers_total", 1.0).await;
    assert_eq!(recv_json(&mut fast).await, json!({"type": "peer-left", "data": slow.id(), "room": "r"}));
    assert_alive(&mut fast).await;
}
