//! `fanout`: M rooms of K peers; the first peer of each room broadcasts, the other
//! K-1 check that every broadcast reaches them once, in order, from that peer.
//!
//! Closed loop: a broadcast is in flight until all K-1 receivers have it; each
//! sender keeps `--window` in flight. Since every receiver gets a sender's
//! broadcasts in order, broadcasts complete in order, so a ring of `window`
//! counters (one per in-flight sequence number) tells when one completes. Open
//! loop (`--rate`): the total broadcast rate is split over the M senders on fixed,
//! staggered timetables, latency measured from when each broadcast was due.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};

use super::{
    close_all, count_losses, drain, pacer_note, progress_bar, ramp, rate_limit_note, receive_loop, send_all, setup,
    Ctx, Dest, Expect, Outcome, Pace, SendPlan,
};
use crate::cli::FanoutArgs;
use crate::protocol::{Protocol, Purpose};
use crate::stats::Sampler;

/// How long after setup the first broadcast is due (open loop).
const LEAD: Duration = Duration::from_millis(5);

/// One room's closed-loop window: permits for the sender, and per in-flight
/// sequence number how many receivers have it.
struct RoomWindow {
    permits: Arc<Semaphore>,
    ring: Vec<AtomicU32>,
    receivers: u32,
}

impl RoomWindow {
    fn received(&self, seq: u64) {
        let slot = &self.ring[(seq % self.ring.len() as u64) as usize];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == self.receivers {
            slot.store(0, Ordering::Release);
            self.permits.add_permits(1);
        }
    }
}

