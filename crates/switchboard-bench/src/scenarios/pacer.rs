//! The open-loop pacer: one dedicated OS thread that sends every message of
//! every open-loop sender itself, at its due time.
//!
//! tokio's timer wakes on a 1 ms grid, so a task that sleeps until a message is
//! due sends it up to a millisecond late; at 2,000 msgs/s that lateness, not the
//! server, was most of the measured latency. The pacer instead merges every
//! sender's timetable (a heap ordered by due time), sleeps on the OS clock with
//! the thread's timer slack cut to 1 ns until `spin` before the next message is
//! due, spins the rest, stamps the message with its due time and the actual
//! send time, and writes and flushes it on the connection's sending half (with
//! `Handle::block_on`: the socket write itself normally completes at once; the
//! runtime's workers keep receiving meanwhile). Messages already due when one
//! goes out follow it at once, each still stamped with its own due time, so a
//! pacer that falls behind is charged for it: latency is measured from the due
//! time, and the pacer's own lateness (actual send minus due) is recorded in
//! [`Ctx::lateness`] for the report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::runtime::Handle;

use super::{send_one, Ctx, Pace, SendPlan};
use crate::protocol::Tx;
use crate::stats::Violation;

/// One open-loop sender: its sending half, its plan (whose pace must be
/// [`Pace::Open`]), and its name for violation messages.
pub struct Paced<T> {
    pub tx: T,
    pub plan: SendPlan,
    pub label: String,
}

/// What the pacer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacerStats {
    /// Messages written.
    pub sent: u64,
    /// Senders whose connection failed (and that stopped sending).
    pub failed: u64,
}

/// Sends every sender's timetable on a new thread named `pacer`; returns the
/// sending halves, in the order given, once every timetable has run out.
pub async fn run<T: Tx>(senders: Vec<Paced<T>>, ctx: Arc<Ctx>, spin: Duration) -> Result<(Vec<T>, PacerStats)> {
    let handle = Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let result = pace(senders, &ctx, &handle, spin);
            let _ = done_tx.send(result);
        })
        .map_err(|err| anyhow!("cannot start the pacer thread: {err}"))?;
    done_rx.await.map_err(|_| anyhow!("the pacer thread panicked"))
}

/// Message `k` of a sender paced `Open { start_us, offset_us, interval_us }`.
fn due_us(pace: &Pace, k: u64) -> u64 {
    match *pace {
        Pace::Open { start_us, offset_us, interval_us } => start_us + (offset_us + k as f64 * interval_us) as u64,
        Pace::Closed(_) => unreachable!("the pacer only paces open-loop senders"),
    }
}

/// The pacer thread's loop.
fn pace<T: Tx>(mut senders: Vec<Paced<T>>, ctx: &Ctx, handle: &Handle, spin: Duration) -> (Vec<T>, PacerStats) {
    precise_sleeps();
    let mut stats = PacerStats::default();
    // (due, sender, k), earliest first; ties in sender order.
    let mut heap = BinaryHeap::with_capacity(senders.len());
    let end_us: Vec<u64> = senders
        .iter()
        .map(|s| s.plan.end.saturating_duration_since(ctx.clock.instant_at(0)).as_micros() as u64)
        .collect();
    for (i, sender) in senders.iter().enumerate() {
        let due = due_us(&sender.plan.pace, 0);
        if due < end_us[i] {
            heap.push(Reverse((due, i, 0u64)));
        }
    }
    while let Some(Reverse((due, i, k))) = heap.pop() {
        wait_until(ctx.clock.instant_at(due), spin);
        let now = ctx.clock.now_us();
        ctx.lateness.record_raw(now.saturating_sub(due));
        let sender = &mut senders[i];
        let result = handle.block_on(async {
            send_one(&mut sender.tx, &mut sender.plan, k, due, now).await?;
            sender.tx.flush().await
        });
        match result {
            Ok(()) => {
                stats.sent += 1;
                let next = due_us(&sender.plan.pace, k + 1);
                if next < end_us[i] {
                    heap.push(Reverse((next, i, k + 1)));
                }
            }
            Err(err) => {
                stats.failed += 1;
                let label = &sender.label;
                ctx.check.violation(Violation::ConnectionFailure, || format!("{label}: {err:#}"));
            }
        }
    }
    (senders.into_iter().map(|s| s.tx).collect(), stats)
}

