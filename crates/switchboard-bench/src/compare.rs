//! `compare`: the side-by-side report. Reads the `--json` results of every
//! scenario against every target (SCENARIO.TARGET.json in one directory, as
//! bench/compare.sh writes them) and writes docs/benchmarks.md (a table per
//! scenario with ratios, the issues' targets met or not, the machine, the
//! pinning and the command) and an SVG chart of throughput and latency per
//! target. The fixed-rate latency runs (relay-rate-RATE.TARGET.REP.json, several
//! per rate) become one table of best and median percentiles. The same-protocol
//! table sets peerjs-server beside Switchboard's PeerJS dialect (both driven by
//! the PeerJS adapter) and Switchboard's native `/ws`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::cli::CompareArgs;
use crate::report::{micros, thousands};

/// The scenarios, in report order: file key, heading.
const SCENARIOS: [(&str, &str); 6] = [
    ("idle", "idle: connect, join and hold"),
    ("echo", "echo: round trips"),
    ("relay", "relay, closed loop: the highest rate"),
    ("relay-open", "relay, open loop: latency at half the highest rate"),
    ("fanout", "fanout: room broadcast"),
    ("churn", "churn: connect, join, (leave,) close"),
];

/// The targets, in report order: file key, name in the report.
const TARGETS: [(&str, &str); 7] = [
    ("switchboard", "Switchboard"),
    ("switchboard-peerjs", "Switchboard, PeerJS dialect"),
    ("bare", "bare axum/tungstenite echo"),
    ("bare-relay", "bare axum/tungstenite relay"),
    ("seed", "seed Node.js (ws)"),
    ("matchbox", "matchbox_server"),
    ("peerjs", "peerjs-server"),
];

/// One scenario against one target.
enum Cell {
    /// The load generator's report.
    Ran(Value),
    /// The server cannot run this scenario.
    Na(String),
    /// The run failed before reporting (the server did not start, say).
    Failed(String),
    /// No result file.
    Missing,
}

impl Cell {
    fn report(&self) -> Option<&Value> {
        match self {
            Cell::Ran(report) => Some(report),
            _ => None,
        }
    }

    fn throughput(&self) -> Option<f64> {
        self.report().and_then(|r| r["throughput"]["value"].as_f64())
    }

    fn latency(&self, percentile: &str) -> Option<u64> {
        self.report().and_then(|r| r["latency_us"][percentile].as_u64())
    }

    /// The server's CPU time (user + system) per operation, in microseconds.
    fn cpu_per_op(&self) -> Option<f64> {
        self.report().and_then(|r| r["results"]["server_cpu_us_per_op"].as_f64())
    }

    fn rss_per_connection(&self) -> Option<f64> {
        self.report().and_then(|r| r["results"]["server_rss_per_connection_kib"].as_f64())
    }
}

/// The fixed-rate runs: offered rate → target key → one cell per repetition.
type RateRuns<C> = BTreeMap<u64, BTreeMap<&'static str, Vec<C>>>;

/// All results: scenario key → target key → cell; and the fixed-rate runs.
struct Results(BTreeMap<&'static str, BTreeMap<&'static str, Cell>>, RateRuns<Cell>);

/// Reads one result file.
fn load_cell(path: &Path) -> Cell {
    match std::fs::read_to_string(path) {
        Err(_) => Cell::Missing,
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Err(err) => Cell::Failed(format!("{} is not JSON: {err}", path.display())),
            Ok(value) => {
                if let Some(reason) = value["unsupported"].as_str() {
                    Cell::Na(reason.to_owned())
                } else if let Some(reason) = value["failed"].as_str() {
                    Cell::Failed(reason.to_owned())
                } else {
                    Cell::Ran(value)
                }
            }
        },
    }
}

/// The fixed-rate runs in `dir`: relay-rate-RATE.TARGET.REP.json.
fn load_rates(dir: &Path) -> RateRuns<Cell> {
    let mut runs: RateRuns<(u64, Cell)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("relay-rate-").and_then(|n| n.strip_suffix(".json")) else { continue };
        let mut parts = rest.splitn(2, '.');
        let (Some(rate), Some(rest)) = (parts.next().and_then(|r| r.parse::<u64>().ok()), parts.next()) else {
            continue;
        };
        let Some((target, rep)) = rest.rsplit_once('.').and_then(|(t, r)| Some((t, r.parse::<u64>().ok()?))) else {
            continue;
        };
        let Some((key, _)) = TARGETS.iter().find(|(t, _)| *t == target) else { continue };
        runs.entry(rate).or_default().entry(key).or_default().push((rep, load_cell(&entry.path())));
    }
    runs.into_iter()
        .map(|(rate, targets)| {
            let targets = targets
                .into_iter()
                .map(|(t, mut cells)| {
                    cells.sort_by_key(|(rep, _)| *rep);
                    (t, cells.into_iter().map(|(_, c)| c).collect())
                })
                .collect();
            (rate, targets)
        })
        .collect()
}

impl Results {
    fn load(dir: &Path) -> Result<Results> {
        let mut all = BTreeMap::new();
        for (scenario, _) in SCENARIOS {
            let mut row = BTreeMap::new();
            for (target, _) in TARGETS {
                row.insert(target, load_cell(&dir.join(format!("{scenario}.{target}.json"))));
            }
            all.insert(scenario, row);
        }
        Ok(Results(all, load_rates(dir)))
    }