pub async fn run<P: Protocol>(protocol: &P, args: &FanoutArgs, ctx: &Arc<Ctx>) -> Result<Outcome> {
    let common = &ctx.common;
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of broadcasts per second");
        }
    }
    let rooms = args.rooms;
    let receivers_per_room = args.room_size - 1;
    let (stop_tx, stop_rx) = watch::channel(false);
    let windows: Vec<Arc<RoomWindow>> = (0..rooms)
        .map(|_| {
            Arc::new(RoomWindow {
                permits: Arc::new(Semaphore::new(args.window as usize)),
                ring: (0..args.window).map(|_| AtomicU32::new(0)).collect(),
                receivers: receivers_per_room as u32,
            })
        })
        .collect();

    // Ramp: each room's sender joins first, then its receivers. Every connection's
    // receiving half starts as soon as it has joined, so membership events never pile up.
    let bar = progress_bar(rooms * args.room_size, "connecting");
    let senders = ramp(rooms, common.ramp_concurrency, |room| {
        let bar = bar.clone();
        async move {
            let name = format!("fanout-{room}");
            let connect = protocol.connect_in(&name, Purpose::Broadcast);
            let (peer, _) = setup(|| format!("room {room}: connecting and joining the sender"), connect).await?;
            bar.inc(1);
            Ok(peer)
        }
    })
    .await?;
    let mut sender_halves = Vec::with_capacity(rooms as usize);
    let mut sender_ids = Vec::with_capacity(rooms as usize);
    for (room, peer) in senders.into_iter().enumerate() {
        let expect = Expect {
            me: peer.id.clone(),
            from: None,
            broadcast: true,
            label: format!("room {room}: sender {}", peer.id),
        };
        let rx = tokio::spawn(receive_loop(peer.rx, expect, ctx.clone(), stop_rx.clone(), |_| {}));
        sender_ids.push(peer.id.clone());
        sender_halves.push((peer.tx, rx, peer.id));
    }
    let open_loop = args.rate.is_some();
    let receivers = ramp(rooms * receivers_per_room, common.ramp_concurrency, |i| {
        let bar = bar.clone();
        let room = i % rooms;
        let from = sender_ids[room as usize].clone();
        let window = windows[room as usize].clone();
        let stop_rx = stop_rx.clone();
        async move {
            let name = format!("fanout-{room}");
            let connect = protocol.connect_in(&name, Purpose::Broadcast);
            let (peer, _) = setup(|| format!("room {room}: connecting and joining a receiver"), connect).await?;
            let label = format!("room {room}: {from} -> {}", peer.id);
            let expect = Expect { me: peer.id.clone(), from: Some(from), broadcast: true, label };
            let on_new = move |seq| {
                if !open_loop {
                    window.received(seq)
                }
            };
            let rx = tokio::spawn(receive_loop(peer.rx, expect, ctx.clone(), stop_rx, on_new));
            bar.inc(1);
            Ok((room, peer.tx, rx))
        }
    })
    .await?;
    bar.finish_and_clear();

    let mut sent_counts = Vec::with_capacity(rooms as usize);
    let mut plans = Vec::with_capacity(rooms as usize);
    for (room, window) in windows.iter().enumerate() {
        let pace = match args.rate {
            None => Pace::Closed(window.permits.clone()),
            Some(rate) => {
                Pace::Open { start_us: 0, offset_us: room as f64 * 1e6 / rate, interval_us: rooms as f64 * 1e6 / rate }
            }
        };
        let sent = Arc::new(AtomicU64::new(0));
        sent_counts.push(sent.clone());
        let plan = SendPlan {
            dest: Dest::Room(format!("fanout-{room}")),
            mix: args.size_mix,
            pace,
            end: Instant::now(),
            sent,
            rng: SmallRng::seed_from_u64(room as u64),
        };
        plans.push(plan);
    }

    // Measure: every sender starts on the same clock.
    let start_us = ctx.clock.now_us() + LEAD.as_micros() as u64;
    let start = ctx.clock.instant_at(start_us);
    for plan in &mut plans {
        plan.start(start_us, start + common.duration);
    }
    tokio::time::sleep_until(start.into()).await;
    let started = Instant::now();
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    ctx.cpu_mark_start();
    let mut sender_rxs = Vec::with_capacity(rooms as usize);
    let mut senders = Vec::with_capacity(rooms as usize);
    for ((tx, rx, id), plan) in sender_halves.into_iter().zip(plans) {
        senders.push((tx, plan, format!("sender {id}")));
        sender_rxs.push(rx);
    }
    let sender_txs = send_all(senders, ctx).await?;
    let broadcasts: u64 = sent_counts.iter().map(|sent| sent.load(Ordering::Relaxed)).sum();
    let expected = broadcasts * receivers_per_room;
    let drained = drain(&ctx.done, expected, common.drain_timeout).await;
    let measured = started.elapsed();
    let series = sampler.finish().await;
    ctx.cpu_mark_end();
    let _ = stop_tx.send(true);

    let mut connections = Vec::with_capacity((rooms * args.room_size) as usize);
    for (tx, rx) in sender_txs.into_iter().zip(sender_rxs) {
        let (rx, _) = rx.await?;
        connections.push((tx, rx));
    }
    let mut trackers = Vec::with_capacity(receivers.len());
    for (room, tx, rx) in receivers {
        let (rx, tracker) = rx.await?;
        trackers.push((room, tracker));
        connections.push((tx, rx));
    }
    let labels: Vec<String> = (0..rooms).map(|room| format!("room {room}")).collect();
    let streams: Vec<_> = trackers
        .iter()
        .map(|(room, tracker)| {
            (tracker, sent_counts[*room as usize].load(Ordering::Relaxed), labels[*room as usize].as_str())
        })
        .collect();
    count_losses(ctx, &streams);
    drop(streams);
    close_all(connections).await;

    let delivered = ctx.done.get();
    let mut outcome = Outcome::new("fanout", ctx, delivered, measured, "deliveries/s")
        .param("room_size", args.room_size)
        .param("rooms", rooms)
        .param("size_mix", format!("{:?}", args.size_mix).to_lowercase())
        .param("mode", if open_loop { "open" } else { "closed" })
        .param("window", if open_loop { Value::Null } else { args.window.into() })
        .param("rate", args.rate);
    outcome.latency_label = "delivery";
    outcome.series = series;
    outcome.extra.insert("broadcasts".into(), broadcasts.into());
    outcome.extra.insert("broadcasts_per_s".into(), (broadcasts as f64 / measured.as_secs_f64()).into());
    if let Some(rate) = args.rate {
        let achieved = broadcasts as f64 / common.duration.as_secs_f64();
        if achieved < rate * 0.95 {
            outcome.notes.push(format!(
                "warning: offered {rate:.0} broadcasts/s but only {achieved:.0}/s went out: the load generator \
                 could not keep up, so latency includes its own backlog"
            ));
        }
    }
    if !drained {
        outcome
            .notes
            .push(format!("{} deliveries still missing after --drain-timeout", expected.saturating_sub(delivered)));
    }
    outcome.notes.extend(pacer_note(&outcome));
    outcome.notes.extend(rate_limit_note(ctx));
    Ok(outcome)
}
