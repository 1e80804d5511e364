//! Chaos: clients that misbehave at the TCP and WebSocket level, against the
//! real binary over real loopback sockets. In every case the server survives,
//! answers with the documented error or close code, and a pair of ordinary
//! peers (`Witnesses`) talking in their own room sees nothing wrong, checked
//! before and after.

mod chaos_support;
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chaos_support::*;
use serde_json::{json, Value};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A victim in room `chaos`, where `observer` watches it come and go.
async fn victim_in_chaos_room(server: &Server, observer: &mut switchboard_client::Client) -> RawWs {
    let mut victim = RawWs::signaling(server.addr).await;
    victim.join("chaos").await;
    assert_eq!(recv_json(observer).await, json!({"type": "peer-joined", "data": victim.id, "room": "chaos"}));
    victim
}

async fn observer(server: &Server) -> switchboard_client::Client {
    let mut observer = client(server).await;
    observer.join("chaos").await.unwrap();
    observer
}

#[tokio::test]
async fn connections_cut_mid_frame_are_reaped_and_their_rooms_told() {
    let server = Server::start(&[]);
    let mut witnesses = Witnesses::join(&server).await;
    let mut observer = observer(&server).await;
    let join = frame(FIN | TEXT, br#"{"type":"join","room":"elsewhere","meta":{"pad":"0123456789"}}"#);
    let long = frame(FIN | TEXT, &[b' '; 300]); // a 16-bit length
    let cuts: Vec<(&str, Vec<u8>)> = vec![
        ("after the first header byte", join[..1].to_vec()),
        ("inside the 16-bit length", long[..3].to_vec()),
        ("inside the mask", join[..4].to_vec()),
        ("halfway through the payload", join[..join.len() / 2].to_vec()),
        ("one byte short", join[..join.len() - 1].to_vec()),
        ("after a whole first fragment", frame(TEXT, br#"{"type":"#)),
        ("inside a close frame", frame(FIN | CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'])[..5].to_vec()),
    ];
    for (what, bytes) in cuts {
        let mut victim = victim_in_chaos_room(&server, &mut observer).await;
        victim.write(&bytes).await;
        let id = victim.id.clone();
        drop(victim); // FIN in the middle of the frame
        assert_eq!(
            recv_json(&mut observer).await,
            json!({"type": "peer-left", "data": id, "room": "chaos"}),
            "cut {what}"
        );
    }

    // Cut on the way out: the victim reads a few bytes of a large frame the
    // server is writing to it, then vanishes with the rest unread (a reset).
    let mut victim = victim_in_chaos_room(&server, &mut observer).await;
    let big = json!({"type": "signal", "target": victim.id, "blob": "x".repeat(60_000), "rid": "big"});
    observer.send(&big).await.unwrap();
    assert_eq!(recv_json(&mut observer).await, json!({"type": "ack", "rid": "big"}));
    let mut first = [0u8; 100];
    within(victim.reader.read.read_exact(&mut first)).await.unwrap();
    let id = victim.id.clone();
    drop(victim);
    assert_eq!(recv_json(&mut observer).await, json!({"type": "peer-left", "data": id, "room": "chaos"}));

    wait_metric(&server, "switchboard_peers", 3.0).await;
    wait_metric(&server, "switchboard_connections{endpoint=\"signaling\"}", 3.0).await;
    assert_healthy(&server).await;
    witnesses.check().await;
}

/// A TCP proxy between one client and the server that can black-hole the
/// traffic both ways while keeping both sockets open: the client has vanished
/// without a FIN, as far as the server can tell.
struct BlackHoleProxy {
    addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    /// The server closed its side of the proxied connection.
    server_closed: Arc<AtomicBool>,
    /// The client closed its side.
    client_closed: Arc<AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: SocketAddr) -> BlackHoleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = BlackHoleProxy {
            addr: listener.local_addr().unwrap(),
            blackhole: Arc::default(),
            server_closed: Arc::default(),
            client_closed: Arc::default(),
        };
        let (blackhole, server_closed, client_closed) =
            (proxy.blackhole.clone(), proxy.server_closed.clone(), proxy.client_closed.clone());
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, blackhole.clone(), client_closed));
            tokio::spawn(pump(server_read, client_write, blackhole, server_closed));
        });
        proxy
    }
}