    fn get(&self, scenario: &str, target: &str) -> &Cell {
        static MISSING: Cell = Cell::Missing;
        self.0.get(scenario).and_then(|row| row.get(target)).unwrap_or(&MISSING)
    }
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let results = Results::load(&args.results)?;
    let notes = match &args.notes {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let svg_name = args.svg.file_name().and_then(|n| n.to_str()).unwrap_or("benchmarks.svg").to_owned();
    let markdown = render(&results, args, &svg_name, notes.as_deref());
    std::fs::write(&args.out, markdown).with_context(|| format!("writing {}", args.out.display()))?;
    chart(&results, &args.svg).with_context(|| format!("writing {}", args.svg.display()))?;
    eprintln!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}

/// `a / b` as `4.21×`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn opt_micros(us: Option<u64>) -> String {
    us.map_or("–".into(), micros)
}

/// What the checks found, in a few words.
fn checks(report: &Value) -> String {
    let check = &report["check"];
    if report["ok"] == true {
        format!("ok ({} checked)", thousands(check["messages"].as_f64().unwrap_or(0.0)))
    } else {
        let mut problems = Vec::new();
        for field in
            ["lost", "duplicated", "out_of_order", "wrong_sender", "errors", "unexpected", "connection_failures"]
        {
            let n = check[field].as_u64().unwrap_or(0);
            if n > 0 {
                problems.push(format!("{n} {}", field.replace('_', " ")));
            }
        }
        format!("**FAILED**: {}", problems.join(", "))
    }
}

/// A param of a report, as text.
fn param(report: &Value, name: &str) -> String {
    match &report["params"][name] {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), thousands),
        other => other.to_string(),
    }
}

fn machine() -> Vec<(String, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let ram = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".into(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or("unknown".into(), |n| n.to_string());
    vec![
        ("CPU".into(), cpu),
        ("cores (nproc)".into(), cores),
        ("RAM".into(), ram),
        ("kernel".into(), read("/proc/sys/kernel/osrelease").trim().to_owned()),
    ]
}

/// One verdict on an issue #4 target.
struct Verdict {
    target: String,
    measured: String,
    met: Option<bool>,
}

fn verdicts(r: &Results) -> Vec<Verdict> {
    let sb = |scenario| r.get(scenario, "switchboard");
    let tp = |scenario, target| r.get(scenario, target).throughput();
    let at_least = |value: Option<f64>, bound: f64| value.map(|v| v >= bound);
    let times = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let fmt_times = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}×"));
    // The same comparison by server CPU per operation: how many times more CPU the
    // peer spends per operation than Switchboard.
    let cpu_times = |scenario: &str, peer: &str| {
        let (sb, other) = (r.get(scenario, "switchboard").cpu_per_op(), r.get(scenario, peer).cpu_per_op());
        times(other, sb)
            .map_or(String::new(), |v| format!("; the peer uses {v:.2}× Switchboard's server CPU per operation"))
    };
    let mut out = Vec::new();

    let rss = sb("idle").rss_per_connection();
    let connections = sb("idle").report().map_or("–".into(), |rep| param(rep, "connections"));
    out.push(Verdict {
        target: "idle memory ≤ 2 KiB server RSS per connection at 15,000 joined connections".into(),
        measured: rss.map_or("–".into(), |v| format!("{v:.2} KiB per connection at {connections} connections")),
        met: rss.map(|v| v <= 2.0),
    });

    let vs_seed = times(tp("echo", "switchboard"), tp("echo", "seed"));
    out.push(Verdict {
        target: "echo round trips/s ≥ 4× the seed Node server".into(),
        measured: format!("{}{}", fmt_times(vs_seed), cpu_times("echo", "seed")),
        met: at_least(vs_seed, 4.0),
    });
    let vs_bare = times(tp("echo", "switchboard"), tp("echo", "bare"));
    out.push(Verdict {
        target: "echo round trips/s ≥ 90% of the bare-library echo".into(),
        measured: format!(
            "{}{}",
            vs_bare.map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
            cpu_times("echo", "bare")
        ),
        met: at_least(vs_bare, 0.9),
    });

    for (peer, bound, name) in [
        ("seed", 4.0, "the seed Node signaling server"),
        ("matchbox", 2.0, "matchbox_server"),
        ("peerjs", 2.0, "peerjs-server"),
    ] {
        let v = times(tp("relay", "switchboard"), tp("relay", peer));
        out.push(Verdict {
            target: format!("relay msgs/s ≥ {bound:.0}× {name}"),
            measured: format!("{}{}", fmt_times(v), cpu_times("relay", peer)),
            met: at_least(v, bound),
        });
    }

    let open = sb("relay-open");
    let p99 = open.latency("p99");
    let rate = open.report().map_or("–".into(), |rep| param(rep, "rate"));
    out.push(Verdict {
        target: "relay p99 ≤ 1 ms at 50% of Switchboard's highest rate".into(),
        measured: p99.map_or("–".into(), |p| format!("p99 {} at {rate} msgs/s offered", micros(p))),
        met: p99.map(|p| p <= 1000),
    });

    let fanout = sb("fanout");
    let room_size = fanout.report().map_or("–".into(), |rep| param(rep, "room_size"));
    out.push(Verdict {
        target: "fan-out ≥ 1,000,000 deliveries/s in rooms of 100".into(),
        measured: fanout
            .throughput()
            .map_or("–".into(), |v| format!("{} deliveries/s in rooms of {room_size}", thousands(v))),
        met: at_least(fanout.throughput(), 1_000_000.0).filter(|_| room_size == "100").or(Some(false)),
    });

    let join = sb("idle").throughput();
    out.push(Verdict {
        target: "connect+join ≥ 20,000 per second".into(),
        measured: join.map_or("–".into(), |v| format!("{}/s (idle ramp)", thousands(v))),
        met: at_least(join, 20_000.0),
    });
    out
}

