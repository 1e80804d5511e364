//! The scenarios, and the machinery they share: ramping connections up under a
//! progress bar, the senders (closed loop with a window, or open loop on a
//! timetable), the checking receiver, draining, and closing.
//!
//! Each scenario is generic over the [`Protocol`] adapter and returns an
//! [`Outcome`]; [`run`] picks the adapter and turns the outcome and the shared
//! [`Check`] into a [`Report`].

pub mod churn;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod pacer;
pub mod relay;

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::{Map, Value};
use tokio::sync::{watch, Semaphore};

use crate::cli::{Adapter, Common, PacerKind, Scenario, SizeMix};
use crate::protocol::bare_relay::BareRelay;
use crate::protocol::matchbox::Matchbox;
use crate::protocol::peerjs::PeerJs;
use crate::protocol::seed::Seed;
use crate::protocol::switchboard::Switchboard;
use crate::protocol::{BodyKind, Event, Outgoing, PeerId, Protocol, Rx, Stamp, Target, Tx, Unsupported};
use crate::report::Report;
use crate::stats::{Check, Clock, Counter, Latencies, Percentiles, Sample, SeqTracker, Violation};

/// How long setup steps (connect, join) may take before the run fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing one connection may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections closed at once at the end.
const CLOSE_CONCURRENCY: usize = 256;

/// Runs the scenario on the command line against the server it names.
pub async fn run(scenario: &Scenario) -> Result<Report> {
    let common = scenario.common();
    // Several comma-separated URLs: nodes of one Switchboard cluster.
    let mut targets = common.url.split(',').map(Target::parse).collect::<Result<Vec<_>>>()?;
    if targets.len() > 1 && common.adapter != Adapter::Switchboard {
        bail!("several --url values are for Switchboard nodes sharing rooms over Redis");
    }
    let target = targets.remove(0);
    let read_buffer = scenario.read_buffer();
    match common.adapter {
        Adapter::Switchboard => {
            targets.insert(0, target);
            run_with(Switchboard::nodes(targets, read_buffer), scenario).await
        }
        Adapter::Bare => run_with(Switchboard::bare(target, read_buffer), scenario).await,
        Adapter::BareRelay => run_with(BareRelay::new(target, read_buffer), scenario).await,
        Adapter::Seed => run_with(Seed::new(target, read_buffer), scenario).await,
        Adapter::Matchbox => run_with(Matchbox::new(target, read_buffer), scenario).await,
        Adapter::Peerjs => run_with(PeerJs::new(target, read_buffer), scenario).await,
    }
}

/// Whether `protocol` can run `scenario`; [`Unsupported`] with the reason if not.
fn supported<P: Protocol>(protocol: &P, scenario: &Scenario) -> Result<(), Unsupported> {
    let features = protocol.features();
    let needed = match scenario {
        // A server without rooms holds plain echo connections instead.
        Scenario::Idle(_) => features.signaling.or(features.echo),
        Scenario::Echo(_) => features.echo,
        Scenario::Relay(_) => features.relay,
        Scenario::Churn(_) => features.signaling,
        Scenario::Fanout(_) => features.broadcast,
    };
    needed.map_err(Unsupported)
}

async fn run_with<P: Protocol>(protocol: P, scenario: &Scenario) -> Result<Report> {
    supported(&protocol, scenario)?;
    let ctx = Arc::new(Ctx::new(scenario.common().clone(), scenario.open_loop()));
    let outcome = match scenario {
        Scenario::Idle(args) => idle::run(&protocol, args, &ctx).await?,
        Scenario::Echo(args) => echo::run(&protocol, args, &ctx).await?,
        Scenario::Relay(args) => relay::run(&protocol, args, &ctx).await?,
        Scenario::Fanout(args) => fanout::run(&protocol, args, &ctx).await?,
        Scenario::Churn(args) => churn::run(&protocol, args, &ctx).await?,
    };
    let outcome = outcome.server_cpu(&ctx);
    Ok(Report::new(outcome, ctx.check.summary(), &ctx.common))
}

/// What every task of a run shares.
pub struct Ctx {
    pub common: Common,
    pub clock: Clock,
    pub check: Check,
    /// The scenario's main latency (delivery, round trip, cycle, connect+join).
    pub latencies: Latencies,
    /// Open loop only: latency from the actual send instead of the timetable.
    pub service: Latencies,
    /// Open loop only: the pacer's lateness, actual send minus due.
    pub lateness: Latencies,
    /// Whether the scenario sends on a timetable.
    pub open_loop: bool,
    /// Completed operations: deliveries, round trips, cycles, connections.
    pub done: Arc<Counter>,
    /// The server's CPU time at the start and end of the measured phase.
    cpu: std::sync::Mutex<(Option<CpuTimes>, Option<CpuTimes>)>,
}