/// Copies `from` to `to`, or swallows it while `blackhole` is set. When `from`
/// ends, `to` is kept open for good: no FIN ever reaches the other side.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if !blackhole.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    closed.store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
    drop(to);
}

#[tokio::test]
async fn a_half_open_connection_is_reaped_by_the_ping_timeout() {
    let server = Server::start(&["--ping-interval", "2s", "--ping-timeout", "2s"]);
    let mut witnesses = Witnesses::join(&server).await;
    let proxy = BlackHoleProxy::start(server.addr).await;
    let mut victim = within(switchboard_client::Client::connect(&format!("ws://{}/ws", proxy.addr))).await.unwrap();
    victim.join("witness").await.unwrap();
    let victim_id = victim.id().to_owned();
    for witness in [&mut witnesses.a, &mut witnesses.b] {
        assert_eq!(recv_json(witness).await, json!({"type": "peer-joined", "data": victim_id, "room": "witness"}));
    }

    proxy.blackhole.store(true, Ordering::SeqCst);
    // The witnesses keep reading (and so answer the server's pings) until
    // the victim is reaped; the victim itself is never read again.
    let left = json!({"type": "peer-left", "data": victim_id, "room": "witness"});
    let (a_saw, b_saw) = tokio::join!(recv_json(&mut witnesses.a), recv_json(&mut witnesses.b));
    assert_eq!(a_saw, left);
    assert_eq!(b_saw, left);

    assert_eq!(server.metric("switchboard_ping_timeouts_total").await, 1.0);
    wait_metric(&server, "switchboard_peers", 2.0).await;
    eventually("the server closed its socket", true, || async { proxy.server_closed.load(Ordering::SeqCst) }).await;
    assert!(!proxy.client_closed.load(Ordering::SeqCst), "the victim never closed: only the server gave up");
    witnesses.check().await;
    drop(victim);
}

