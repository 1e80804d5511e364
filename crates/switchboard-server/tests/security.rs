//! Authentication, room authorization, origin checks and abuse limits, against
//! the real binary over real sockets.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{http_get_with, Server};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "test-secret-for-hs256";

fn required(extra: &[&str]) -> Server {
    let mut args = vec!["--auth", "required", "--auth-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Mints a token with the real `switchboard token` command, signed with `SECRET`.
fn token(sub: &str, rooms: &[&str], ttl: &str) -> String {
    let mut args = vec!["--sub", sub, "--ttl", ttl, "--auth-secret", SECRET];
    for room in rooms {
        args.extend(["--room", room]);
    }
    mint(&args)
}

/// Runs `switchboard token` with these arguments and returns the token.
fn mint(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("token")
        .args(args)
        .output()
        .expect("run switchboard token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn connect(server: &Server, path: &str, headers: &[(&str, &str)]) -> Result<Socket, WsError> {
    let mut request = server.ws_url(path).into_client_request().unwrap();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, HeaderValue::from_str(value).unwrap());
    }
    connect_async(request).await.map(|(socket, _)| socket)
}

fn http_status(result: Result<Socket, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, got an open socket"),
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("an open socket")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected JSON, got {other:?}"),
        }
    }
}

async fn expect_close(socket: &mut Socket, code: CloseCode) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return assert_eq!(frame.code, code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without the {code:?} frame"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("expected close {code:?}, got {err:?}"),
        }
    }
}