/// A process's CPU time so far, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    /// From /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
    pub fn of(pid: u32) -> Option<CpuTimes> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; fields after it are plain.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        // `rest` starts at field 3, so field n is at index n - 3.
        Some(CpuTimes { user: ticks(11)? / 100.0, system: ticks(12)? / 100.0 })
    }
}

impl Ctx {
    fn new(common: Common, open_loop: bool) -> Ctx {
        Ctx {
            common,
            clock: Clock::new(),
            check: Check::default(),
            latencies: Latencies::default(),
            service: Latencies::default(),
            lateness: Latencies::default(),
            open_loop,
            done: Arc::new(Counter::default()),
            cpu: std::sync::Mutex::new((None, None)),
        }
    }

    /// Notes the server's CPU time as the measured phase starts.
    pub fn cpu_mark_start(&self) {
        if let Some(pid) = self.common.server_pid {
            self.cpu.lock().unwrap_or_else(|e| e.into_inner()).0 = CpuTimes::of(pid);
        }
    }

    /// Notes the server's CPU time as the measured phase ends.
    pub fn cpu_mark_end(&self) {
        if let Some(pid) = self.common.server_pid {
            self.cpu.lock().unwrap_or_else(|e| e.into_inner()).1 = CpuTimes::of(pid);
        }
    }

    /// The server's CPU time over the measured phase: (user, system) seconds.
    fn cpu_used(&self) -> Option<(f64, f64)> {
        match *self.cpu.lock().unwrap_or_else(|e| e.into_inner()) {
            (Some(start), Some(end)) => Some((end.user - start.user, end.system - start.system)),
            _ => None,
        }
    }
}

/// What a scenario measured.
pub struct Outcome {
    pub scenario: &'static str,
    /// The scenario's knobs, for the report.
    pub params: Map<String, Value>,
    /// Operations per second over `measured`.
    pub throughput: f64,
    /// What an operation is, per second: `msgs/s`, `deliveries/s`, ...
    pub unit: &'static str,
    pub operations: u64,
    pub measured: Duration,
    /// What `latency` measures.
    pub latency_label: &'static str,
    pub latency: Option<Percentiles>,
    pub service_latency: Option<Percentiles>,
    /// Open loop only: how the sends were paced, and how late they went out.
    pub pacer: Option<PacerReport>,
    pub series: Vec<Sample>,
    /// Scenario-specific results (server memory, ...).
    pub extra: Map<String, Value>,
    /// Things worth telling the reader (warnings).
    pub notes: Vec<String>,
}

impl Outcome {
    /// An outcome with the run's latencies and the given throughput.
    fn new(scenario: &'static str, ctx: &Ctx, operations: u64, measured: Duration, unit: &'static str) -> Outcome {
        Outcome {
            scenario,
            params: Map::new(),
            throughput: operations as f64 / measured.as_secs_f64().max(1e-9),
            unit,
            operations,
            measured,
            latency_label: "",
            latency: Percentiles::of(&ctx.latencies.merged()),
            service_latency: Percentiles::of(&ctx.service.merged()),
            pacer: ctx.open_loop.then(|| PacerReport::of(ctx)),
            series: Vec::new(),
            extra: Map::new(),
            notes: Vec::new(),
        }
    }

    /// Adds the server's CPU time per operation, if it was measured.
    fn server_cpu(mut self, ctx: &Ctx) -> Outcome {
        if let Some((user, system)) = ctx.cpu_used() {
            let round = |v: f64| (v * 1000.0).round() / 1000.0;
            self.extra.insert("server_cpu_user_s".into(), round(user).into());
            self.extra.insert("server_cpu_system_s".into(), round(system).into());
            if self.operations > 0 {
                let per_op = (user + system) * 1e6 / self.operations as f64;
                self.extra.insert("server_cpu_us_per_op".into(), ((per_op * 100.0).round() / 100.0).into());
            }
        }
        self
    }

    fn param(mut self, name: &str, value: impl Into<Value>) -> Outcome {
        self.params.insert(name.into(), value.into());
        self
    }
}