/// The lowest and the median (the lower middle one) of `values`.
fn best_median(mut values: Vec<u64>) -> Option<(u64, u64)> {
    values.sort_unstable();
    Some((*values.first()?, values[(values.len() - 1) / 2]))
}

/// A fixed-rate percentile of one target over its runs: (best, median, runs).
fn rate_percentile(r: &Results, rate: u64, target: &str, percentile: &str) -> Option<(u64, u64, usize)> {
    let cells = r.1.get(&rate)?.get(target)?;
    let values: Vec<u64> = cells.iter().filter_map(|c| c.latency(percentile)).collect();
    let n = values.len();
    best_median(values).map(|(best, median)| (best, median, n))
}

/// The targets of issue #16, from the same results.
fn verdicts_16(r: &Results, pinned: bool) -> Vec<Verdict> {
    let tp = |scenario, target| r.get(scenario, target).throughput();
    let cpu = |scenario, target| r.get(scenario, target).cpu_per_op();
    let share = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let core = if pinned { "one server core" } else { "**not pinned**: the server had every core" };
    let mut out = Vec::new();

    let of_bare = share(tp("relay", "switchboard"), tp("relay", "bare-relay"));
    let cpus = match (cpu("relay", "switchboard"), cpu("relay", "bare-relay")) {
        (Some(sb), Some(bare)) => format!("; server CPU per message {sb:.2} µs against {bare:.2} µs"),
        _ => String::new(),
    };
    out.push(Verdict {
        target: "relay msgs/s ≥ 80% of the bare relay's, per server core".into(),
        measured: format!("{}{cpus} ({core})", of_bare.map_or("–".into(), |v| format!("{:.0}%", v * 100.0))),
        met: of_bare.map(|v| v >= 0.8),
    });
    let vs_matchbox = share(tp("relay", "switchboard"), tp("relay", "matchbox"));
    out.push(Verdict {
        target: "relay msgs/s ≥ 2.5× matchbox_server".into(),
        measured: vs_matchbox.map_or("–".into(), |v| format!("{v:.2}× ({core})")),
        met: vs_matchbox.map(|v| v >= 2.5),
    });
    for (rate, bound) in [(20_000, 250), (50_000, 500), (100_000, 1000)] {
        let p99 = rate_percentile(r, rate, "switchboard", "p99");
        out.push(Verdict {
            target: format!("relay p99 from the due time ≤ {} at {} msgs/s", micros(bound), thousands(rate as f64)),
            measured: p99.map_or("–".into(), |(best, median, n)| {
                format!("best {}, median {} of {n} runs", micros(best), micros(median))
            }),
            met: p99.map(|(best, _, _)| best <= bound),
        });
    }
    let fanout = r.get("fanout", "switchboard");
    let room_size = fanout.report().map_or("–".into(), |rep| param(rep, "room_size"));
    let fan_share = share(fanout.throughput(), tp("fanout", "bare-relay"));
    out.push(Verdict {
        target: "fan-out ≥ 1,000,000 deliveries/s on one server core in rooms of 100".into(),
        measured: fanout.throughput().map_or("–".into(), |v| {
            let share = fan_share.map_or(String::new(), |s| format!(", {:.0}% of the bare relay's", s * 100.0));
            format!("{} deliveries/s in rooms of {room_size}{share} ({core})", thousands(v))
        }),
        met: fanout.throughput().map(|v| v >= 1_000_000.0 && room_size == "100" && pinned),
    });
    let join = cpu("idle", "switchboard");
    out.push(Verdict {
        target: "connect+join ≤ 50 µs of server CPU each".into(),
        measured: join.map_or("–".into(), |v| {
            let bare =
                cpu("idle", "bare").map_or(String::new(), |b| format!(" (the bare library's connect: {b:.1} µs)"));
            format!("{v:.1} µs{bare}")
        }),
        met: join.map(|v| v <= 50.0),
    });
    let rss = r.get("idle", "switchboard").rss_per_connection();
    out.push(Verdict {
        target: "idle ≤ 2 KiB per joined connection at 15,000, default settings".into(),
        measured: rss.map_or("–".into(), |v| format!("{v:.2} KiB (default settings: rate limits and keepalive on)")),
        met: rss.map(|v| v <= 2.0),
    });
    out.push(Verdict {
        target: "cross-node relay p99 ≤ 5 ms at 10,000 msgs/s".into(),
        measured: "bench/cluster.sh: [benchmarks-cluster.md](benchmarks-cluster.md)".into(),
        met: None,
    });
    out
}

/// How much more the dialect may spend than native `/ws` (issue #12): 10%.
const DIALECT_MARGIN: f64 = 0.10;

/// The targets of issue #12's performance section: Switchboard's PeerJS dialect
/// within 10% of its native `/ws` in server CPU per relayed message and in server
/// memory per idle connection.
fn verdicts_12(r: &Results) -> Vec<Verdict> {
    let share = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let mut out = Vec::new();
    let (dialect, native) =
        (r.get("relay", "switchboard-peerjs").cpu_per_op(), r.get("relay", "switchboard").cpu_per_op());
    let cpu = share(dialect, native);
    out.push(Verdict {
        target: "PeerJS dialect: server CPU per relayed message ≤ 1.10× native /ws".into(),
        measured: match (dialect, native, cpu) {
            (Some(d), Some(n), Some(v)) => format!("{v:.2}× ({d:.2} µs against {n:.2} µs)"),
            _ => "–".into(),
        },
        met: cpu.map(|v| v <= 1.0 + DIALECT_MARGIN),
    });
    let (dialect, native) =
        (r.get("idle", "switchboard-peerjs").rss_per_connection(), r.get("idle", "switchboard").rss_per_connection());
    let rss = share(dialect, native);
    out.push(Verdict {
        target: "PeerJS dialect: server RSS per idle connection ≤ 1.10× native /ws".into(),
        measured: match (dialect, native, rss) {
            (Some(d), Some(n), Some(v)) => format!("{v:.2}× ({d:.2} KiB against {n:.2} KiB)"),
            _ => "–".into(),
        },
        met: rss.map(|v| v <= 1.0 + DIALECT_MARGIN),
    });
    out
}

