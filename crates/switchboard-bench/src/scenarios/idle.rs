//! `idle`: ramp N connections, each joining one of R rooms (N/R per room), and
//! hold them for `--duration`.
//!
//! Reports the connect+join rate over the ramp and each connection's
//! connect+join latency. With `--server-pid`, reads the server's resident memory
//! (VmRSS in /proc/PID/status) before the ramp and at the end of the hold, and
//! reports the difference per connection. Checks that every member of a room is
//! told about each later joiner exactly once (k(k-1)/2 `peer-joined` per room of
//! k), always about a peer of its own room, and that nothing else arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::watch;

use super::{close_all, progress_bar, ramp, rate_limit_note, setup, Ctx, Outcome};
use crate::cli::IdleArgs;
use crate::protocol::{Event, PeerId, Protocol, Purpose, Rx};
use crate::stats::{Sampler, Violation};

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("--server-pid {pid}: cannot read {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS line in {path}"))
}

pub async fn run<P: Protocol>(protocol: &P, args: &IdleArgs, ctx: &Arc<Ctx>) -> Result<Outcome> {
    let common = &ctx.common;
    let n = args.connections;
    let rooms = args.rooms.unwrap_or(n / 10).clamp(1, n);
    let rss_before = common.server_pid.map(rss_kib).transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let room_of: Arc<Mutex<HashMap<PeerId, u64>>> = Arc::default();
    let features = protocol.features();
    // A server without rooms (the bare echo server) holds echo connections: the
    // WebSocket library's own cost per connection.
    let rooms_supported = features.signaling.is_ok();

    let bar = progress_bar(n, "connecting");
    let started = Instant::now();
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    ctx.cpu_mark_start();
    let connections = ramp(n, common.ramp_concurrency, |i| {
        let (bar, room_of, stop_rx) = (bar.clone(), room_of.clone(), stop_rx.clone());
        async move {
            let room = i % rooms;
            let name = format!("idle-{room}");
            let connect_start = Instant::now();
            let (peer, early) = if rooms_supported {
                let connect = protocol.connect_in(&name, Purpose::Signaling);
                setup(|| format!("connection {i}: connecting and joining {name}"), connect).await?
            } else {
                (setup(|| format!("connection {i}: connecting"), protocol.connect_echo()).await?, 0)
            };
            room_of.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.id.clone(), room);
            ctx.latencies.record(connect_start.elapsed().as_micros() as u64);
            ctx.done.add(1);
            ctx.check.checked(1);
            bar.inc(1);
            let reader = tokio::spawn(hold(peer.rx, peer.id, early, ctx.clone(), stop_rx));
            Ok((peer.tx, reader))
        }
    })
    .await?;
    bar.finish_and_clear();
    let ramped = started.elapsed();
    ctx.cpu_mark_end();

    tokio::time::sleep(common.duration).await;
    let rss_after = common.server_pid.map(rss_kib).transpose()?;
    let series = sampler.finish().await;
    let _ = stop_tx.send(true);
    let mut received = 0;
    let mut halves = Vec::with_capacity(connections.len());
    // Now that every peer's room is known, check who each was told about.
    let room_of = std::mem::take(&mut *room_of.lock().unwrap_or_else(|e| e.into_inner()));
    for (tx, reader) in connections {
        let (rx, me, told) = reader.await?;
        received += told.early;
        let room = room_of.get(&me).copied();
        for peer in told.peers {
            let peer_room = room_of.get(&peer).copied();
            if peer == me || peer_room.is_none() || peer_room != room {
                ctx.check.violation(Violation::WrongSender, || {
                    format!("{me} in room {room:?}: peer-joined for {peer}, who is in {peer_room:?}")
                });
            } else {
                received += 1;
            }
        }
        halves.push((tx, rx));
    }

    // Every room of k members owes k(k-1)/2 `peer-joined`: one per pair (none on
    // servers that do not tell members about each other).
    let expected: u64 = if rooms_supported && features.membership_events {
        (0..rooms)
            .map(|room| {
                let k = n / rooms + u64::from(room < n % rooms);
                k * (k - 1) / 2
            })
            .sum()
    } else {
        0
    };
    let check = &ctx.check;
    check.violations_n(Violation::Lost, expected.saturating_sub(received), || {
        format!("{} of {expected} peer-joined never arrived", expected - received)
    });
    check.violations_n(Violation::Duplicated, received.saturating_sub(expected), || {
        format!("{} peer-joined more than the {expected} owed", received - expected)
    });
    close_all(halves).await;

    let mut outcome = Outcome::new("idle", ctx, n, ramped, "connections/s")
        .param("connections", n)
        .param("rooms", if rooms_supported { Some(rooms) } else { None });
    if !rooms_supported {
        outcome.notes.push("echo connections, no rooms: this server has no signaling".into());
        outcome.latency_label = "connect";
    }
    if rooms_supported {
        outcome.latency_label = "connect+join";
    }
    outcome.series = series;
    outcome.extra.insert("hold_s".into(), common.duration.as_secs_f64().into());
    outcome.extra.insert("peer_joined".into(), received.into());
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per_connection = after.saturating_sub(before) as f64 / n as f64;
        outcome.extra.insert("server_rss_before_kib".into(), before.into());
        outcome.extra.insert("server_rss_after_kib".into(), after.into());
        outcome.extra.insert("server_rss_per_connection_kib".into(), ((per_connection * 100.0).round() / 100.0).into());
    }
    outcome.notes.extend(rate_limit_note(ctx));
    Ok(outcome)
}

/// Whom one connection was told about.
struct Told {
    /// `peer-joined` read while joining (not checked: the peer may not be known yet).
    early: u64,
    /// The peers named by `peer-joined` while held, checked at the end.
    peers: Vec<PeerId>,
}

/// Reads one held connection until `stop`; returns the receiving half, its id,
/// and whom it was told about.
async fn hold<R: Rx>(
    mut rx: R,
    me: PeerId,
    early: u64,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> (R, PeerId, Told) {
    let check = &ctx.check;
    let mut told = Told { early, peers: Vec::new() };
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = rx.next() => event,
        };
        match event {
            Ok(Some(Event::PeerJoined { peer })) => {
                check.checked(1);
                told.peers.push(peer);
            }
            Ok(Some(Event::Error { code, message })) => check.server_error(&code, &message, || me.clone()),
            Ok(Some(other)) => check.violation(Violation::Unexpected, || format!("{me}: unexpected {other:?}")),
            Ok(None) => {
                check.violation(Violation::ConnectionFailure, || format!("{me}: the server closed the connection"));
                break;
            }
            Err(err) => {
                check.violation(Violation::ConnectionFailure, || format!("{me}: {err:#}"));
                break;
            }
        }
    }
    (rx, me, told)
}