#[tokio::test]
async fn invalid_utf8_in_text_frames_closes_1007() {
    let server = Server::start(&[]);
    let mut witnesses = Witnesses::join(&server).await;
    let mut observer = observer(&server).await;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("bytes that are never UTF-8", vec![frame(FIN | TEXT, &[0xff, 0xfe, 0xfd])]),
        ("inside JSON", vec![frame(FIN | TEXT, b"{\"type\":\"ping\",\"rid\":\"\xc3\x28\"}")]),
        ("an overlong encoding", vec![frame(FIN | TEXT, b"{\"type\":\"ping\",\"rid\":\"\xc0\xaf\"}")]),
        ("a UTF-16 surrogate", vec![frame(FIN | TEXT, b"{\"type\":\"ping\",\"rid\":\"\xed\xa0\x80\"}")]),
        ("a truncated character at the end", vec![frame(FIN | TEXT, b"{\"type\":\"ping\"}\xe2\x82")]),
        (
            "in a later fragment",
            vec![frame(TEXT, b"{\"type\":\"ping\","), frame(FIN | CONTINUATION, b"\"rid\":\"\xc3\x28\"}")],
        ),
        (
            "a character cut by the end of the message",
            vec![frame(TEXT, b"{\"type\":\"ping\"}"), frame(FIN | CONTINUATION, b"\xc3")],
        ),
    ];
    for (what, frames) in cases {
        let mut victim = victim_in_chaos_room(&server, &mut observer).await;
        for frame in &frames {
            victim.write(frame).await;
        }
        victim.expect_close(1007).await;
        assert_eq!(
            recv_json(&mut observer).await,
            json!({"type": "peer-left", "data": victim.id, "room": "chaos"}),
            "{what}"
        );
    }
    wait_metric(&server, "switchboard_peers", 3.0).await;
    witnesses.check().await;
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_around_control_frames() {
    let server = Server::start(&[]);
    let mut witnesses = Witnesses::join(&server).await;
    let mut observer = observer(&server).await;
    let mut peer = RawWs::signaling(server.addr).await;

    // A join in three frames, with a ping between the fragments: the pong
    // comes back at once, with the ping's payload, and the join then works.
    let join = br#"{"type":"join","room":"chaos","meta":{"name":"fr\xc3\xa9d"},"rid":"j"}"#;
    let join = std::str::from_utf8(join).unwrap().replace("\\xc3\\xa9", "\u{e9}");
    let bytes = join.as_bytes();
    let e_acute = bytes.iter().position(|&b| b == 0xc3).unwrap();
    peer.write(&frame(TEXT, &bytes[..10])).await;
    peer.write(&frame(FIN | PING, b"mid-message")).await;
    peer.write(&frame(CONTINUATION, &bytes[10..=e_acute])).await; // splits "é" in two
    peer.write(&frame(FIN | CONTINUATION, &bytes[e_acute + 1..])).await;
    let pong = peer.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"mid-message"[..]));
    let joined = peer.next_json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["rid"], "j");
    assert_eq!(
        recv_json(&mut observer).await,
        json!({"type": "peer-joined", "data": peer.id, "room": "chaos", "meta": {"name": "fréd"}})
    );

    // A relay in one-byte fragments, with a pong and a ping among them.
    let relay = json!({"type": "offer", "target": observer.id(), "sdp": "v=0 ☎ fragmented", "rid": 7}).to_string();
    let relay = relay.as_bytes();
    for (i, byte) in relay.iter().enumerate() {
        let first = if i == 0 { TEXT } else { CONTINUATION };
        let fin = if i == relay.len() - 1 { FIN } else { 0 };
        peer.write(&frame(fin | first, &[*byte])).await;
        if i == 5 {
            peer.write(&frame(FIN | PONG, b"unsolicited")).await;
        }
        if i == 20 {
            peer.write(&frame(FIN | PING, b"")).await;
        }
    }
    let pong = peer.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.len()), (PONG, 0));
    assert_eq!(peer.next_json().await, json!({"type": "ack", "rid": 7}));
    let mut expected: Value = serde_json::from_slice(relay).unwrap();
    expected["from"] = json!(peer.id);
    assert_eq!(recv_json(&mut observer).await, expected);

    // An empty first fragment and an empty last one.
    peer.write(&frame(TEXT, b"")).await;
    peer.write(&frame(CONTINUATION, br#"{"type":"ping","rid":"e"}"#)).await;
    peer.write(&frame(FIN | CONTINUATION, b"")).await;
    assert_eq!(peer.next_json().await, json!({"type": "pong", "rid": "e"}));

    peer.assert_alive("after").await;
    witnesses.check().await;
}

#[tokio::test]
async fn frames_sent_with_the_handshake_are_read_after_it() {
    // A client may pipeline its first frames behind the upgrade request; the
    // HTTP layer reads them with the request, and they must not be lost.
    let server = Server::start(&[]);
    let early = [frame(FIN | TEXT, b"first"), frame(FIN | PING, b"early"), frame(FIN | TEXT, b"second")].concat();
    let mut echo = RawWs::upgrade_with(server.addr, "/ws/echo", &early).await;
    let mut texts = Vec::new();
    let mut pongs = Vec::new();
    while texts.len() < 2 || pongs.is_empty() {
        let frame = echo.read_frame().await.expect("a frame");
        match frame.opcode {
            TEXT => texts.push(frame.text().to_owned()),
            PONG => pongs.push(frame.payload),
            other => panic!("unexpected opcode {other}: {frame:?}"),
        }
    }
    assert_eq!(texts, ["Server received: first", "Server received: second"]);
    assert_eq!(pongs, [b"early".to_vec()]);

    // A whole signaling exchange in the handshake's write: the join is answered.
    let join = frame(FIN | TEXT, br#"{"type":"join","room":"early","rid":"j"}"#);
    let mut peer = RawWs::upgrade_with(server.addr, "/ws", &join).await;
    assert_eq!(peer.next_json().await["type"], "welcome");
    let joined = peer.next_json().await;
    assert_eq!((joined["type"].as_str(), joined["rid"].as_str()), (Some("joined"), Some("j")), "{joined}");
}

#[tokio::test]
async fn broken_framing_closes_1002_and_harms_no_one() {
    let server = Server::start(&[]);
    let mut witnesses = Witnesses::join(&server).await;
    let mut observer = observer(&server).await;
    let ping = br#"{"type":"ping"}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a continuation with nothing to continue", frame(FIN | CONTINUATION, ping)),
        ("a new message inside a fragmented one", [frame(TEXT, b"{"), frame(FIN | TEXT, ping)].concat()),
        ("a fragmented ping", frame(PING, b"x")),
        ("a control frame over 125 bytes", frame(FIN | PING, &[b'p'; 126])),
        ("reserved bits without an extension", frame(FIN | 0x40 | TEXT, ping)),
        ("a reserved data opcode", frame(FIN | 0x3, ping)),
        ("a reserved control opcode", frame(FIN | 0xB, b"")),
        ("an unmasked client frame", unmasked_frame(FIN | TEXT, ping)),
    ];
    for (what, bytes) in cases {
        let mut victim = victim_in_chaos_room(&server, &mut observer).await;
        victim.write(&bytes).await;
        let id = victim.id.clone();
        match victim.read_frame().await {
            Ok(frame) if frame.opcode == CLOSE => assert_eq!(frame.close_code(), Some(1002), "{what}"),
            other => panic!("{what}: expected close 1002, got {other:?}"),
        }
        assert_eq!(recv_json(&mut observer).await, json!({"type": "peer-left", "data": id, "room": "chaos"}), "{what}");
    }
    assert_healthy(&server).await;
    witnesses.check().await;
}

#[tokio::test]
async fn huge_frames_get_message_too_large_then_close_1009_past_four_times_the_limit() {
    let server = Server::start(&["--max-message-size", "2048"]);
    let mut witnesses = Witnesses::join(&server).await;
    let mut observer = observer(&server).await;
    observer.join("pair").await.unwrap();
    let mut peer = RawWs::signaling(server.addr).await;
    peer.join("pair").await;
    assert_eq!(recv_json(&mut observer).await, json!({"type": "peer-joined", "data": peer.id, "room": "pair"}));

    // A relay of exactly `len` bytes to the observer.
    let target = observer.id().to_owned();
    let relay_of = |len: usize, rid: &str| {
        let head = json!({"type": "signal", "target": target, "rid": rid, "pad": ""}).to_string();
        let pad = "p".repeat(len - head.len());
        json!({"type": "signal", "target": target, "rid": rid, "pad": pad}).to_string()
    };

    let exact = relay_of(2048, "exact");
    assert_eq!(exact.len(), 2048);
    peer.send_text(&exact).await;
    assert_eq!(peer.next_json().await, json!({"type": "ack", "rid": "exact"}));
    assert_eq!(recv_json(&mut observer).await["rid"], "exact", "the largest allowed message is delivered");

    for (what, len) in [("one byte over", 2049), ("four times the limit", 8192)] {
        peer.send_text(&relay_of(len, "big")).await;
        let error = peer.next_json().await;
        assert_eq!(error["code"], "message-too-large", "{what}: {error}");
        peer.assert_alive(what).await;
    }
    // Over the limit only once reassembled.
    let fragmented = relay_of(3000, "pieces");
    for (i, piece) in fragmented.as_bytes().chunks(1000).enumerate() {
        let first = if i == 0 { TEXT } else { CONTINUATION };
        let fin = if (i + 1) * 1000 >= fragmented.len() { FIN } else { 0 };
        peer.write(&frame(fin | first, piece)).await;
    }
    assert_eq!(peer.next_json().await["code"], "message-too-large");
    peer.assert_alive("after fragments").await;

    let closes: Vec<(&str, Vec<u8>)> = vec![
        ("one byte past four times the limit", frame(FIN | TEXT, relay_of(8193, "x").as_bytes())),
        ("a binary frame past the limit", frame(FIN | BINARY, &[0u8; 9000])),
        (
            "fragments that add up past the limit",
            [frame(TEXT, &[b' '; 4000]), frame(CONTINUATION, &[b' '; 4000]), frame(FIN | CONTINUATION, &[b' '; 4000])]
                .concat(),
        ),
        // Only the header: the server refuses before any payload is buffered.
        ("a header announcing 2^40 bytes", vec![FIN | TEXT, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
    ];
    for (what, bytes) in closes {
        let mut victim = victim_in_chaos_room(&server, &mut observer).await;
        let _ = victim.try_write(&bytes).await;
        let id = victim.id.clone();
        match victim.read_frame().await {
            Ok(frame) if frame.opcode == CLOSE => assert_eq!(frame.close_code(), Some(1009), "{what}"),
            other => panic!("{what}: expected close 1009, got {other:?}"),
        }
        assert_eq!(recv_json(&mut observer).await, json!({"type": "peer-left", "data": id, "room": "chaos"}), "{what}");
    }
    peer.assert_alive("at the end").await;
    assert_eq!(server.metric("switchboard_errors_total{code=\"message-too-large\"}").await, 3.0);
    witnesses.check().await;
}

/// A membership event, decoded without building a `Value`.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a str,
    room: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_joins_to_one_room_give_everyone_the_same_story() {
    const N: usize = 2000;
    let server = Server::start(&[
        "--max-connections-per-ip",
        "10000",
        "--max-peers-per-room",
        "10000",
        // Each early joiner is told of ~2,000 newcomers in a burst; this test
        // is about membership, not slow consumers.
        "--send-queue-messages",
        "100000",
        "--rate-limit-messages",
        "0",
        // Nor about clients too busy to read: 2,000 of them share this test's
        // threads, and those done early are not read (nor answer pings) again.
        "--write-timeout",
        "600s",
        "--ping-interval",
        "1h",
    ]);
    let mut witnesses = Witnesses::join(&server).await;
    let joined_before = server.metric("switchboard_messages_out_total{type=\"joined\"}").await;
    let announced_before = server.metric("switchboard_messages_out_total{type=\"peer-joined\"}").await;

    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(client(&server).await);
    }
    let ids: HashSet<String> = clients.iter().map(|c| c.id().to_owned()).collect();
    assert_eq!(ids.len(), N);

    // Everyone joins at once, then reads until it knows all N - 1 others.
    let start = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                client.send(&json!({"type": "join", "room": "crowd", "rid": "j"})).await.unwrap();
                let joined = recv_json(&mut client).await;
                assert_eq!((&joined["type"], &joined["rid"]), (&json!("joined"), &json!("j")), "{joined}");
                let before: Vec<String> =
                    joined["peers"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
                let mut after = Vec::new();
                while before.len() + after.len() < N - 1 {
                    // Millions of these: decode only what is checked.
                    let text = client.recv_text().await.unwrap();
                    let event: Event = serde_json::from_str(&text).unwrap();
                    assert_eq!((event.kind, event.room), ("peer-joined", "crowd"), "{text}");
                    after.push(event.data.to_owned());
                }
                (client, before, after)
            })
        })
        .collect();
    let mut views = Vec::with_capacity(N);
    for task in tasks {
        views.push(task.await.unwrap());
    }

    // One order of joins explains every view: the peer listed k-th was the
    // k-th to join, its `joined` listed the k before it, and its `peer-joined`
    // events name the rest in order.
    views.sort_by_key(|(_, before, _)| before.len());
    let last = &views[N - 1];
    let mut order = last.1.clone();
    order.push(last.0.id().to_owned());
    assert_eq!(order.iter().collect::<HashSet<_>>().len(), N, "every peer once");
    for (k, (client, before, after)) in views.iter().enumerate() {
        assert_eq!(before.len(), k, "the joined lists have every length from 0 to N - 1 once");
        assert_eq!(client.id(), order[k]);
        assert_eq!(before[..], order[..k], "{} was told of the earlier joiners in join order", client.id());
        assert_eq!(after[..], order[k + 1..], "{} was told of the later joiners in join order", client.id());
    }
    let n = N as f64;
    assert_eq!(server.metric("switchboard_messages_out_total{type=\"joined\"}").await - joined_before, n);
    assert_eq!(
        server.metric("switchboard_messages_out_total{type=\"peer-joined\"}").await - announced_before,
        n * (n - 1.0) / 2.0
    );
    assert_eq!(server.metric("switchboard_peers").await, n + 2.0);
    assert_eq!(server.metric("switchboard_rooms").await, 2.0);

    // Everyone goes at once; the room empties and disappears.
    drop(views);
    wait_metric(&server, "switchboard_peers", 2.0).await;
    wait_metric(&server, "switchboard_rooms", 1.0).await;
    wait_metric(&server, "switchboard_connections{endpoint=\"signaling\"}", 2.0).await;
    witnesses.check().await;
}