/// The rows of the same-protocol table: file key, name.
const SAME_PROTOCOL: [(&str, &str); 3] = [
    ("peerjs", "peerjs-server"),
    ("switchboard-peerjs", "Switchboard, PeerJS dialect"),
    ("switchboard", "Switchboard, native /ws"),
];

/// "Same protocol: PeerJS": peerjs-server and Switchboard's PeerJS dialect, both
/// driven by the PeerJS adapter (the same frames, ids and checks), and
/// Switchboard's native `/ws` for reference; then issue #12's two ratios.
fn same_protocol_section(r: &Results, md: &mut String) {
    let _ = writeln!(md, "## Same protocol: PeerJS\n");
    let _ = writeln!(
        md,
        "peerjs-server and Switchboard's PeerJS dialect (`/peerjs` on the same `switchboard` binary, started with \
         the same flags) driven by the same PeerJS adapter: the same frames (`OFFER` / `ANSWER` / `CANDIDATE` by \
         `dst`), the same ids, the same checks. Switchboard's native `/ws` is the reference the dialect is held \
         to. PeerJS has no rooms: its idle connection holds its own id, and its churn cycle is connect (the \
         `OPEN`) and close, where native `/ws` also joins and leaves a room. The figures are those of the \
         scenario tables below.\n"
    );
    let _ = writeln!(
        md,
        "| target | relay msgs/s | relay server CPU per message | idle server RSS per connection | churn \
         cycles/s | churn server CPU per cycle | churn cycle | checks |\n|---|--:|--:|--:|--:|--:|---|---|"
    );
    let value = |cell: &Cell, what: &dyn Fn(&Cell) -> Option<String>| match cell {
        Cell::Ran(_) => what(cell).unwrap_or_else(|| "–".into()),
        Cell::Na(_) => "n/a".into(),
        Cell::Failed(_) => "**run failed**".into(),
        Cell::Missing => "not run".into(),
    };
    for (target, name) in SAME_PROTOCOL {
        let (relay, idle, churn) = (r.get("relay", target), r.get("idle", target), r.get("churn", target));
        let failed: Vec<&str> = [("relay", relay), ("idle", idle), ("churn", churn)]
            .into_iter()
            .filter(|(_, cell)| match cell {
                Cell::Ran(report) => report["ok"] != true,
                Cell::Failed(_) => true,
                Cell::Na(_) | Cell::Missing => false,
            })
            .map(|(scenario, _)| scenario)
            .collect();
        let ran = [relay, idle, churn].iter().any(|cell| cell.report().is_some());
        let checks = match (failed.is_empty(), ran) {
            (false, _) => format!("**FAILED** in {}", failed.join(", ")),
            (true, true) => "ok".into(),
            (true, false) => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {checks} |",
            value(relay, &|c| c.throughput().map(thousands)),
            value(relay, &|c| c.cpu_per_op().map(|us| format!("{us:.2} µs"))),
            value(idle, &|c| c.rss_per_connection().map(|kib| format!("{kib:.2} KiB"))),
            value(churn, &|c| c.throughput().map(thousands)),
            value(churn, &|c| c.cpu_per_op().map(|us| format!("{us:.1} µs"))),
            value(churn, &|c| c.report().map(|rep| param(rep, "cycle"))),
        );
    }
    let _ = writeln!(md, "\nThe target of issue #12: the dialect within 10% of native `/ws`.\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    for verdict in verdicts_12(r) {
        let met = match verdict.met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {met} |", verdict.target, verdict.measured);
    }
    let _ = writeln!(md);
}