#[tokio::test]
async fn required_auth_gives_no_peer_id_without_a_valid_token() {
    let server = required(&["--auth-timeout", "500ms", "--auth-leeway", "0s"]);
    let alice = token("alice", &[], "1h");

    // A valid token on the URL: welcome.
    let mut socket = connect(&server, &format!("/ws?token={alice}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    // In the Authorization header: welcome.
    let mut socket = connect(&server, "/ws", &[("authorization", &format!("Bearer {alice}"))]).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");

    // Forged, expired, wrong-key tokens on the URL: HTTP 401 before the upgrade.
    let expired = token("alice", &[], "0s");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut forged = alice.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let parts: Vec<&str> = alice.split('.').collect();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    let wrong_key = mint(&["--sub", "alice", "--auth-secret", "not-the-server-secret"]);
    for bad in [forged.as_str(), expired.as_str(), alg_none.as_str(), wrong_key.as_str(), "garbage"] {
        assert_eq!(http_status(connect(&server, &format!("/ws?token={bad}"), &[]).await), 401, "{bad}");
    }

    // No token: the first message must be a valid `auth`.
    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(json!({"type": "auth", "token": alice, "rid": 1}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");

    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(json!({"type": "join"}).to_string())).await.unwrap();
    let refusal = next_json(&mut socket).await;
    assert_eq!(refusal["code"], "unauthorized", "{refusal}");
    expect_close(&mut socket, CloseCode::Policy).await;

    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(json!({"type": "auth", "token": forged}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["code"], "unauthorized");
    expect_close(&mut socket, CloseCode::Policy).await;

    // Silence: refused after auth-timeout, still without a peer id.
    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    assert_eq!(next_json(&mut socket).await["code"], "unauthorized");

    // Every endpoint refuses a tokenless request.
    for path in ["/ws/echo", "/ws/broadcast"] {
        assert_eq!(http_status(connect(&server, path, &[]).await), 401, "{path}");
    }
    for path in ["/sse", "/sse/rooms/demo"] {
        assert_eq!(http_get_with(server.addr, path, "").await.0, 401, "{path}");
    }
    assert!(server.metric("switchboard_refused_total{reason=\"unauthorized\"}").await >= 8.0);
}

/// Before `welcome` the size rules hold too, and tighter: one token-sized
/// frame. A refusal from an `auth` message is logged with the client's IP, as
/// refusals of tokens on the URL are.
#[tokio::test]
async fn an_unauthenticated_client_gets_one_small_frame_and_refusals_name_its_ip() {
    let server = required(&["--max-message-size", "16384"]);
    let alice = token("alice", &[], "1h");
    // A valid token, padded past the pre-auth budget but under the hard limit (4 × 16 KiB).
    let padded = json!({"type": "auth", "token": alice, "pad": "x".repeat(20_000)}).to_string();
    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(padded)).await.unwrap();
    let refusal = next_json(&mut socket).await;
    assert_eq!(refusal["type"], "error", "no welcome: {refusal}");
    assert_eq!(refusal["code"], "message-too-large", "{refusal}");
    expect_close(&mut socket, CloseCode::Policy).await;

    // The same token in a small frame is let in.
    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(json!({"type": "auth", "token": alice}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");

    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    socket.send(Message::text(json!({"type": "auth", "token": "not-a-token"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["code"], "unauthorized");
    let refusals = server.wait_log_lines("refused signaling connection", 2).await;
    assert_eq!(refusals.len(), 2, "{}", server.logs());
    for line in refusals {
        assert!(line.contains("\"ip\":\"127.0.0.1\""), "refusal without the client IP: {line}");
    }
}

#[tokio::test]
async fn a_token_gets_only_its_rooms_and_names_its_user() {
    let server = required(&[]);
    let alice = token("alice", &["demo", "team-*"], "1h");
    let bob = token("bob", &[], "1h");
    let mut a = connect(&server, &format!("/ws?token={alice}"), &[]).await.unwrap();
    let mut b = connect(&server, &format!("/ws?token={bob}"), &[]).await.unwrap();
    let b_id = next_json(&mut b).await["id"].as_str().unwrap().to_owned();
    next_json(&mut a).await;

    for (room, allowed) in [("demo", true), ("team-red", true), ("other", false), ("dem", false)] {
        a.send(Message::text(json!({"type": "join", "room": room}).to_string())).await.unwrap();
        let reply = next_json(&mut a).await;
        if allowed {
            assert_eq!(reply["type"], "joined", "{room}: {reply}");
        } else {
            assert_eq!(reply["code"], "forbidden", "{room}: {reply}");
        }
    }
    b.send(Message::text(json!({"type": "join", "room": "demo"}).to_string())).await.unwrap();
    let joined = next_json(&mut b).await;
    assert_eq!(joined["peers"][0]["user"], "alice", "{joined}");
    assert_eq!(next_json(&mut a).await, json!({"type": "peer-joined", "data": b_id, "room": "demo", "user": "bob"}));

    // The room stream follows the same rules.
    let (status, _, _) =
        http_get_with(server.addr, "/sse/rooms/other", &format!("Authorization: Bearer {alice}\r\n")).await;
    assert_eq!(status, 403);
    a.send(Message::text(json!({"type": "auth", "token": alice}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut a).await["code"], "unexpected-message");
}

#[tokio::test]
async fn a_token_capacity_caps_the_rooms_it_creates() {
    let server = required(&[]);
    let host = mint(&["--sub", "host", "--capacity", "2", "--auth-secret", SECRET]);
    let guest = token("guest", &[], "1h");
    let mut a = connect(&server, &format!("/ws?token={host}"), &[]).await.unwrap();
    next_json(&mut a).await;
    a.send(Message::text(json!({"type": "join", "room": "call", "capacity": 10}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut a).await["capacity"], 2, "the client cannot raise the token's capacity");
    let mut b = connect(&server, &format!("/ws?token={guest}"), &[]).await.unwrap();
    next_json(&mut b).await;
    b.send(Message::text(json!({"type": "join", "room": "call"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut b).await["type"], "joined");
    let mut c = connect(&server, &format!("/ws?token={guest}"), &[]).await.unwrap();
    next_json(&mut c).await;
    c.send(Message::text(json!({"type": "join", "room": "call"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut c).await["code"], "room-full");
}

#[tokio::test]
async fn optional_auth_admits_anonymous_peers_but_refuses_bad_tokens() {
    let server = Server::start(&["--auth", "optional", "--auth-secret", SECRET]);
    let mut anonymous = connect(&server, "/ws", &[]).await.unwrap();
    assert_eq!(next_json(&mut anonymous).await["type"], "welcome");
    assert_eq!(http_status(connect(&server, "/ws?token=garbage", &[]).await), 401);
}

#[test]
fn auth_without_a_key_refuses_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "required"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--auth-secret"));
}

#[tokio::test]
async fn es256_tokens_verify_against_a_public_key() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();

    let server = Server::start(&["--auth", "required", "--auth-public-key", public.to_str().unwrap()]);
    let es256 = mint(&["--sub", "carol", "--private-key", private.to_str().unwrap()]);
    let mut socket = connect(&server, &format!("/ws?token={es256}"), &[]).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    // An HS256 token signed with the public key's text as the secret: the classic confusion attack.
    let public_pem_as_secret = format!("--auth-secret={}", key.public_key_pem());
    let confused = mint(&["--sub", "mallory", &public_pem_as_secret]);
    assert_eq!(confused.split('.').count(), 3, "a real HS256 token: {confused}");
    assert_eq!(http_status(connect(&server, &format!("/ws?token={confused}"), &[]).await), 401);
}

#[tokio::test]
async fn cross_site_origins_are_refused_and_the_allowlist_is_honoured() {
    let server = Server::start(&[]);
    let host = server.addr.to_string();
    let same = format!("http://{host}");
    assert!(connect(&server, "/ws", &[("origin", &same)]).await.is_ok(), "same origin");
    assert!(connect(&server, "/ws", &[]).await.is_ok(), "no origin: not a browser");
    assert_eq!(http_status(connect(&server, "/ws", &[("origin", "http://evil.example")]).await), 403);
    assert_eq!(http_status(connect(&server, "/ws/echo", &[("origin", "http://evil.example")]).await), 403);

    let listed = Server::start(&["--allowed-origin", "https://app.example"]);
    assert!(connect(&listed, "/ws", &[("origin", "https://app.example")]).await.is_ok());
    assert_eq!(http_status(connect(&listed, "/ws", &[("origin", "http://evil.example")]).await), 403);
    assert!(server.metric("switchboard_refused_total{reason=\"origin\"}").await >= 2.0);
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_in_total_and_places_come_back() {
    let server = Server::start(&["--max-connections-per-ip", "2", "--trusted-proxy", "127.0.0.1"]);
    let first = connect(&server, "/ws", &[]).await.unwrap();
    let _second = connect(&server, "/ws/echo", &[]).await.unwrap();
    assert_eq!(http_status(connect(&server, "/ws", &[]).await), 429);
    assert_eq!(http_get_with(server.addr, "/sse", "").await.0, 429, "event streams count too");
    // Behind the trusted proxy, each forwarded client has its own allowance.
    let _proxied = connect(&server, "/ws", &[("x-forwarded-for", "198.51.100.7")]).await.unwrap();
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(socket) = connect(&server, "/ws", &[]).await {
            again = Some(socket);
            break;
        }
    }
    assert!(again.is_some(), "a closed connection frees its place");

    let full = Server::start(&["--max-connections", "1"]);
    let _only = connect(&full, "/ws", &[]).await.unwrap();
    assert_eq!(http_status(connect(&full, "/ws", &[]).await), 503);
}

#[tokio::test]
async fn a_flooding_client_is_told_then_closed_and_nobody_else_notices() {
    let server = Server::start(&["--rate-limit-messages", "5"]);
    let mut flooder = connect(&server, "/ws", &[]).await.unwrap();
    let mut bystander = connect(&server, "/ws", &[]).await.unwrap();
    next_json(&mut flooder).await;
    next_json(&mut bystander).await;

    for n in 0..200 {
        if flooder.send(Message::text(json!({"type": "ping", "rid": n}).to_string())).await.is_err() {
            break;
        }
    }
    let mut pongs = 0;
    let mut limited = 0;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), flooder.next()).await.expect("in time") {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                match message["type"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") => {
                        assert_eq!(message["code"], "rate-limited");
                        limited += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed, CloseCode::Policy);
    assert!((10..=12).contains(&pongs), "a burst of twice the rate was served: {pongs}");
    assert!(limited >= 1, "the client was told before being closed");

    bystander.send(Message::text(json!({"type": "ping", "rid": "ok"}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut bystander).await, json!({"type": "pong", "rid": "ok"}));
    assert_eq!(server.metric("switchboard_rate_limit_closes_total").await, 1.0);
}

#[tokio::test]
async fn the_byte_rate_limit_refuses_the_excess_with_its_rid() {
    // 1000 bytes/s; the bucket holds one largest frame (4 x 1024 bytes).
    let server =
        Server::start(&["--rate-limit-bytes", "1000", "--rate-limit-messages", "0", "--max-message-size", "1024"]);
    let mut socket = connect(&server, "/ws", &[]).await.unwrap();
    next_json(&mut socket).await;
    let pad = "x".repeat(900);
    for n in 0..8 {
        socket.send(Message::text(json!({"type": "ping", "rid": n, "pad": pad}).to_string())).await.unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..8 {
        let reply = next_json(&mut socket).await;
        answers.push((
            reply["rid"].as_i64().unwrap(),
            reply["type"].as_str().unwrap().to_owned(),
            reply["code"].clone(),
        ));
    }
    let served = answers.iter().filter(|(_, kind, _)| kind == "pong").count();
    assert!((4..=5).contains(&served), "about 4 KiB of burst is served: {answers:?}");
    for (n, (rid, kind, code)) in answers.iter().enumerate() {
        assert_eq!(*rid, n as i64, "in order, each with its rid");
        if kind == "error" {
            assert_eq!(code, "rate-limited");
        }
    }
    assert!(server.metric("switchboard_rate_limited_total{limit=\"bytes\"}").await >= 3.0);
}
