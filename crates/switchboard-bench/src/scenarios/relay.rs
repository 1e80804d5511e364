//! `relay`: P pairs of peers, each pair alone in its own room, both peers sending
//! relay messages (`offer`, `signal`, `candidate`) addressed to the other.
//!
//! Closed loop (the default): each sender keeps `--window` messages in flight; the
//! receiver hands a permit back for each message it gets, so the run goes as fast
//! as the server and the machine allow. Open loop (`--rate`): the total offered
//! rate is split evenly over the 2P senders, each on a fixed, staggered timetable;
//! latency is measured from when a message was due, so a sender that falls behind
//! does not hide the delay (no coordinated omission). Latency is always receive
//! time minus the stamp in the body, on the process's one monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::cli::RelayArgs;
use crate::protocol::{Protocol, Purpose};
use crate::stats::Sampler;

/// How long after the senders are set up the first message is due (open loop).
const LEAD: Duration = Duration::from_millis(5);

pub async fn run<P: Protocol>(protocol: &P, args: &RelayArgs, ctx: &Arc<Ctx>) -> Result<Outcome> {
    let common = &ctx.common;
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);

    // Ramp: both peers of a pair connect, then join their room in turn.
    let bar = progress_bar(args.pairs * 2, "connecting");
    let pairs = ramp(args.pairs, common.ramp_concurrency, |pair| {
        let bar = bar.clone();
        async move {
            let room = format!("relay-{pair}");
            let connect = || protocol.connect_in(&room, Purpose::Signaling);
            let (a, _) = setup(|| format!("pair {pair}: connecting and joining {room}"), connect()).await?;
            let (b, _) = setup(|| format!("pair {pair}: connecting and joining {room}"), connect()).await?;
            bar.inc(2);
            Ok((a, b))
        }
    })
    .await?;
    bar.finish_and_clear();

    // Receivers first, so nothing sent goes unread.
    let senders_total = args.pairs * 2;
    let window = args.window as usize;
    let mut receivers = Vec::with_capacity(senders_total as usize);
    let mut plans = Vec::with_capacity(senders_total as usize);
    let mut sending = Vec::with_capacity(senders_total as usize);
    for (pair, (a, b)) in pairs.into_iter().enumerate() {
        // Stream 2*pair is a -> b, stream 2*pair+1 is b -> a; each connection's
        // receiver checks the other direction.
        let peers = [(a.id.clone(), b.id.clone()), (b.id.clone(), a.id.clone())];
        let halves = [(a.tx, a.rx), (b.tx, b.rx)];
        let windows: [Arc<Semaphore>; 2] = [Arc::new(Semaphore::new(window)), Arc::new(Semaphore::new(window))];
        for (side, (tx, rx)) in halves.into_iter().enumerate() {
            let stream = pair * 2 + side;
            let (me, other) = peers[side].clone();
            let incoming = windows[1 - side].clone();
            let label = format!("pair {pair}: {other} -> {me}");
            let expect = Expect { me: me.clone(), from: Some(other.clone()), broadcast: false, label };
            let on_new = move |_seq| incoming.add_permits(1);
            receivers.push(tokio::spawn(receive_loop(rx, expect, ctx.clone(), stop_rx.clone(), on_new)));
            let pace = match args.rate {
                None => Pace::Closed(windows[side].clone()),
                Some(rate) => {
                    let interval_us = senders_total as f64 * 1e6 / rate;
                    Pace::Open { start_us: 0, offset_us: stream as f64 * 1e6 / rate, interval_us }
                }
            };
            let sent = Arc::new(AtomicU64::new(0));
            sending.push((sent.clone(), format!("pair {pair}: {me} -> {other}")));
            plans.push((
                tx,
                SendPlan {
                    dest: Dest::Peer(other),
                    mix: args.size_mix,
                    pace,
                    end: Instant::now(),
                    sent,
                    rng: SmallRng::seed_from_u64(stream as u64),
                },
            ));
        }
    }

    // Measure: every sender starts on the same clock.
    let start_us = ctx.clock.now_us() + LEAD.as_micros() as u64;
    let start = ctx.clock.instant_at(start_us);
    for (_, plan) in &mut plans {
        plan.start(start_us, start + common.duration);
    }
    tokio::time::sleep_until(start.into()).await;
    let started = Instant::now();
    let sampler = Sampler::start(ctx.done.clone(), Sampler::interval_for(common.duration));
    ctx.cpu_mark_start();
    let senders = plans.into_iter().zip(&sending).map(|((tx, plan), (_, label))| (tx, plan, label.clone())).collect();
    let txs = send_all(senders, ctx).await?;
    let expected: u64 = sending.iter().map(|(sent, _)| sent.load(Ordering::Relaxed)).sum();
    let drained = drain(&ctx.done, expected, common.drain_timeout).await;
    let measured = started.elapsed();
    let series = sampler.finish().await;
    ctx.cpu_mark_end();
    let _ = stop_tx.send(true);
    let mut rxs = Vec::with_capacity(receivers.len());
    let mut trackers = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        let (rx, tracker) = receiver.await?;
        rxs.push(rx);
        trackers.push(tracker);
    }

    // Stream s (s's sender is connection s) is checked by the other connection of the pair.
    let streams: Vec<_> = sending
        .iter()
        .enumerate()
        .map(|(s, (sent, label))| (&trackers[s ^ 1], sent.load(Ordering::Relaxed), label.as_str()))
        .collect();
    count_losses(ctx, &streams);
    drop(streams);
    close_all(txs.into_iter().zip(rxs).collect()).await;

    let delivered = ctx.done.get();
    let mut outcome = Outcome::new("relay", ctx, delivered, measured, "msgs/s")
        .param("pairs", args.pairs)
        .param("size_mix", format!("{:?}", args.size_mix).to_lowercase())
        .param("mode", if args.rate.is_some() { "open" } else { "closed" })
        .param("window", if args.rate.is_some() { Value::Null } else { args.window.into() })
        .param("rate", args.rate);
    outcome.latency_label = "delivery";
    outcome.series = series;
    outcome.extra.insert("sent".into(), expected.into());
    if let Some(rate) = args.rate {
        let achieved = expected as f64 / common.duration.as_secs_f64();
        if achieved < rate * 0.95 {
            outcome.notes.push(format!(
                "warning: offered {rate:.0} msgs/s but only {achieved:.0} msgs/s went out: the load generator \
                 could not keep up, so latency includes its own backlog"
            ));
        }
    }
    if !drained {
        outcome
            .notes
            .push(format!("{} messages still missing after --drain-timeout", expected.saturating_sub(delivered)));
    }
    outcome.notes.extend(pacer_note(&outcome));
    outcome.notes.extend(rate_limit_note(ctx));
    Ok(outcome)
}
