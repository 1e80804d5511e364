//! Measurements and the correctness checker.
//!
//! - [`Clock`]: one monotonic time base for the whole process. Timestamps carried in
//!   message bodies are microseconds since its start, so a receiver in the same
//!   process computes latency as `now - stamp` with no clock skew.
//! - [`Latencies`]: an HDR histogram (microseconds, 3 significant digits), sharded by
//!   worker thread so thousands of tasks can record without contending on one lock.
//! - [`Counter`] and [`Sampler`]: a completed-operations counter and the time series of
//!   its rate, for the throughput-over-time chart.
//! - [`SeqTracker`] and [`Check`]: every relayed or broadcast message carries its
//!   sender's sequence number; each receiver keeps one tracker per sender and reports
//!   duplicates, reordering, wrong senders and unexpected server errors to the shared
//!   [`Check`]. Losses are counted at the end, once every sender's count is known.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The process-wide time base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts the clock now.
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The instant that is `us` microseconds after the start.
    pub fn instant_at(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }
}

/// Highest latency a histogram records; larger values are clamped to it.
const MAX_LATENCY_US: u64 = 60 * 1_000_000;
/// Shards of [`Latencies`]: more than the worker threads of any sensible run.
const SHARDS: usize = 16;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

thread_local! {
    /// This thread's shard of every [`Latencies`], assigned on first use.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_index() -> usize {
    SHARD.with(|shard| match shard.get() {
        Some(index) => index,
        None => {
            let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(Some(index));
            index
        }
    })
}

/// A latency histogram that many tasks record into at once.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect() }
    }
}

impl Latencies {
    /// Records one latency in microseconds (0 counts as 1: the histogram's floor).
    pub fn record(&self, us: u64) {
        let mut shard = self.shards[shard_index()].lock().unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(us.max(1));
    }

    /// Records one value in microseconds as it is, 0 included (for lateness,
    /// where 0 is the common case).
    pub fn record_raw(&self, us: u64) {
        let mut shard = self.shards[shard_index()].lock().unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(us);
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            total.add(&*shard).expect("histograms share bounds");
        }
        total
    }
}

/// Latency percentiles in microseconds, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `histogram`, or `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        Some(Percentiles {
            count: histogram.len(),
            min: histogram.min(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
        })
    }
}

/// Completed operations (deliveries, round trips, cycles, connections).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One point of the throughput time series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the measured phase began (end of the interval).
    pub t_s: f64,
    /// Operations per second during the interval.
    pub per_s: f64,
}

/// Samples a [`Counter`] at a fixed interval until stopped.
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `counter` every `interval`.
    pub fn start(counter: Arc<Counter>, interval: Duration) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            let mut last = (start, counter.get());
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                let finished = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = &mut stopped => true,
                };
                let now = Instant::now();
                let count = counter.get();
                let span = now.duration_since(last.0).as_secs_f64();
                // A final stub of less than a tenth of an interval says nothing.
                if span >= interval.as_secs_f64() / 10.0 {
                    samples.push(Sample {
                        t_s: now.duration_since(start).as_secs_f64(),
                        per_s: (count - last.1) as f64 / span,
                    });
                }
                last = (now, count);
                if finished {
                    return samples;
                }
            }
        });
        Sampler { stop, task }
    }

    /// The interval for a run of `duration`: about 40 points, 100 ms to 1 s apart.
    pub fn interval_for(duration: Duration) -> Duration {
        (duration / 40).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Stops sampling and returns the series.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// What one received sequence number means for its sender's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected number: the ones between are missing (so far).
    Ahead,
    /// A number that was missing, arriving late.
    Late,
    /// Already received.
    Duplicate,
}

/// The receive state of one sender's stream at one receiver.
#[derive(Debug, Default)]
pub struct SeqTracker {
    next: u64,
    missing: BTreeSet<u64>,
}

/// Largest gap a tracker remembers one by one; a larger jump is garbage, not loss.
const MAX_GAP: u64 = 1 << 20;

impl SeqTracker {
    /// Classifies `seq` and updates the state.
    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            Seen::InOrder
        } else if seq > self.next {
            if seq - self.next <= MAX_GAP {
                self.missing.extend(self.next..seq);
            }
            self.next = seq + 1;
            Seen::Ahead
        } else if self.missing.remove(&seq) {
            Seen::Late
        } else {
            Seen::Duplicate
        }
    }

    /// How many distinct numbers arrived.
    pub fn unique(&self) -> u64 {
        self.next - self.missing.len() as u64
    }
}

/// How many violation descriptions are kept for the failure message.
const KEPT_VIOLATIONS: usize = 20;

/// The correctness tally of a run, shared by every task.
#[derive(Debug, Default)]
pub struct Check {
    checked: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    wrong_sender: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    unexpected: AtomicU64,
    connection_failures: AtomicU64,
    violations: Mutex<Vec<String>>,
}

/// A kind of violation.
#[derive(Debug, Clone, Copy)]
pub enum Violation {
    Lost,
    Duplicated,
    OutOfOrder,
    WrongSender,
    /// An `error` message from the server.
    Error,
    /// A message the scenario did not expect.
    Unexpected,
    /// A connection failed or was closed by the server mid-run.
    ConnectionFailure,
}