/// Sleeps until `spin` before `deadline`, then spins until it, yielding the
/// CPU at each turn.
///
/// The yield matters when the load generator has one core (pinned): at 20,000
/// msgs/s a message is due every 50 µs, less than `spin`, so the pacer never
/// sleeps, and a pure spin kept the runtime's receiving threads off that core
/// until the scheduler preempted it (every few ms): every target then showed a
/// p99 of about 4.5 ms at 20,000 msgs/s, the bare relay included. `sched_yield`
/// lets a runnable receiver go first; the pacer's lateness, if a receiver then
/// runs past a due time, is still measured and charged.
fn wait_until(deadline: Instant, spin: Duration) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if let Some(sleep) = (deadline - now).checked_sub(spin) {
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// Cuts this thread's timer slack from the default 50 µs to 1 ns, so that its
/// sleeps end when asked (Linux; elsewhere nothing).
fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;
    use crate::cli::{Cli, Command, SizeMix};
    use crate::protocol::{Outgoing, Stamp};
    use crate::scenarios::{Dest, PacerReport};
    use clap::Parser;

    /// A sending half that notes what it was asked to send, and in which order.
    struct Recorder {
        sender: usize,
        log: Arc<Mutex<Vec<(usize, Stamp)>>>,
        flushes: u64,
    }

    impl Tx for Recorder {
        async fn join(&mut self, _room: &str) -> Result<()> {
            Ok(())
        }
        async fn leave(&mut self, _room: &str) -> Result<()> {
            Ok(())
        }
        async fn relay(&mut self, _to: &str, message: &Outgoing) -> Result<()> {
            self.log.lock().unwrap().push((self.sender, message.stamp));
            Ok(())
        }
        async fn broadcast(&mut self, _room: &str, message: &Outgoing) -> Result<()> {
            self.log.lock().unwrap().push((self.sender, message.stamp));
            Ok(())
        }
        async fn echo(&mut self, _text: &str) -> Result<()> {
            Ok(())
        }
        async fn flush(&mut self) -> Result<()> {
            self.flushes += 1;
            Ok(())
        }
        async fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }

    fn ctx() -> Arc<Ctx> {
        let cli = Cli::parse_from(["switchboard-bench", "relay", "--pairs", "2", "--rate", "2000"]);
        let Command::Scenario(scenario) = cli.command else { unreachable!() };
        Arc::new(Ctx::new(scenario.common().clone(), true))
    }

    /// Not a timing test: whatever the machine does, the pacer sends every
    /// message of every timetable exactly once, each sender's in order, all in
    /// order of due time, and accounts for each one's lateness.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_exactly_the_timetable_in_order_and_reports_lateness() {
        let ctx = ctx();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (senders_n, rate, duration_us) = (4usize, 2000.0, 50_000u64);
        let start_us = ctx.clock.now_us() + 2_000;
        let end = ctx.clock.instant_at(start_us + duration_us);
        let interval_us = senders_n as f64 * 1e6 / rate;
        let mut expected = 0;
        let senders = (0..senders_n)
            .map(|i| {
                let offset_us = i as f64 * 1e6 / rate;
                let pace = Pace::Open { start_us, offset_us, interval_us };
                expected += (0..).take_while(|k| offset_us + *k as f64 * interval_us < duration_us as f64).count();
                Paced {
                    tx: Recorder { sender: i, log: log.clone(), flushes: 0 },
                    plan: SendPlan {
                        dest: Dest::Peer(format!("peer-{i}")),
                        mix: SizeMix::Candidate,
                        pace,
                        end,
                        sent: Arc::new(AtomicU64::new(0)),
                        rng: SmallRng::seed_from_u64(i as u64),
                    },
                    label: format!("sender {i}"),
                }
            })
            .collect();
        let (txs, stats) = run(senders, ctx.clone(), Duration::from_micros(100)).await.unwrap();

        let log = log.lock().unwrap();
        assert_eq!(stats, PacerStats { sent: expected as u64, failed: 0 });
        assert_eq!(log.len(), expected);
        assert_eq!(txs.len(), senders_n);
        for (i, tx) in txs.iter().enumerate() {
            let seqs: Vec<u64> = log.iter().filter(|(s, _)| *s == i).map(|(_, stamp)| stamp.seq).collect();
            assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "sender {i}");
            assert_eq!(tx.flushes, seqs.len() as u64, "one flush per message");
        }
        for pair in log.windows(2) {
            assert!(pair[0].1.due_us <= pair[1].1.due_us, "out of due order: {pair:?}");
        }
        for (_, stamp) in log.iter() {
            assert!(stamp.sent_us >= stamp.due_us, "sent before due: {stamp:?}");
        }
        let report = PacerReport::of(&ctx);
        assert_eq!((report.kind, report.spin_us), ("thread", Some(150)));
        let lateness = report.lateness_us.clone().expect("lateness recorded");
        assert_eq!(lateness.count, expected as u64);
        assert!(lateness.p50 <= lateness.p99 && lateness.p99 <= lateness.max);
        let json = serde_json::to_value(&report).unwrap();
        for field in ["p50", "p99", "max"] {
            assert!(json["lateness_us"][field].is_u64(), "{json}");
        }
    }
}
