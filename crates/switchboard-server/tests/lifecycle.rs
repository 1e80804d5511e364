//! Keepalive, graceful shutdown and configuration, against the real binary.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{http_get, Server};
use switchboard_client::protocol::ServerMessage;
use switchboard_client::ClientError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn a_peer_that_does_not_answer_pings_is_dropped_and_its_room_told() {
    let server = Server::start(&["--ping-interval", "200ms", "--ping-timeout", "300ms"]);
    let mut alive = server.client().await;
    let mut silent = server.client().await;
    alive.join("r").await.unwrap();
    silent.join("r").await.unwrap();
    let silent_id = silent.id().to_owned();
    assert!(matches!(alive.recv().await.unwrap(), ServerMessage::PeerJoined { .. }));
    // `silent` is never polled again, so tungstenite never answers the server's
    // pings for it: to the server it looks like a half-open connection.
    // `alive` keeps reading (which answers pings) and must outlive several intervals.
    match alive.recv().await.unwrap() {
        ServerMessage::PeerLeft { id, room } => {
            assert_eq!(id, silent_id);
            assert_eq!(room, "r");
        }
        other => panic!("expected peer-left, got {other:?}"),
    }
    // A client that keeps reading (and so answers pings) outlives many intervals.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive.send(&json!({"type": "ping"})).await.unwrap();
        assert!(matches!(alive.recv().await.unwrap(), ServerMessage::Pong { .. }), "a responsive peer stays connected");
    }
    server.wait_metric("switchboard_ping_timeouts_total", 1.0).await;
    drop(silent);
}

#[tokio::test]
async fn sigterm_fails_readiness_closes_sockets_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--shutdown-delay", "2s", "--shutdown-timeout", "5s"]);
    let addr = server.addr;
    let mut peer = server.client().await;
    peer.join("r").await.unwrap();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    server.terminate();
    // During the delay the server still answers, but is not ready.
    let mut saw_unready = false;
    for _ in 0..20 {
        let (status, body) = http_get(addr, "/readyz").await;
        if status == 503 {
            assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), json!({"status": "shutting-down"}));
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_unready, "/readyz never failed during the shutdown delay");

    match peer.recv().await {
        Err(ClientError::Closed(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server exits");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.logs());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn for_a_rolling_restart_sockets_are_told_1012_come_back() {
    let mut server = Server::start(&["--shutdown-close-code", "1012"]);
    let mut peer = server.client().await;
    server.terminate();
    match peer.recv().await {
        Err(ClientError::Closed(Some(frame))) => assert_eq!(frame.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
    assert_eq!(server.wait_exit(Duration::from_secs(10)).expect("exits").code(), Some(0));
}

#[tokio::test]
async fn sigterm_ends_event_streams_too() {
    let mut server = Server::start(&["--sse-interval", "50ms"]);
    let mut stream = support::http_open(server.addr, "/sse", "").await;
    support::read_until(&mut stream, "data:", 1).await;
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server exits despite an open stream");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn settings_come_from_flags_then_environment_then_the_file() {
    let dir = std::env::temp_dir().join(format!("switchboard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "max-message-size = 1500\nmax-rooms-per-peer = 1\nmax-room-name-len = 3\n").unwrap();

    let server = Server::start_with_env(
        &["--config", config.to_str().unwrap(), "--max-room-name-len", "10"],
        &[("SWITCHBOARD_MAX_ROOMS_PER_PEER", "2")],
    );
    let mut client = server.client().await;
    // File: max-message-size 1500.
    client.send(&json!({"type": "ping", "pad": "x".repeat(1600)})).await.unwrap();
    assert_error(&mut client, "message-too-large").await;
    // Flag beats file: names of 10 bytes are fine.
    client.join("ten-bytes!").await.unwrap();
    // Environment beats file: two rooms allowed, not one.
    client.join("two").await.unwrap();
    client.send(&json!({"type": "join", "room": "three"})).await.unwrap();
    assert_error(&mut client, "too-many-rooms").await;
}

#[test]
fn a_bad_config_file_is_refused_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("switchboard-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "max-mesage-size = 10\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max-mesage-size"), "{stderr}");
}

async fn assert_error(client: &mut switchboard_client::Client, code: &str) {
    match client.recv().await.unwrap() {
        ServerMessage::Error { code: got, .. } => assert_eq!(got, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}