impl Check {
    /// Counts `n` messages that were checked.
    pub fn checked(&self, n: u64) {
        self.checked.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one violation of `kind`, described by `detail` (called only for the
    /// first few).
    pub fn violation(&self, kind: Violation, detail: impl FnOnce() -> String) {
        self.violations_n(kind, 1, detail);
    }

    /// Records `n` violations of `kind` at once.
    pub fn violations_n(&self, kind: Violation, n: u64, detail: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        let counter = match kind {
            Violation::Lost => &self.lost,
            Violation::Duplicated => &self.duplicated,
            Violation::OutOfOrder => &self.out_of_order,
            Violation::WrongSender => &self.wrong_sender,
            Violation::Error => &self.errors,
            Violation::Unexpected => &self.unexpected,
            Violation::ConnectionFailure => &self.connection_failures,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        let mut kept = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_VIOLATIONS {
            kept.push(detail());
        }
    }

    /// Records an `error` message from the server.
    pub fn server_error(&self, code: &str, message: &str, context: impl FnOnce() -> String) {
        if code == "rate-limited" {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        self.violation(Violation::Error, || format!("{}: server error `{code}`: {message}", context()));
    }

    /// Records a stream's sequence number as [`SeqTracker::observe`] classified it;
    /// returns whether it was new (in order or late).
    pub fn sequence(&self, seen: Seen, seq: u64, context: impl FnOnce() -> String) -> bool {
        match seen {
            Seen::InOrder => true,
            Seen::Late => {
                self.violation(Violation::OutOfOrder, || format!("{}: seq {seq} arrived late", context()));
                true
            }
            Seen::Ahead => {
                self.violation(Violation::OutOfOrder, || format!("{}: seq {seq} arrived ahead of its turn", context()));
                true
            }
            Seen::Duplicate => {
                self.violation(Violation::Duplicated, || format!("{}: seq {seq} arrived again", context()));
                false
            }
        }
    }

    /// The tally so far.
    pub fn summary(&self) -> CheckSummary {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CheckSummary {
            messages: get(&self.checked),
            lost: get(&self.lost),
            duplicated: get(&self.duplicated),
            out_of_order: get(&self.out_of_order),
            wrong_sender: get(&self.wrong_sender),
            errors: get(&self.errors),
            rate_limited: get(&self.rate_limited),
            unexpected: get(&self.unexpected),
            connection_failures: get(&self.connection_failures),
            violations: self.violations.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// The correctness result of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// Messages checked (deliveries, replies).
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Messages whose `from` was not the peer that sent them.
    pub wrong_sender: u64,
    /// `error` messages from the server (including `rate-limited`).
    pub errors: u64,
    /// Of `errors`, how many were `rate-limited`.
    pub rate_limited: u64,
    /// Messages the scenario did not expect.
    pub unexpected: u64,
    /// Connections that failed or were closed by the server mid-run.
    pub connection_failures: u64,
    /// The first few violations, described.
    pub violations: Vec<String>,
}

impl CheckSummary {
    /// No violation of any kind.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.wrong_sender == 0
            && self.errors == 0
            && self.unexpected == 0
            && self.connection_failures == 0
    }

    /// `checked: N messages, 0 lost, 0 duplicated, 0 out of order`, plus any other
    /// kind of violation that occurred.
    pub fn line(&self) -> String {
        let mut line = format!(
            "checked: {} messages, {} lost, {} duplicated, {} out of order",
            self.messages, self.lost, self.duplicated, self.out_of_order
        );
        for (n, what) in [
            (self.wrong_sender, "from the wrong sender"),
            (self.errors, "server errors"),
            (self.unexpected, "unexpected messages"),
            (self.connection_failures, "connection failures"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_classifies_order_gaps_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::InOrder);
        assert_eq!(t.observe(1), Seen::InOrder);
        assert_eq!(t.observe(4), Seen::Ahead);
        assert_eq!(t.unique(), 3);
        assert_eq!(t.observe(2), Seen::Late);
        assert_eq!(t.observe(2), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.unique(), 4);
        assert_eq!(t.observe(5), Seen::InOrder);
    }

    #[test]
    fn check_counts_and_keeps_details() {
        let check = Check::default();
        check.checked(3);
        let mut t = SeqTracker::default();
        for seq in [0, 0, 2, 1] {
            let seen = t.observe(seq);
            check.sequence(seen, seq, || "a->b".into());
        }
        check.server_error("rate-limited", "slow down", || "peer a".into());
        let summary = check.summary();
        assert_eq!((summary.duplicated, summary.out_of_order, summary.errors, summary.rate_limited), (1, 2, 1, 1));
        assert!(!summary.ok());
        assert_eq!(summary.violations.len(), 4);
        assert!(summary.line().starts_with("checked: 3 messages, 0 lost, 1 duplicated, 2 out of order"));
    }

    #[test]
    fn latencies_merge_across_threads() {
        let latencies = Arc::new(Latencies::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let latencies = latencies.clone();
                std::thread::spawn(move || (1..=1000).for_each(|us| latencies.record(us)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let p = Percentiles::of(&latencies.merged()).unwrap();
        assert_eq!(p.count, 4000);
        assert_eq!(p.max, 1000);
        assert!((499..=501).contains(&p.p50));
    }
}
