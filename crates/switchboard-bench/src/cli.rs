//! The command line: one subcommand per scenario, each with the common options
//! (target, duration, output) and its own knobs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for Switchboard: opens many WebSocket connections to a server on
/// this machine, drives one scenario, checks every message, and reports throughput
/// and latency.
///
/// Run the server without rate limits and with a per-IP cap above the connection
/// count (every connection comes from 127.0.0.1):
///
///   switchboard serve --listen 127.0.0.1:18500 --rate-limit-messages 0 --rate-limit-bytes 0 \
///       --max-connections-per-ip 20000
///
/// The load generator has 20,000 file descriptors: keep connection counts at or
/// below about 15,000.
#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version, about, long_about, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A scenario, or the comparison report.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Writes the side-by-side comparison (markdown and SVG) from a directory of
    /// `--json` results, as bench/compare.sh does.
    Compare(CompareArgs),
}

/// `compare`
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The directory of results: SCENARIO.TARGET.json, as bench/compare.sh names them.
    #[arg(long)]
    pub results: PathBuf,

    /// The markdown file to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,

    /// The chart to write; the markdown links to it by file name.
    #[arg(long, default_value = "docs/benchmarks.svg")]
    pub svg: PathBuf,

    /// A markdown file appended as is (the profiles and their reading).
    #[arg(long)]
    pub notes: Option<PathBuf>,

    /// The command that produced the results, quoted in the report.
    #[arg(long, default_value = "bench/compare.sh")]
    pub command: String,

    /// The run's settings (NAME=VALUE), listed in the report.
    #[arg(long = "setting", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
}

/// One benchmark scenario.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Ramp N connections, each joined to a room, and hold them: connect+join rate,
    /// and the server's memory per connection (with --server-pid).
    Idle(IdleArgs),
    /// C clients ping-pong on /ws/echo: round trips per second and latency.
    Echo(EchoArgs),
    /// P pairs of peers, each pair in its own room, relaying offers, signals and
    /// candidates to each other: messages per second and delivery latency.
    ///
    /// Closed loop (default) finds the highest throughput; its latency is mostly
    /// queueing (about window x senders / throughput). Use --rate for latency at a
    /// given load.
    Relay(RelayArgs),
    /// M rooms of K peers; one peer per room broadcasts: deliveries per second
    /// (K-1 per broadcast) and delivery latency.
    Fanout(FanoutArgs),
    /// Loops of connect, join, leave, close: cycles per second.
    Churn(ChurnArgs),
}

impl Scenario {
    /// The scenario's name, as in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle(_) => "idle",
            Scenario::Echo(_) => "echo",
            Scenario::Relay(_) => "relay",
            Scenario::Fanout(_) => "fanout",
            Scenario::Churn(_) => "churn",
        }
    }

    /// The options every scenario has.
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Idle(args) => &args.common,
            Scenario::Echo(args) => &args.common,
            Scenario::Relay(args) => &args.common,
            Scenario::Fanout(args) => &args.common,
            Scenario::Churn(args) => &args.common,
        }
    }

    /// Whether the scenario sends on a timetable (--rate).
    pub fn open_loop(&self) -> bool {
        match self {
            Scenario::Relay(args) => args.rate.is_some(),
            Scenario::Fanout(args) => args.rate.is_some(),
            _ => false,
        }
    }

    /// The WebSocket read buffer per connection: small where connections are many
    /// and quiet, larger where they carry traffic.
    pub fn read_buffer(&self) -> usize {
        if self.common().read_buffer > 0 {
            return self.common().read_buffer;
        }
        match self {
            Scenario::Idle(_) | Scenario::Churn(_) => 4 * 1024,
            Scenario::Echo(_) | Scenario::Relay(_) | Scenario::Fanout(_) => 32 * 1024,
        }
    }
}

/// Which server's protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Adapter {
    /// Switchboard (docs/protocol.md): /ws and /ws/echo.
    Switchboard,
    /// The bare-library echo server (switchboard-bench-bare-echo): echo only.
    Bare,
    /// The bare-library relay (switchboard-bench-bare-relay): connections to the
    /// same path form a group, each frame goes to the others; relay and fanout only.
    BareRelay,
    /// The seeds' Node.js servers (bench/peers): --url names the signaling,
    /// echo or broadcast server, whichever the scenario needs.
    Seed,
    /// matchbox_server: rooms in the URL, Signal{receiver|sender, data}.
    Matchbox,
    /// peerjs-server (npm `peer`): OPEN, then OFFER/ANSWER/CANDIDATE with dst.
    Peerjs,
}