/// The fixed-rate latency table: per offered rate and target, the best and the
/// median of each percentile over the runs, and the pacer's lateness.
fn rates_section(r: &Results, md: &mut String) {
    if r.1.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### relay latency at fixed offered rates
"
    );
    let first = r.1.values().flat_map(|t| t.values()).flatten().find_map(Cell::report);
    if let Some(report) = first {
        let _ = writeln!(
            md,
            "{} pairs, {} sizes, each sender on a fixed timetable; the offered rate is the total. Latency counts from \
             the moment each message was due (no coordinated omission). Each rate ran several times per target \
             ({} s each): **best** is the lowest of the runs, **median** the middle one (a stall of the machine only \
             ever adds latency). **Pacer lateness** is the load generator's own: actual send − due, p99 the median \
             over the runs and max the worst of them. **Delivered ÷ offered** is the median run's delivery rate (over \
             the measured time, drain included) divided by the offered rate: below 100%, the server or the \
             generator fell behind.\n",
            param(report, "pairs"),
            param(report, "size_mix"),
            report["duration_s"].as_f64().unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        md,
        "| offered | target | runs | p50 best / median | p99 best / median | p99.9 best / median | p99 from actual \
         send (median) | pacer lateness p99 / max | delivered ÷ offered | checks |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|---|"
    );
    let pair =
        |v: Option<(u64, u64, usize)>| v.map_or("–".into(), |(b, m, _)| format!("{} / {}", micros(b), micros(m)));
    for (rate, targets) in &r.1 {
        for (target, name) in TARGETS {
            let Some(cells) = targets.get(target) else { continue };
            let offered = format!("{} msgs/s", thousands(*rate as f64));
            let reports: Vec<&Value> = cells.iter().filter_map(Cell::report).collect();
            if reports.is_empty() {
                let why = cells.iter().find_map(|c| match c {
                    Cell::Na(reason) => Some(format!("n/a: {reason}")),
                    Cell::Failed(reason) => Some(format!("**run failed**: {reason}")),
                    _ => None,
                });
                let _ = writeln!(md, "| {offered} | {name} | {} |{}", why.unwrap_or("not run".into()), " |".repeat(8));
                continue;
            }
            let median = |mut v: Vec<u64>| {
                v.sort_unstable();
                v.get(v.len().saturating_sub(1) / 2).copied()
            };
            let service = median(reports.iter().filter_map(|r| r["service_latency_us"]["p99"].as_u64()).collect());
            let late_p99 = median(reports.iter().filter_map(|r| r["pacer"]["lateness_us"]["p99"].as_u64()).collect());
            let late_max = reports.iter().filter_map(|r| r["pacer"]["lateness_us"]["max"].as_u64()).max();
            let delivered = {
                let mut shares: Vec<f64> =
                    reports.iter().filter_map(|r| Some(r["throughput"]["value"].as_f64()? / *rate as f64)).collect();
                shares.sort_by(f64::total_cmp);
                shares.get(shares.len().saturating_sub(1) / 2).map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
            };
            let failed = reports.iter().filter(|r| r["ok"] != true).count() + (cells.len() - reports.len());
            let checks =
                if failed == 0 { "ok".to_owned() } else { format!("**FAILED** in {failed} of {}", cells.len()) };
            let _ = writeln!(
                md,
                "| {offered} | {name} | {} | {} | {} | {} | {} | {} / {} | {delivered} | {checks} |",
                reports.len(),
                pair(rate_percentile(r, *rate, target, "p50")),
                pair(rate_percentile(r, *rate, target, "p99")),
                pair(rate_percentile(r, *rate, target, "p999")),
                opt_micros(service),
                opt_micros(late_p99),
                opt_micros(late_max),
            );
        }
    }
    let _ = writeln!(md);
}