#[tokio::test]
async fn garbage_from_raw_tcp_sockets_is_refused_and_leaves_nothing_behind() {
    let server = Server::start(&[]);
    let mut witnesses = Witnesses::join(&server).await;
    let baseline_fds = open_fds(&server);
    let upgrade = |version: &str, key: bool| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{}Sec-WebSocket-Version: {version}\r\n\r\n",
            if key { "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" } else { "" }
        )
    };
    let noise: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("binary noise", noise, 400),
        ("a few bytes of nothing", b"\x00\x01\x02\x03 hello\r\n\r\n".to_vec(), 400),
        ("text that is not HTTP", b"HELLO WORLD\r\n\r\n".to_vec(), 400),
        ("an HTTP version that does not exist", b"GET /ws HTTP/9.9\r\n\r\n".to_vec(), 400),
        ("a plain GET of /ws", b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("an upgrade without a key", upgrade("13", false).into_bytes(), 400),
        ("an upgrade to WebSocket version 8", upgrade("8", true).into_bytes(), 400),
        (
            "an upgrade to another protocol",
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n".to_vec(),
            400,
        ),
        ("a POST upgrade", upgrade("13", true).replace("GET", "POST").into_bytes(), 405),
        ("an HTTP/1.0 upgrade", upgrade("13", true).replace("HTTP/1.1", "HTTP/1.0").into_bytes(), 426),
        (
            "too many headers",
            {
                let headers: String = (0..500).map(|i| format!("X-{i}: y\r\n")).collect();
                format!("GET /ws HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
            },
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let _ = tcp.write_all(&bytes).await;
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read the status line (the server may keep a valid HTTP connection open after it).
        while !response.windows(2).any(|w| w == b"\r\n") {
            match within(tcp.read(&mut chunk)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&response);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")) || head.starts_with(&format!("HTTP/1.0 {status} ")),
            "{what}: {head:?}"
        );
    }
    // Half a request, then silence and a hang-up; and a request cut in its headers.
    for partial in [&b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr"[..], b"G"] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(partial).await.unwrap();
    }
    // A valid upgrade followed by bytes that are not frames.
    let mut victim = RawWs::signaling(server.addr).await;
    // (Read as a frame header, "GE" announces a 69-byte frame with a reserved
    // opcode: the request is long enough to complete it.)
    victim
        .write(b"GET /ws HTTP/1.1\r\nHost: example\r\nUser-Agent: not-a-websocket-client/1.0\r\nAccept: */*\r\n\r\n")
        .await;
    match victim.read_frame().await {
        Ok(frame) if frame.opcode == CLOSE => assert_eq!(frame.close_code(), Some(1002)),
        other => panic!("expected close 1002, got {other:?}"),
    }
    drop(victim);

    // Every one of those sockets is closed again: nothing leaks.
    eventually("open fds", baseline_fds, || async { open_fds(&server) }).await;
    assert_eq!(server.metric("switchboard_connections{endpoint=\"signaling\"}").await, 2.0);
    assert_healthy(&server).await;
    witnesses.check().await;
}

#[tokio::test]
async fn a_client_that_sends_but_never_reads_is_closed_1008_when_its_queue_overflows() {
    let server = Server::start(&[
        "--send-queue-messages",
        "64",
        "--send-queue-bytes",
        "65536",
        "--rate-limit-messages",
        "0",
        "--rate-limit-bytes",
        "0",
        "--write-timeout",
        "60s",
    ]);
    let mut witnesses = Witnesses::join(&server).await;
    // The deaf client keeps sending offers to `talker` and reads nothing;
    // `talker` keeps sending it candidates, as a WebRTC peer would.
    let mut talker = client(&server).await;
    talker.join("call").await.unwrap();
    let deaf = {
        let mut deaf = RawWs::signaling(server.addr).await;
        deaf.join("call").await;
        deaf
    };
    assert_eq!(recv_json(&mut talker).await["type"], "peer-joined");
    let (deaf_id, talker_id) = (deaf.id.clone(), talker.id().to_owned());
    let RawWs { reader: mut deaf_reader, mut writer, .. } = deaf;
    let sending = Arc::new(AtomicBool::new(true));
    let offers = {
        let sending = sending.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while sending.load(Ordering::SeqCst) && n < 1000 {
                let offer = json!({"type": "offer", "target": talker_id, "n": n, "sdp": "v=0"}).to_string();
                if writer.write_all(&frame(FIN | TEXT, offer.as_bytes())).await.is_err() {
                    break;
                }
                n += 1;
                // A steady sender, not a burst: the talker must not fall behind.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            writer
        })
    };

    // The talker sends a candidate, then reads until that one is answered
    // (taking the deaf client's offers, in order, on the way).
    let candidate = "c".repeat(4096);
    let mut offers_seen = 0u64;
    let mut replies: Vec<Option<String>> = Vec::new();
    let mut deaf_left = false;
    while !deaf_left {
        // Once refused, it stops sending and reads until the deaf client is gone.
        if !replies.iter().any(Option::is_some) {
            let rid = replies.len();
            talker
                .send(&json!({"type": "candidate", "target": deaf_id, "n": rid, "candidate": candidate, "rid": rid}))
                .await
                .unwrap();
        }
        loop {
            let message = recv_json(&mut talker).await;
            match message["type"].as_str() {
                Some("offer") => {
                    assert_eq!((&message["from"], &message["n"]), (&json!(deaf_id), &json!(offers_seen)));
                    offers_seen += 1;
                }
                Some("ack") => {
                    assert_eq!(message["rid"], replies.len());
                    replies.push(None);
                    break;
                }
                Some("error") => {
                    assert_eq!(message["rid"], replies.len(), "{message}");
                    assert_eq!(message["code"], "delivery-failed", "{message}");
                    replies.push(Some("delivery-failed".to_owned()));
                    break;
                }
                Some("peer-left") => {
                    assert_eq!(message, json!({"type": "peer-left", "data": deaf_id, "room": "call"}));
                    deaf_left = true;
                    break;
                }
                _ => panic!("the talker got {message}"),
            }
        }
    }
    assert!(replies.iter().any(Option::is_some), "the talker was told its candidates could not be delivered");
    assert_eq!(server.metric("switchboard_slow_consumers_total").await, 1.0);
    sending.store(false, Ordering::SeqCst);

    // The deaf client only reads again a while later, and finds the talker's
    // candidates in order, then close 1008.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (texts, code) = deaf_reader.drain().await;
    for (n, text) in texts.iter().enumerate() {
        let candidate: Value = serde_json::from_str(text).unwrap();
        assert_eq!((&candidate["type"], &candidate["n"]), (&json!("candidate"), &json!(n)), "in order, once");
    }
    assert_eq!(code, Some(1008), "after {} candidates", texts.len());
    drop(offers);
    witnesses.check().await;
    assert_alive(&mut talker).await;
}

async fn assert_alive(client: &mut switchboard_client::Client) {
    client.send(&json!({"type": "ping", "rid": "alive"})).await.unwrap();
    assert_eq!(recv_json(client).await, json!({"type": "pong", "rid": "alive"}));
}