/// How an open-loop run was paced, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PacerReport {
    /// `thread` or `tokio` (`--pacer`).
    pub kind: &'static str,
    /// The thread pacer's spin before each due time, in microseconds.
    pub spin_us: Option<u64>,
    /// Actual send minus due time, in microseconds, over every message sent.
    pub lateness_us: Option<Percentiles>,
}

impl PacerReport {
    fn of(ctx: &Ctx) -> PacerReport {
        let thread = ctx.common.pacer == PacerKind::Thread;
        PacerReport {
            kind: if thread { "thread" } else { "tokio" },
            spin_us: thread.then_some(ctx.common.pacer_spin_us),
            lateness_us: Percentiles::of(&ctx.lateness.merged()),
        }
    }
}

/// A progress bar on stderr while ramping up; hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Runs `make(i)` for `i` in `0..count`, at most `concurrency` at once; the results
/// in order, or the first error.
pub async fn ramp<T, F, Fut>(count: u64, concurrency: u64, make: F) -> Result<Vec<T>>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    stream::iter(0..count).map(make).buffered(concurrency as usize).try_collect().await
}

/// Runs a setup step with [`SETUP_TIMEOUT`].
pub async fn setup<T>(what: impl FnOnce() -> String, step: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(SETUP_TIMEOUT, step).await {
        Ok(result) => result.with_context(what),
        Err(_) => Err(anyhow!("timed out after {SETUP_TIMEOUT:?}")).with_context(what),
    }
}

/// Closes every connection: a clean close, then reading until the server's close.
pub async fn close_all<T: Tx, R: Rx>(connections: Vec<(T, R)>) {
    stream::iter(connections)
        .for_each_concurrent(CLOSE_CONCURRENCY, |(mut tx, mut rx)| async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = tx.close().await;
                while let Ok(Some(_)) = rx.next().await {}
            })
            .await;
        })
        .await;
}

