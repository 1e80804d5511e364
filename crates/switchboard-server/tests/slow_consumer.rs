//! The slow-consumer proof: a client stops reading while others relay to it at
//! full speed. It is closed with 1008, its senders are told (`delivery-failed`,
//! never silence), the server's memory stays within what the send-queue
//! limits allow, and another pair in the same room gets every message, in order.
//!
//! (`signaling.rs` covers the basic case: one sender, one overflow, one
//! `peer-left`. This is the full-speed, many-party version.)

mod chaos_support;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chaos_support::*;
use serde_json::{json, Value};
use support::Server;
use tokio::io::AsyncWriteExt;

// The byte limit is what the slow client trips (16 of its relays fill it).
// The message limit is high enough that no healthy peer can trip it by being
// descheduled for a moment while the others send without any rate limit.
const QUEUE_MESSAGES: usize = 4096;
const QUEUE_BYTES: u64 = 256 * 1024;
/// Each relay to the slow client carries this much padding.
const PAD: usize = 16 * 1024;
/// Relays each sender sends at most: far more than the queue and every socket
/// buffer on the way can hold (64 MiB per sender).
const MOST_RELAYS: u64 = 4096;
/// Messages each member of the other pair sends the other.
const PAIR_MESSAGES: u64 = 1000;
/// Server memory that is not the slow client's queue: allocator slack, the
/// senders' read buffers, the other pair's traffic. Without the queue limit
/// the server would have to hold the senders' 128 MiB instead.
const SLACK: u64 = 8 * 1024 * 1024;

/// What one full-speed sender saw.
struct SenderReport {
    sent: u64,
    /// For each relay, in order: `None` for an ack, or the error code and
    /// whether the slow client's `peer-left` had already arrived.
    replies: Vec<Option<(String, bool)>>,
    /// The sender's connection, kept open so the others see no one else leave.
    _connection: (FrameReader, tokio::net::tcp::OwnedWriteHalf),
}

/// Relays to `target` as fast as the socket takes them (writer and reader run
/// at once), until told the target is gone; returns every reply it got.
async fn send_at_full_speed(ws: RawWs, target: String) -> SenderReport {
    let RawWs { mut reader, mut writer, .. } = ws;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writing = stop.clone();
    let writing = tokio::spawn(async move {
        let pad = "x".repeat(PAD);
        let mut sent = 0u64;
        while sent < MOST_RELAYS && !stop_writing.load(Ordering::SeqCst) {
            let relay = json!({"type": "signal", "target": target, "seq": sent, "rid": sent, "pad": pad}).to_string();
            writer.write_all(&frame(FIN | TEXT, relay.as_bytes())).await.expect("the sender's socket stays open");
            sent += 1;
        }
        (sent, writer)
    });
    tokio::pin!(writing);
    let mut replies = Vec::new();
    let mut target_left = false;
    let mut sent = None;
    let mut writer = None;
    // Until every relay is answered and the target is gone (or, if the server
    // never gives up on it, every relay has been sent).
    while sent != Some(replies.len() as u64) || !(target_left || sent == Some(MOST_RELAYS)) {
        tokio::select! {
            message = reader.next_json() => match message["type"].as_str() {
                Some("ack") => {
                    assert_eq!(message["rid"], replies.len(), "replies come in order");
                    replies.push(None);
                }
                Some("error") => {
                    assert_eq!(message["rid"], replies.len(), "replies come in order: {message}");
                    let code = message["code"].as_str().unwrap().to_owned();
                    stop.store(true, Ordering::SeqCst);
                    replies.push(Some((code, target_left)));
                }
                Some("peer-left") => {
                    assert!(!target_left, "one peer-left: {message}");
                    target_left = true;
                    stop.store(true, Ordering::SeqCst);
                }
                _ => panic!("a sender got {message}"),
            },
            done = &mut writing, if sent.is_none() => {
                let (count, half) = done.unwrap();
                sent = Some(count);
                writer = Some(half);
            }
        }
    }
    SenderReport { sent: sent.unwrap(), replies, _connection: (reader, writer.unwrap()) }
}

/// One member of the other pair, still connected.
struct PairMember {
    reader: FrameReader,
    _writer: tokio::net::tcp::OwnedWriteHalf,
    slow_left: bool,
}