fn render(r: &Results, args: &CompareArgs, svg_name: &str, notes: Option<&str>) -> String {
    let mut md = String::new();
    let settings: BTreeMap<&str, &str> = args.settings.iter().filter_map(|s| s.split_once('=')).collect();
    let date = settings.get("date").copied().unwrap_or("unknown");
    let _ = writeln!(md, "# Benchmarks: Switchboard and the servers people use\n");
    let cores = match settings.get("pinning") {
        Some(pinning) if pinning.starts_with("server on CPU") => format!(
            "Every server ran pinned to one core and the load generator to the other ({pinning}), so a throughput is \
             what one server core did; the machine is a VM whose cores are noisy, so absolute"
        ),
        _ => "The machine has two noisy cores shared by the server and the load generator, so absolute".to_owned(),
    };
    let _ = writeln!(
        md,
        "Generated by `bench/compare.sh` on {date}: every scenario against every server, one after the other on \
         this machine, driven by the same load generator (`switchboard-bench`) over loopback. Each server is \
         started fresh for each scenario and stopped after it. {cores} numbers move from run to run, by a factor \
         of two or more when the machine is busy; the ratios measured in one run, and the server CPU per \
         operation, are what to read. Every run checks every message (exactly once, in order per sender, from \
         the right peer); a run whose checks failed is marked **FAILED**.\n"
    );
    let _ = writeln!(md, "Reproduce:\n\n```sh\n{}\n```\n", args.command);
    let _ = writeln!(md, "| machine | |\n|---|---|");
    for (name, value) in machine() {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    let _ = writeln!(md, "| date | {date} |");
    if let Some(measured) = settings.get("switchboard") {
        let _ = writeln!(md, "| Switchboard measured | {measured} |");
    }
    if let Some(pinning) = settings.get("pinning") {
        let _ = writeln!(md, "| pinning | {pinning} |");
    }
    let observed = observed_cpus(r);
    if !observed.is_empty() {
        let _ = writeln!(md, "| CPUs allowed, as the load generator read them | {} |", observed.join("; "));
    }
    let _ = writeln!(md);
    let rest: Vec<_> = settings.iter().filter(|(k, _)| !matches!(**k, "date" | "switchboard" | "pinning")).collect();
    if !rest.is_empty() {
        let _ = writeln!(md, "Settings of this run (environment variables of bench/compare.sh):\n");
        let line: Vec<String> = rest.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(md, "{}\n", line.join(", "));
    }

    let _ = writeln!(md, "## The targets of issue #4\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    for verdict in verdicts(r) {
        let met = match verdict.met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {met} |", verdict.target, verdict.measured);
    }
    let _ = writeln!(
        md,
        "\nWhat the profiles say about the targets not met, and what would get there: [below](#profiles).\n"
    );
    let pinned = settings.get("pinning").is_some_and(|p| p.starts_with("server on CPU"));
    let _ = writeln!(md, "## The targets of issue #16\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    for verdict in verdicts_16(r, pinned) {
        let met = match verdict.met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured here",
        };
        let _ = writeln!(md, "| {} | {} | {met} |", verdict.target, verdict.measured);
    }
    let _ = writeln!(md);
    same_protocol_section(r, &mut md);

    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(md, "![throughput and latency per target]({svg_name})\n");
    let _ = writeln!(
        md,
        "In every table, **Switchboard ÷ this** is Switchboard's throughput divided by the row's: above 1× \
         Switchboard is faster. Latency is measured by the load generator, from the moment a message was due to \
         the moment it arrived. **Server CPU per op** is the CPU time (user + system, from /proc/PID/stat) the \
         server process used over the measured phase divided by the operations completed: it depends much less \
         on what else the two cores were doing than throughput does, and **this ÷ Switchboard (CPU)** above 1× \
         means the row's server spends more CPU per operation than Switchboard.\n"
    );
    for (scenario, title) in SCENARIOS {
        let _ = writeln!(md, "### {title}\n");
        if let Some(report) = TARGETS.iter().find_map(|(t, _)| r.get(scenario, t).report()) {
            let _ = writeln!(md, "{}\n", describe(scenario, report));
        }
        let sb = r.get(scenario, "switchboard").throughput();
        let sb_cpu = r.get(scenario, "switchboard").cpu_per_op();
        let mut header =
            "| target | throughput | p50 | p99 | p99.9 | Switchboard ÷ this | server CPU per op | this ÷ Switchboard (CPU) |"
                .to_owned();
        let mut rule = "|---|--:|--:|--:|--:|--:|--:|--:|".to_owned();
        match scenario {
            "idle" => {
                header.push_str(" server RSS per connection |");
                rule.push_str("--:|");
            }
            "relay-open" => {
                header.push_str(" offered | p99 from actual send | pacer lateness p99 / max |");
                rule.push_str("--:|--:|--:|");
            }
            "relay" | "fanout" => {
                header.push_str(" of the bare relay |");
                rule.push_str("--:|");
            }
            "churn" => {
                header.push_str(" cycle |");
                rule.push_str("---|");
            }
            _ => {}
        }
        header.push_str(" checks |");
        rule.push_str("---|");
        let _ = writeln!(md, "{header}\n{rule}");
        for (target, name) in TARGETS {
            let cell = r.get(scenario, target);
            let row = match cell {
                Cell::Ran(report) => {
                    let unit = report["throughput"]["unit"].as_str().unwrap_or("");
                    let mut row = format!(
                        "| {name} | {} {unit} | {} | {} | {} | {} |",
                        thousands(cell.throughput().unwrap_or(0.0)),
                        opt_micros(cell.latency("p50")),
                        opt_micros(cell.latency("p99")),
                        opt_micros(cell.latency("p999")),
                        if target == "switchboard" { "1×".into() } else { ratio(sb, cell.throughput()) },
                    );
                    let cpu = cell.cpu_per_op();
                    let _ = write!(
                        row,
                        " {} | {} |",
                        cpu.map_or("–".into(), |us| format!("{us:.1} µs")),
                        if target == "switchboard" { "1×".into() } else { ratio(cpu, sb_cpu) }
                    );
                    match scenario {
                        "idle" => {
                            let _ = write!(
                                row,
                                " {} |",
                                cell.rss_per_connection().map_or("–".into(), |v| format!("{v:.2} KiB"))
                            );
                        }
                        "relay-open" => {
                            let service = report["service_latency_us"]["p99"].as_u64();
                            let late = &report["pacer"]["lateness_us"];
                            let _ = write!(
                                row,
                                " {} msgs/s | {} | {} / {} |",
                                param(report, "rate"),
                                opt_micros(service),
                                opt_micros(late["p99"].as_u64()),
                                opt_micros(late["max"].as_u64())
                            );
                        }
                        "relay" | "fanout" => {
                            let bare = r.get(scenario, "bare-relay").throughput();
                            let share = cell.throughput().zip(bare).filter(|(_, b)| *b > 0.0);
                            let _ = write!(
                                row,
                                " {} |",
                                share.map_or("–".into(), |(t, b)| format!("{:.0}%", t / b * 100.0))
                            );
                        }
                        "churn" => {
                            let _ = write!(row, " {} |", param(report, "cycle"));
                        }
                        _ => {}
                    }
                    let _ = write!(row, " {} |", checks(report));
                    row
                }
                Cell::Na(reason) => na_row(name, scenario, &format!("n/a: {reason}")),
                Cell::Failed(reason) => na_row(name, scenario, &format!("**run failed**: {reason}")),
                Cell::Missing => na_row(name, scenario, "not run"),
            };
            let _ = writeln!(md, "{row}");
        }
        let mut notes: Vec<String> = Vec::new();
        for (target, name) in TARGETS {
            if let Some(report) = r.get(scenario, target).report() {
                for note in report["notes"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    notes.push(format!("- {name}: {note}"));
                }
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(md, "\n{}", notes.join("\n"));
        }
        let _ = writeln!(md);
    }
    rates_section(r, &mut md);
    if let Some(notes) = notes {
        let _ = writeln!(md, "{}", notes.trim_end());
    }
    md
}

/// The distinct CPU affinities the reports recorded, as text.
fn observed_cpus(r: &Results) -> Vec<String> {
    let reports = r.0.values().flat_map(|row| row.values()).chain(r.1.values().flat_map(|t| t.values()).flatten());
    let mut seen = std::collections::BTreeSet::new();
    for report in reports.filter_map(Cell::report) {
        let cpus = &report["cpus"];
        let load = cpus["load_generator"].as_str().unwrap_or("?");
        let text = match cpus["server"].as_str() {
            Some(server) => format!("server {server}, load generator {load}"),
            None => format!("load generator {load}"),
        };
        seen.insert(text);
    }
    seen.into_iter().collect()
}

fn na_row(name: &str, scenario: &str, text: &str) -> String {
    let extra = match scenario {
        "idle" | "churn" => 1,
        "relay-open" => 3,
        "relay" | "fanout" => 1,
        _ => 0,
    };
    format!("| {name} | {text} |{} |", " |".repeat(6 + extra))
}

/// One line on what a scenario's runs did, from the first report's params.
fn describe(scenario: &str, report: &Value) -> String {
    let duration = report["duration_s"].as_f64().unwrap_or(0.0);
    let p = |name| param(report, name);
    match scenario {
        "idle" => format!(
            "{} connections, in rooms of {} where the server has rooms ({} rooms), opened {} at a time, then held \
             for {duration} s. Throughput is the connect+join rate over the ramp; latency is one connection's \
             connect+join. Server RSS per connection: (VmRSS after the hold − VmRSS before the ramp) ÷ connections.",
            p("connections"),
            report["params"]["connections"]
                .as_f64()
                .zip(report["params"]["rooms"].as_f64())
                .map_or("–".into(), |(c, r)| format!("{:.0}", c / r)),
            p("rooms"),
            "64",
        ),
        "echo" => {
            format!("{} clients, each with one {}-byte message in flight, for {duration} s.", p("clients"), p("size"))
        }
        "relay" => format!(
            "{} pairs of peers, each pair in its own room, both peers sending ({} sizes: one 1–4 KB SDP per five \
             ~200 B candidates), {} messages in flight per sender, for {duration} s.",
            p("pairs"),
            p("size_mix"),
            p("window")
        ),
        "relay-open" => format!(
            "{} pairs as above, each sender on a fixed timetable; the total offered rate is half of that server's \
             own closed-loop rate in this run. Latency counts from when a message was due (no coordinated \
             omission).",
            p("pairs")
        ),
        "fanout" => format!(
            "{} rooms of {} peers; one peer per room broadcasts ({} sizes), {} broadcasts in flight (in flight until \
             every receiver has it); throughput counts deliveries (K−1 per broadcast), for {duration} s.",
            p("rooms"),
            p("room_size"),
            p("size_mix"),
            p("window")
        ),
        "churn" => format!(
            "{} loops of connect, join, leave (where the server has it), close, each in its own room, for \
             {duration} s. Servers without a leave do one round trip fewer per cycle.",
            p("concurrency")
        ),
        _ => String::new(),
    }
}

/// The chart: one row per scenario; throughput per target on the left,
/// latency (p50, p99; log scale) on the right, or for idle, the server's memory per
/// connection.
fn chart(r: &Results, path: &Path) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| anyhow!("drawing the chart: {e}");
    let row_height = 250u32;
    let root = SVGBackend::new(path, (1200, row_height * SCENARIOS.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let root = root
        .titled("Switchboard and peer servers: throughput and latency per target", ("sans-serif", 22))
        .map_err(|e| failed(&e))?;
    let rows = root.split_evenly((SCENARIOS.len(), 2));
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(140, 86, 75),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(23, 190, 207),
    ];
    for (i, (scenario, title)) in SCENARIOS.iter().enumerate() {
        let cells: Vec<(&str, &Cell)> = TARGETS.iter().map(|(t, name)| (*name, r.get(scenario, t))).collect();
        let n = cells.len() as f64;
        let unit =
            cells.iter().find_map(|(_, c)| c.report()).and_then(|rep| rep["throughput"]["unit"].as_str()).unwrap_or("");

        // Throughput.
        let max = cells.iter().filter_map(|(_, c)| c.throughput()).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&rows[i * 2])
            .margin(10)
            .caption(format!("{title} ({unit})"), ("sans-serif", 15))
            .x_label_area_size(25)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..max * 1.6, 0.0..n)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(5)
            .x_label_formatter(&|v| thousands(*v))
            .draw()
            .map_err(|e| failed(&e))?;
        for (k, (name, cell)) in cells.iter().enumerate() {
            let y = n - k as f64 - 1.0;
            let color = colors[k % colors.len()];
            let label = match cell {
                Cell::Ran(_) => format!("{name}: {}", thousands(cell.throughput().unwrap_or(0.0))),
                Cell::Na(_) => format!("{name}: n/a"),
                Cell::Failed(_) => format!("{name}: failed"),
                Cell::Missing => format!("{name}: not run"),
            };
            let value = cell.throughput().unwrap_or(0.0);
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.15), (value, y + 0.85)], color.filled())))
                .map_err(|e| failed(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(label, (value + max * 0.02, y + 0.65), ("sans-serif", 12))))
                .map_err(|e| failed(&e))?;
        }

        // Latency, or memory for idle.
        if *scenario == "idle" {
            let max = cells.iter().filter_map(|(_, c)| c.rss_per_connection()).fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(&rows[i * 2 + 1])
                .margin(10)
                .caption("server RSS per connection (KiB)", ("sans-serif", 15))
                .x_label_area_size(25)
                .y_label_area_size(10)
                .build_cartesian_2d(0.0..max * 1.6, 0.0..n)
                .map_err(|e| failed(&e))?;
            chart.configure_mesh().disable_y_mesh().y_labels(0).x_labels(5).draw().map_err(|e| failed(&e))?;
            for (k, (name, cell)) in cells.iter().enumerate() {
                let y = n - k as f64 - 1.0;
                let value = cell.rss_per_connection();
                let label = value.map_or(format!("{name}: –"), |v| format!("{name}: {v:.2} KiB"));
                let value = value.unwrap_or(0.0);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y + 0.15), (value, y + 0.85)],
                        colors[k % colors.len()].filled(),
                    )))
                    .map_err(|e| failed(&e))?;
                chart
                    .draw_series(std::iter::once(Text::new(label, (value + max * 0.02, y + 0.65), ("sans-serif", 12))))
                    .map_err(|e| failed(&e))?;
            }
        } else {
            let max = cells.iter().filter_map(|(_, c)| c.latency("p99")).max().unwrap_or(1000).max(10) as f64;
            let mut chart = ChartBuilder::on(&rows[i * 2 + 1])
                .margin(10)
                .caption("latency p50 (dark) and p99 (light), log scale", ("sans-serif", 15))
                .x_label_area_size(25)
                .y_label_area_size(10)
                .build_cartesian_2d((10.0..max * 60.0).log_scale(), 0.0..n)
                .map_err(|e| failed(&e))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(6)
                .x_label_formatter(&|v| micros(*v as u64))
                .draw()
                .map_err(|e| failed(&e))?;
            for (k, (name, cell)) in cells.iter().enumerate() {
                let y = n - k as f64 - 1.0;
                let color = colors[k % colors.len()];
                let (Some(p50), Some(p99)) = (cell.latency("p50"), cell.latency("p99")) else {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{name}: –"),
                            (11.0, y + 0.65),
                            ("sans-serif", 12),
                        )))
                        .map_err(|e| failed(&e))?;
                    continue;
                };
                let (p50, p99) = ((p50.max(11)) as f64, (p99.max(11)) as f64);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(10.0, y + 0.15), (p99, y + 0.85)],
                        color.mix(0.35).filled(),
                    )))
                    .map_err(|e| failed(&e))?;
                chart
                    .draw_series(std::iter::once(Rectangle::new([(10.0, y + 0.3), (p50, y + 0.7)], color.filled())))
                    .map_err(|e| failed(&e))?;
                let label = format!("{name}: {} / {}", micros(p50 as u64), micros(p99 as u64));
                chart
                    .draw_series(std::iter::once(Text::new(label, (p99 * 1.15, y + 0.65), ("sans-serif", 12))))
                    .map_err(|e| failed(&e))?;
            }
        }
    }
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(throughput: f64, results: Value) -> Cell {
        Cell::Ran(serde_json::json!({
            "ok": true,
            "params": {"cycle": "connect, join, close"},
            "throughput": {"value": throughput, "unit": "msgs/s"},
            "results": results,
        }))
    }

    fn results(cells: Vec<(&'static str, &'static str, Cell)>) -> Results {
        let mut all: BTreeMap<&'static str, BTreeMap<&'static str, Cell>> = BTreeMap::new();
        for (scenario, target, cell) in cells {
            all.entry(scenario).or_default().insert(target, cell);
        }
        Results(all, BTreeMap::new())
    }

    #[test]
    fn the_same_protocol_table_holds_the_dialect_to_native_ws() {
        let mut failed_churn = ran(900.0, serde_json::json!({"server_cpu_us_per_op": 70.0}));
        if let Cell::Ran(report) = &mut failed_churn {
            report["ok"] = false.into();
        }
        let r = results(vec![
            ("relay", "switchboard", ran(100_000.0, serde_json::json!({"server_cpu_us_per_op": 10.0}))),
            ("relay", "switchboard-peerjs", ran(95_000.0, serde_json::json!({"server_cpu_us_per_op": 10.5}))),
            ("relay", "peerjs", ran(20_000.0, serde_json::json!({"server_cpu_us_per_op": 48.0}))),
            ("idle", "switchboard", ran(20_000.0, serde_json::json!({"server_rss_per_connection_kib": 2.0}))),
            ("idle", "switchboard-peerjs", ran(21_000.0, serde_json::json!({"server_rss_per_connection_kib": 2.5}))),
            ("churn", "switchboard-peerjs", ran(3_000.0, serde_json::json!({"server_cpu_us_per_op": 60.0}))),
            ("churn", "peerjs", failed_churn),
            ("idle", "peerjs", Cell::Failed("peerjs did not start".into())),
        ]);
        let mut md = String::new();
        same_protocol_section(&r, &mut md);
        assert!(md.contains("## Same protocol: PeerJS"), "{md}");
        assert!(
            md.contains(
                "| peerjs-server | 20,000 | 48.00 µs | **run failed** | 900 | 70.0 µs | connect, join, close | \
                 **FAILED** in idle, churn |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| Switchboard, PeerJS dialect | 95,000 | 10.50 µs | 2.50 KiB | 3,000 | 60.0 µs | connect, join, close \
                 | ok |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| Switchboard, native /ws | 100,000 | 10.00 µs | 2.00 KiB | not run | not run | not run | ok |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| PeerJS dialect: server CPU per relayed message ≤ 1.10× native /ws | 1.05× (10.50 µs against \
                 10.00 µs) | **met** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| PeerJS dialect: server RSS per idle connection ≤ 1.10× native /ws | 1.25× (2.50 KiB against 2.00 \
                 KiB) | **not met** |"
            ),
            "{md}"
        );
        // Nothing run: nothing claimed.
        let mut md = String::new();
        same_protocol_section(&results(Vec::new()), &mut md);
        assert!(
            md.contains(
                "| Switchboard, PeerJS dialect | not run | not run | not run | not run | not run | not run | – |"
            ),
            "{md}"
        );
        assert!(md.contains("≤ 1.10× native /ws | – | not measured |"), "{md}");
    }
}