/// Waits until `done` reaches `expected` or `timeout` passes; returns whether it did.
pub async fn drain(done: &Counter, expected: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while done.get() < expected {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// The lateness the pacer aims to stay within.
pub const PACER_AIM_US: u64 = 50;

/// Says so when the pacer's p99 lateness was above [`PACER_AIM_US`]: the load
/// generator, not the server, was behind its timetable.
pub fn pacer_note(outcome: &Outcome) -> Option<String> {
    let pacer = outcome.pacer.as_ref()?;
    let p99 = pacer.lateness_us.as_ref()?.p99;
    (p99 > PACER_AIM_US).then(|| {
        format!(
            "note: the {} pacer's p99 lateness was {} (it aims for {PACER_AIM_US} µs): the load generator fell \
             behind its timetable, and latency from the due time includes that",
            pacer.kind,
            crate::report::micros(p99)
        )
    })
}

/// Warns when the server rate-limited the run.
pub fn rate_limit_note(ctx: &Ctx) -> Option<String> {
    let limited = ctx.check.summary().rate_limited;
    (limited > 0).then(|| {
        format!(
            "warning: the server sent {limited} `rate-limited` errors: benchmarks need a server started with \
             --rate-limit-messages 0 --rate-limit-bytes 0"
        )
    })
}

/// Where a sender's messages go.
#[derive(Debug, Clone)]
pub enum Dest {
    /// Relayed to one peer.
    Peer(PeerId),
    /// Broadcast to a room.
    Room(String),
}

/// How a sender paces itself.
#[derive(Clone)]
pub enum Pace {
    /// Keep at most the semaphore's permits in flight; receivers give permits back.
    Closed(Arc<Semaphore>),
    /// Message `k` is due at `start_us + offset_us + k * interval_us`.
    Open { start_us: u64, offset_us: f64, interval_us: f64 },
}

/// One sender's plan.
pub struct SendPlan {
    pub dest: Dest,
    pub mix: SizeMix,
    pub pace: Pace,
    /// When to stop sending (set by [`SendPlan::start`]).
    pub end: Instant,
    /// Messages sent so far (the stream's sequence numbers are `0..sent`).
    pub sent: Arc<AtomicU64>,
    pub rng: SmallRng,
}

impl SendPlan {
    /// Sets when sending starts (open loop: message 0's due time, in clock
    /// microseconds) and ends.
    pub fn start(&mut self, start_us: u64, end: Instant) {
        self.end = end;
        if let Pace::Open { start_us: start, .. } = &mut self.pace {
            *start = start_us;
        }
    }
}

/// The size class and frame size of message `seq` under `mix`.
pub fn body_for(mix: SizeMix, seq: u64, rng: &mut SmallRng) -> (BodyKind, usize) {
    let sdp = |rng: &mut SmallRng| {
        let kind = if seq % 2 == 0 { BodyKind::Sdp } else { BodyKind::Signal };
        (kind, rng.random_range(1024..=4096))
    };
    match mix {
        SizeMix::Sdp => sdp(rng),
        SizeMix::Candidate => (BodyKind::Candidate, 200),
        SizeMix::Mixed if seq % 6 == 0 => sdp(rng),
        SizeMix::Mixed => (BodyKind::Candidate, 200),
    }
}

pub(crate) async fn send_one<T: Tx>(
    tx: &mut T,
    plan: &mut SendPlan,
    seq: u64,
    due_us: u64,
    sent_us: u64,
) -> Result<()> {
    let (kind, size) = body_for(plan.mix, seq, &mut plan.rng);
    let message = Outgoing { kind, stamp: Stamp { seq, due_us, sent_us }, size };
    match &plan.dest {
        Dest::Peer(peer) => tx.relay(peer, &message).await?,
        Dest::Room(room) => tx.broadcast(room, &message).await?,
    }
    plan.sent.store(seq + 1, Ordering::Relaxed);
    Ok(())
}

/// Runs every sender's plan to its end and returns the sending halves, in the
/// order given: open loop with `--pacer thread` on the [`pacer`] thread, else
/// one task per sender ([`send_loop`]).
pub async fn send_all<T: Tx>(senders: Vec<(T, SendPlan, String)>, ctx: &Arc<Ctx>) -> Result<Vec<T>> {
    let open = senders.iter().any(|(_, plan, _)| matches!(plan.pace, Pace::Open { .. }));
    if open && ctx.common.pacer == PacerKind::Thread {
        let paced = senders.into_iter().map(|(tx, plan, label)| pacer::Paced { tx, plan, label }).collect();
        let spin = Duration::from_micros(ctx.common.pacer_spin_us);
        let (txs, _) = pacer::run(paced, ctx.clone(), spin).await?;
        return Ok(txs);
    }
    let tasks: Vec<_> =
        senders.into_iter().map(|(tx, plan, label)| tokio::spawn(send_loop(tx, plan, ctx.clone(), label))).collect();
    let mut txs = Vec::with_capacity(tasks.len());
    for task in tasks {
        txs.push(task.await?);
    }
    Ok(txs)
}

/// Sends until `plan.end`; returns the sending half for closing. A failed send
/// is recorded as a connection failure.
pub async fn send_loop<T: Tx>(mut tx: T, mut plan: SendPlan, ctx: Arc<Ctx>, label: String) -> T {
    let result = match plan.pace.clone() {
        Pace::Closed(window) => send_closed(&mut tx, &mut plan, &ctx, &window).await,
        Pace::Open { start_us, offset_us, interval_us } => {
            send_open(&mut tx, &mut plan, &ctx, start_us, offset_us, interval_us).await
        }
    };
    if let Err(err) = result {
        ctx.check.violation(Violation::ConnectionFailure, || format!("{label}: {err:#}"));
    }
    tx
}

async fn send_closed<T: Tx>(tx: &mut T, plan: &mut SendPlan, ctx: &Ctx, window: &Semaphore) -> Result<()> {
    let end = tokio::time::Instant::from_std(plan.end);
    let mut seq = 0;
    loop {
        let permit = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(end) => return Ok(()),
            permit = window.acquire() => permit?,
        };
        permit.forget();
        // Everything the window allows right now goes out in one flush.
        loop {
            let now = ctx.clock.now_us();
            send_one(tx, plan, seq, now, now).await?;
            seq += 1;
            match window.try_acquire() {
                Ok(permit) if Instant::now() < plan.end => permit.forget(),
                _ => break,
            }
        }
        tx.flush().await?;
    }
}

async fn send_open<T: Tx>(
    tx: &mut T,
    plan: &mut SendPlan,
    ctx: &Ctx,
    start_us: u64,
    offset_us: f64,
    interval_us: f64,
) -> Result<()> {
    let end_us = plan.end.saturating_duration_since(ctx.clock.instant_at(0)).as_micros() as u64;
    let due = |k: u64| start_us + (offset_us + k as f64 * interval_us) as u64;
    let mut seq = 0;
    loop {
        let due_us = due(seq);
        if due_us >= end_us {
            return Ok(());
        }
        tokio::time::sleep_until(ctx.clock.instant_at(due_us).into()).await;
        // Everything due by now goes out in one flush, each stamped with the time
        // it was due: a sender that fell behind is charged for it.
        loop {
            let now = ctx.clock.now_us();
            ctx.lateness.record_raw(now.saturating_sub(due(seq)));
            send_one(tx, plan, seq, due(seq), now).await?;
            seq += 1;
            if due(seq) > now || due(seq) >= end_us {
                break;
            }
        }
        tx.flush().await?;
    }
}

/// What a receiver expects.
pub struct Expect {
    /// The receiving peer.
    pub me: PeerId,
    /// The one peer whose messages it checks; `None` for a peer that should get none.
    pub from: Option<PeerId>,
    /// Broadcasts (fan-out) or relays.
    pub broadcast: bool,
    /// Names the stream in violation messages.
    pub label: String,
}

/// Receives until `stop`, checking every message against `expect` and calling
/// `on_new(seq)` for each sequence number seen for the first time. Returns the
/// receiving half (for closing) and the stream's tracker (for counting losses).
pub async fn receive_loop<R: Rx>(
    mut rx: R,
    expect: Expect,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    mut on_new: impl FnMut(u64) + Send,
) -> (R, SeqTracker) {
    let mut tracker = SeqTracker::default();
    let check = &ctx.check;
    let label = &expect.label;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = rx.next() => event,
        };
        let (from, stamp, broadcast) = match event {
            Ok(Some(Event::Relay { from, stamp })) => (from, stamp, false),
            Ok(Some(Event::Broadcast { from, stamp })) => (from, stamp, true),
            Ok(Some(Event::PeerJoined { .. } | Event::PeerLeft { .. })) => continue,
            Ok(Some(Event::Error { code, message })) => {
                check.server_error(&code, &message, || format!("{label}: at {}", expect.me));
                continue;
            }
            Ok(Some(other)) => {
                check.violation(Violation::Unexpected, || format!("{label}: {} got {other:?}", expect.me));
                continue;
            }
            Ok(None) => {
                check.violation(Violation::ConnectionFailure, || format!("{label}: the server closed the connection"));
                break;
            }
            Err(err) => {
                check.violation(Violation::ConnectionFailure, || format!("{label}: {err:#}"));
                break;
            }
        };
        let now = ctx.clock.now_us();
        check.checked(1);
        let Some(stamp) = stamp.filter(|_| broadcast == expect.broadcast) else {
            check.violation(Violation::Unexpected, || {
                format!("{label}: unexpected {} from {from} without this run's stamp", kind(broadcast))
            });
            continue;
        };
        match &expect.from {
            Some(expected) if *expected == from => {}
            expected => {
                check.violation(Violation::WrongSender, || {
                    format!("{label}: {} seq {} has from={from:?}, expected {expected:?}", kind(broadcast), stamp.seq)
                });
                continue;
            }
        }
        ctx.latencies.record(now.saturating_sub(stamp.due_us));
        if ctx.open_loop {
            ctx.service.record(now.saturating_sub(stamp.sent_us));
        }
        let seen = tracker.observe(stamp.seq);
        if check.sequence(seen, stamp.seq, || label.clone()) {
            ctx.done.add(1);
            on_new(stamp.seq);
        }
    }
    (rx, tracker)
}

fn kind(broadcast: bool) -> &'static str {
    if broadcast {
        "broadcast"
    } else {
        "relay"
    }
}

/// Counts, for each receiver's tracker, what its sender sent but it never got.
pub fn count_losses(ctx: &Ctx, streams: &[(&SeqTracker, u64, &str)]) {
    for (tracker, sent, label) in streams {
        let lost = sent.saturating_sub(tracker.unique());
        ctx.check.violations_n(Violation::Lost, lost, || {
            format!("{label}: {lost} of {sent} messages never arrived (received {})", tracker.unique())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mixed_sends_one_sdp_per_five_candidates() {
        let mut rng = SmallRng::seed_from_u64(1);
        let kinds: Vec<_> = (0..12).map(|seq| body_for(SizeMix::Mixed, seq, &mut rng)).collect();
        let sdp = kinds.iter().filter(|(kind, _)| *kind != BodyKind::Candidate).count();
        assert_eq!(sdp, 2);
        for (kind, size) in kinds {
            match kind {
                BodyKind::Candidate => assert_eq!(size, 200),
                _ => assert!((1024..=4096).contains(&size)),
            }
        }
    }
}