/// One member of the other pair: sends `PAIR_MESSAGES` to `partner` while
/// reading the partner's, which must all arrive, in order, exactly once. The
/// only other thing it may see is the slow client leaving.
async fn converse(ws: RawWs, partner: String, slow: String) -> PairMember {
    let RawWs { mut reader, mut writer, id } = ws;
    let writing = tokio::spawn(async move {
        for n in 0..PAIR_MESSAGES {
            let message = json!({"type": "candidate", "target": partner, "n": n, "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"});
            writer.write_all(&frame(FIN | TEXT, message.to_string().as_bytes())).await.unwrap();
        }
        writer
    });
    let mut next = 0;
    let mut slow_left = false;
    while next < PAIR_MESSAGES {
        let message = reader.next_json().await;
        match message["type"].as_str() {
            Some("candidate") => {
                assert_eq!(message["n"], next, "{id}: the pair's messages arrive in order, each once");
                next += 1;
            }
            Some("peer-left") if message["data"] == slow.as_str() && !slow_left => slow_left = true,
            _ => panic!("{id} got {message}"),
        }
    }
    PairMember { reader, _writer: writing.await.unwrap(), slow_left }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_costs_only_its_own_queue_and_its_own_connection() {
    let server = Server::start(&[
        "--send-queue-messages",
        &QUEUE_MESSAGES.to_string(),
        "--send-queue-bytes",
        &QUEUE_BYTES.to_string(),
        "--rate-limit-messages",
        "0",
        "--rate-limit-bytes",
        "0",
        // Only the queue may end the slow client, not a write timing out.
        "--write-timeout",
        "60s",
    ]);
    let mut slow = RawWs::signaling(server.addr).await;
    slow.join("room").await;
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut peer = RawWs::signaling(server.addr).await;
        peer.join("room").await;
        others.push(peer);
    }
    // Everyone has seen everyone join; the slow client has read its last message.
    for _ in 0..4 {
        assert_eq!(slow.next_json().await["type"], "peer-joined");
    }
    for (i, peer) in others.iter_mut().enumerate() {
        for _ in i + 1..4 {
            assert_eq!(peer.next_json().await["type"], "peer-joined");
        }
    }
    let [sender_a, sender_b, p, q]: [RawWs; 4] = others.try_into().ok().unwrap();
    let slow_id = slow.id.clone();
    let (p_id, q_id) = (p.id.clone(), q.id.clone());
    let sender_ids = [sender_a.id.clone(), sender_b.id.clone()];

    // Watch the server's memory while it happens.
    let baseline = rss_bytes(&server);
    let peak = Arc::new(AtomicU64::new(baseline));
    let watching = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, watching, pid) = (peak.clone(), watching.clone(), server.pid());
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib: u64 = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|r| r.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(kib * 1024, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let (report_a, report_b, mut p, mut q) = tokio::join!(
        send_at_full_speed(sender_a, slow_id.clone()),
        send_at_full_speed(sender_b, slow_id.clone()),
        converse(p, q_id, slow_id.clone()),
        converse(q, p_id, slow_id.clone()),
    );
    watching.store(false, Ordering::SeqCst);
    sampler.await.unwrap();

    // Memory: at most the slow client's queue (and the batch being written
    // from it) on top of what the server used before.
    let peak = peak.load(Ordering::SeqCst);
    let bound = baseline + 2 * QUEUE_BYTES + SLACK;
    eprintln!("server RSS: baseline {} KiB, peak {} KiB, bound {} KiB", baseline / 1024, peak / 1024, bound / 1024);
    assert!(peak <= bound, "server RSS peaked at {peak} bytes; the queue limits allow {bound}");

    // The senders were told, never left in silence: every relay got exactly one
    // reply; refusals are `delivery-failed` until the slow client was gone,
    // then that it is gone.
    let mut delivery_failed = 0;
    for report in [&report_a, &report_b] {
        assert_eq!(report.replies.len() as u64, report.sent);
        assert!(report.sent < MOST_RELAYS, "a sender ran out of relays before the slow client was closed");
        let mut refused = false;
        for reply in &report.replies {
            match reply {
                None => assert!(!refused, "no relay is accepted after one was refused"),
                Some((code, _)) if code == "delivery-failed" => {
                    refused = true;
                    delivery_failed += 1;
                }
                Some((code, true)) if code == "unknown-target" || code == "no-shared-room" => refused = true,
                Some(other) => panic!("unexpected refusal {other:?}"),
            }
        }
    }
    assert!(delivery_failed >= 1, "a sender was told delivery failed");
    assert_eq!(server.metric("switchboard_slow_consumers_total").await, 1.0);
    assert_eq!(server.metric("switchboard_errors_total{code=\"delivery-failed\"}").await, delivery_failed as f64);

    // The slow client, reading at last: relays from each sender in the order
    // sent, none twice, none from anyone else, then close 1008.
    let (texts, code) = slow.drain().await;
    let mut next = [0u64; 2];
    for text in &texts {
        let relay: Value = serde_json::from_str(text).unwrap();
        let sender = sender_ids.iter().position(|id| relay["from"] == id.as_str()).expect("a relay from a sender");
        assert_eq!(relay["seq"], next[sender], "from sender {sender}, in order, once");
        next[sender] += 1;
    }
    assert!(next.iter().sum::<u64>() > 0, "the slow client had read nothing, yet got nothing queued");
    eprintln!(
        "senders sent {} and {} relays; the slow client got {} of them",
        report_a.sent,
        report_b.sent,
        texts.len()
    );
    assert_eq!(code, Some(1008), "after {} relays the slow client is told why it was closed", texts.len());
    // The other pair heard of the slow client leaving, and of nothing else.
    for member in [&mut p, &mut q] {
        if !member.slow_left {
            assert_eq!(member.reader.next_json().await, json!({"type": "peer-left", "data": slow_id, "room": "room"}));
        }
    }
    wait_metric(&server, "switchboard_peers", 4.0).await;
}