/// How open-loop senders are paced (see `--pacer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PacerKind {
    /// A dedicated thread that sleeps, then spins, then sends.
    Thread,
    /// One tokio task per sender, on tokio's millisecond timer.
    Tokio,
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's base URL; the scenario appends /ws or /ws/echo. Loopback only.
    /// For Switchboard, several comma-separated URLs are nodes of one cluster,
    /// connected to in turn.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,

    /// How long to measure, after ramping up (e.g. 10s, 500ms, 2m; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Print the result as one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Also write a chart of throughput over time and latency percentiles to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// The name of the server under test, for the report.
    #[arg(long, default_value = "switchboard")]
    pub target_name: String,

    /// The protocol adapter.
    #[arg(long, value_enum, default_value = "switchboard")]
    pub adapter: Adapter,

    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub ramp_concurrency: u64,

    /// After the measured phase, how long to wait for messages still in flight
    /// before counting them lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Runtime worker threads (0: one per CPU core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// The load generator's WebSocket read buffer per connection, in bytes
    /// (0: 4 KiB for idle and churn, 32 KiB for the traffic scenarios).
    /// tungstenite zero-fills it before every read, so it costs the load
    /// generator CPU on every message.
    #[arg(long, default_value_t = 0)]
    pub read_buffer: usize,

    /// How open-loop senders (--rate) are paced. `thread`: one dedicated thread
    /// sends every message itself, sleeping until --pacer-spin-us before it is
    /// due and spinning the rest; `tokio`: one task per sender on tokio's timer,
    /// which wakes on a 1 ms grid (the method before issue #16). Either way the
    /// report gives the pacer's lateness (actual send minus due).
    #[arg(long, value_enum, default_value = "thread")]
    pub pacer: PacerKind,

    /// The thread pacer spins (instead of sleeping) for the last this many
    /// microseconds before each message is due. More is more accurate on a
    /// machine whose sleeps wake late, and burns more of the load generator's CPU.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub pacer_spin_us: u64,

    /// The server's process id (on this machine): reports the CPU time it used
    /// per operation over the measured phase (from /proc/PID/stat), and for
    /// idle its resident memory (VmRSS) before and after. For idle, use a freshly
    /// started server: memory an earlier run freed is reused and hides part of
    /// the cost.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `idle`
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Connections to open and hold.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..=19_000))]
    pub connections: u64,

    /// Rooms to spread them over (N/R per room; default N/10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rooms: Option<u64>,
}

/// `echo`
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,

    /// Concurrent clients, each with one message in flight.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..=19_000))]
    pub clients: u64,

    /// Bytes per message sent.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=60_000))]
    pub size: u64,
}

/// Sizes of relayed and broadcast bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SizeMix {
    /// Session descriptions: 1 to 4 KB each.
    Sdp,
    /// ICE candidates: about 200 B each.
    Candidate,
    /// One session description per five candidates.
    Mixed,
}

/// `relay`
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub common: Common,

    /// Pairs of peers; both peers of a pair send to each other.
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u64).range(1..=9_500))]
    pub pairs: u64,

    /// Body sizes.
    #[arg(long, value_enum, default_value = "mixed")]
    pub size_mix: SizeMix,

    /// Open loop: this many messages per second in total, on a fixed timetable.
    /// Without it, closed loop at the highest rate the window allows.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,

    /// Closed loop: messages each sender keeps in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub window: u64,
}

/// `fanout`
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,

    /// Peers per room (one sender, K-1 receivers).
    #[arg(long, short = 'k', value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub room_size: u64,

    /// Rooms.
    #[arg(long, short = 'm', value_parser = clap::value_parser!(u64).range(1..))]
    pub rooms: u64,

    /// Open loop: this many broadcasts per second in total (deliveries are K-1
    /// times that). Without it, closed loop.
    #[arg(long, value_name = "BROADCASTS_PER_S")]
    pub rate: Option<f64>,

    /// Closed loop: broadcasts each sender keeps in flight (in flight until every
    /// receiver has it).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub window: u64,

    /// Body sizes.
    #[arg(long, value_enum, default_value = "candidate")]
    pub size_mix: SizeMix,
}

/// `churn`
#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,

    /// Concurrent connect-join-leave-close loops.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
}

/// `10s`, `500ms`, `2m`, `1.5` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("invalid duration unit {other:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
