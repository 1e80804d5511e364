//! Session resume: a dropped connection that comes back with its token gets its
//! id, its rooms and everything sent to it meanwhile; the room never notices.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::Server;
use switchboard_client::{Client, ClientError};
use tokio_tungstenite::tungstenite::Message;

async fn recv_json(client: &mut Client) -> Value {
    let text = client.recv_text().await.expect("a message");
    serde_json::from_str(&text).expect("JSON from the server")
}

async fn assert_quiet(client: &mut Client, window: Duration) {
    client.set_timeout(window);
    match client.recv_text().await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    client.set_timeout(switchboard_client::DEFAULT_TIMEOUT);
}

async fn resumable(server: &Server, token: Option<&str>) -> Client {
    Client::connect_resumable(&server.ws_url("/ws"), token).await.expect("connect")
}

/// Two peers in room "r": `a` plain, `b` resumable.
async fn pair(server: &Server) -> (Client, Client) {
    let mut a = server.client().await;
    let mut b = resumable(server, None).await;
    assert!(b.resume_token().is_some(), "a resumable session gets a token in welcome");
    assert!(!b.resumed());
    a.join("r").await.unwrap();
    b.join("r").await.unwrap();
    assert_eq!(recv_json(&mut a).await["type"], "peer-joined");
    (a, b)
}

#[tokio::test]
async fn a_dropped_peer_resumes_with_its_id_rooms_and_the_messages_sent_meanwhile() {
    let server = Server::start(&["--resume-grace", "10s", "--rate-limit-messages", "0"]);
    let (mut a, b) = pair(&server).await;
    let (b_id, token) = (b.id().to_owned(), b.resume_token().unwrap().to_owned());
    drop(b); // no close frame: the connection is simply lost

    // Wait until the server has noticed, then send while b is away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..50 {
        a.send(&json!({"type": "offer", "target": b_id, "n": n, "rid": n})).await.unwrap();
        assert_eq!(recv_json(&mut a).await, json!({"type": "ack", "rid": n}), "accepted for b while it is away");
    }
    a.send(&json!({"type": "broadcast", "data": "while away"})).await.unwrap();

    let mut b = resumable(&server, Some(&token)).await;
    assert!(b.resumed());
    assert_eq!(b.id(), b_id, "same peer id");
    assert_eq!(b.rooms(), ["r"], "same rooms");
    assert_ne!(b.resume_token(), Some(token.as_str()), "the token rotates");
    for n in 0..50 {
        let offer = recv_json(&mut b).await;
        assert_eq!((offer["type"].as_str(), offer["n"].as_i64()), (Some("offer"), Some(n)), "in order: {offer}");
        assert_eq!(offer["from"], a.id());
    }
    assert_eq!(recv_json(&mut b).await["data"], "while away");
    // The room never saw b go or come back.
    assert_quiet(&mut a, Duration::from_millis(300)).await;
    // And b is fully back: it relays and is relayed to.
    b.send(&json!({"type": "answer", "target": a.id(), "sdp": "back"})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["sdp"], "back");
    assert_eq!(server.metric("switchboard_resumes_total").await, 1.0);

    // A spent token resumes nothing.
    let stale = resumable(&server, Some(&token)).await;
    assert!(!stale.resumed());
    assert_ne!(stale.id(), b_id);
}

#[tokio::test]
async fn when_the_grace_period_runs_out_the_room_is_told_and_the_token_is_dead() {
    let server = Server::start(&["--resume-grace", "500ms"]);
    let (mut a, b) = pair(&server).await;
    let (b_id, token) = (b.id().to_owned(), b.resume_token().unwrap().to_owned());
    drop(b);
    // Nothing for the grace period, then peer-left.
    assert_quiet(&mut a, Duration::from_millis(300)).await;
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b_id, "room": "r"}));
    let late = resumable(&server, Some(&token)).await;
    assert!(!late.resumed(), "too late: a fresh session");
    assert!(late.rooms().is_empty());
    // A relay to the expired peer is refused.
    a.send(&json!({"type": "offer", "target": b_id})).await.unwrap();
    assert_eq!(recv_json(&mut a).await["code"], "unknown-target");
}

#[tokio::test]
async fn messages_that_do_not_fit_while_away_are_refused_to_their_senders_and_end_the_session() {
    let server = Server::start(&["--resume-grace", "10s", "--send-queue-messages", "5", "--rate-limit-messages", "0"]);
    let (mut a, b) = pair(&server).await;
    let (b_id, token) = (b.id().to_owned(), b.resume_token().unwrap().to_owned());
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for n in 0..8 {
        a.send(&json!({"type": "offer", "target": b_id, "n": n, "rid": n})).await.unwrap();
        let answer = recv_json(&mut a).await;
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "delivery-failed", "{answer}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the sender is told what could not be kept");
    // The session lost messages: it cannot be resumed as if nothing happened.
    let b = resumable(&server, Some(&token)).await;
    assert!(!b.resumed());
    assert_ne!(b.id(), b_id);
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b_id, "room": "r"}));
}

#[tokio::test]
async fn resuming_takes_over_a_connection_the_server_still_thinks_is_alive() {
    let server = Server::start(&["--resume-grace", "10s"]);
    let (mut a, mut old) = pair(&server).await;
    let token = old.resume_token().unwrap().to_owned();
    // The old connection is still open (say, half-open after a network switch).
    let mut new = resumable(&server, Some(&token)).await;
    assert!(new.resumed());
    assert_eq!(new.id(), old.id());
    // The old one is closed with 4001.
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), old.socket().next()).await.expect("a close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(4001));
    a.send(&json!({"type": "offer", "target": new.id(), "sdp": "to the new connection"})).await.unwrap();
    assert_eq!(recv_json(&mut new).await["sdp"], "to the new connection");
    assert_quiet(&mut a, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_client_that_closes_on_purpose_leaves_at_once() {
    let server = Server::start(&["--resume-grace", "10s"]);
    let (mut a, b) = pair(&server).await;
    let (b_id, token) = (b.id().to_owned(), b.resume_token().unwrap().to_owned());
    b.close().await.unwrap();
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b_id, "room": "r"}));
    assert!(!resumable(&server, Some(&token)).await.resumed());
}

#[tokio::test]
async fn clients_that_do_not_ask_are_not_held_after_a_drop() {
    // A seed-style client (no `?resume`) that vanishes is gone at once, as before.
    let server = Server::start(&["--resume-grace", "10s"]);
    let mut a = server.client().await;
    let b = server.client().await;
    assert!(b.resume_token().is_none(), "no token unless asked");
    let b_id = b.id().to_owned();
    a.join("r").await.unwrap();
    let mut b = b;
    b.join("r").await.unwrap();
    recv_json(&mut a).await;
    drop(b);
    assert_eq!(recv_json(&mut a).await, json!({"type": "peer-left", "data": b_id, "room": "r"}));
}
