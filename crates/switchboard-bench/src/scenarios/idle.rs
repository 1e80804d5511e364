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

use super::{await_joined, close_all, progress_bar, ramp, rate_limit_note, setup, Ctx, Outcome};
use crate::cli::IdleArgs;
use crate::protocol::{Event, PeerId, Protocol, Rx, Tx};
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
    let rss_before = args.server_pid.map(rss_kib).transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let room_of: Arc<Mutex<HashMap<PeerId, u64>>> = Arc::default();

    let bar = progress_bar(n, "connecting");
    let started = Instant::now();
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    let connections = ramp(n, common.ramp_concurrency, |i| {
        let (bar, room_of, stop_rx) = (bar.clone(), room_of.clone(), stop_rx.clone());
        async move {
            let room = i % rooms;
            let name = format!("idle-{room}");
            let connect_start = Instant::now();
            let mut peer = setup(|| format!("connection {i}: connecting"), protocol.connect()).await?;
            room_of.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.id.clone(), room);
            let early = setup(|| format!("connection {i}: joining {name}"), async {
                peer.tx.join(&name).await?;
                await_joined(&mut peer.rx, &name).await
            })
            .await?;
            ctx.latencies.record(connect_start.elapsed().as_micros() as u64);
            ctx.done.add(1);
            ctx.check.checked(1);
            bar.inc(1);
            let reader = tokio::spawn(hold(peer.rx, peer.id, room, early, room_of, ctx.clone(), stop_rx));
            Ok((peer.tx, reader))
        }
    })
    .await?;
    bar.finish_and_clear();
    let ramped = started.elapsed();

    tokio::time::sleep(common.duration).await;
    let rss_after = args.server_pid.map(rss_kib).transpose()?;
    let series = sampler.finish().await;
    let _ = stop_tx.send(true);
    let mut received = 0;
    let mut halves = Vec::with_capacity(connections.len());
    for (tx, reader) in connections {
        let (rx, peer_joined) = reader.await?;
        received += peer_joined;
        halves.push((tx, rx));
    }

    // Every room of k members owes k(k-1)/2 `peer-joined`: one per pair.
    let expected: u64 = (0..rooms)
        .map(|room| {
            let k = n / rooms + u64::from(room < n % rooms);
            k * (k - 1) / 2
        })
        .sum();
    let check = &ctx.check;
    check.violations_n(Violation::Lost, expected.saturating_sub(received), || {
        format!("{} of {expected} peer-joined never arrived", expected - received)
    });
    check.violations_n(Violation::Duplicated, received.saturating_sub(expected), || {
        format!("{} peer-joined more than the {expected} owed", received - expected)
    });
    close_all(halves).await;

    let mut outcome =
        Outcome::new("idle", ctx, n, ramped, "connections/s").param("connections", n).param("rooms", rooms);
    outcome.latency_label = "connect+join";
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

/// Reads one held connection until `stop`; returns the receiving half and how many
/// `peer-joined` it got (including `early` ones, read while joining).
async fn hold<R: Rx>(
    mut rx: R,
    me: PeerId,
    room: u64,
    early: u64,
    room_of: Arc<Mutex<HashMap<PeerId, u64>>>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> (R, u64) {
    let check = &ctx.check;
    let mut peer_joined = early;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = rx.next() => event,
        };
        match event {
            Ok(Some(Event::PeerJoined { peer })) => {
                check.checked(1);
                let peer_room = room_of.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).copied();
                if peer == me || peer_room != Some(room) {
                    check.violation(Violation::WrongSender, || {
                        format!("{me} in idle-{room}: peer-joined for {peer}, who is in {peer_room:?}")
                    });
                } else {
                    peer_joined += 1;
                }
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
    (rx, peer_joined)
}
