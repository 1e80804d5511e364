//! `switchboard-bench`: the load generator for Switchboard.
//!
//! One subcommand per scenario (see `switchboard-bench --help`):
//!
//! ```text
//! switchboard serve --listen 127.0.0.1:18500 --rate-limit-messages 0 --rate-limit-bytes 0 \
//!     --max-connections-per-ip 20000 --log warn &
//! switchboard-bench idle   --url ws://127.0.0.1:18500 --connections 10000 --rooms 1000 --server-pid $! --duration 10s
//! switchboard-bench echo   --url ws://127.0.0.1:18500 --clients 100 --duration 10s
//! switchboard-bench relay  --url ws://127.0.0.1:18500 --pairs 500 --size-mix mixed --duration 10s
//! switchboard-bench relay  --url ws://127.0.0.1:18500 --pairs 500 --rate 20000 --duration 10s
//! switchboard-bench fanout --url ws://127.0.0.1:18500 --room-size 50 --rooms 20 --duration 10s
//! switchboard-bench churn  --url ws://127.0.0.1:18500 --concurrency 50 --duration 10s
//! ```
//!
//! Every scenario checks the server as it goes (each message once, in order per
//! sender, from the right peer, no unexpected errors) and exits with status 1 on
//! any violation. `--json` prints a machine-readable result; `--svg FILE` draws it.
//! Open-loop runs (`--rate`) are paced by a dedicated thread (`--pacer`, see
//! [`scenarios::pacer`]) and report its lateness beside the latency from the due time.
//! `--adapter` picks the server's protocol (Switchboard, the bare-library echo,
//! the bare-library relay, the seeds' Node servers, matchbox_server,
//! peerjs-server); a scenario the server
//! cannot run exits with status 3 and, with `--json`, `{"unsupported": REASON}`.
//! `switchboard-bench compare` turns a directory of `--json` results into
//! docs/benchmarks.md (see bench/compare.sh).
//!
//! The modules: [`cli`] (the command line), [`protocol`] (the interface to a
//! server, and the Switchboard adapter), [`scenarios`] (one file per scenario),
//! [`stats`] (histograms and the checker), [`report`] (table, JSON, SVG).

mod cli;
mod compare;
mod protocol;
mod report;
mod scenarios;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The exit status when the server cannot run the scenario at all.
const UNSUPPORTED: u8 = 3;

fn main() -> ExitCode {
    let scenario = match cli::Cli::parse().command {
        cli::Command::Scenario(scenario) => scenario,
        cli::Command::Compare(args) => {
            return match compare::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let common = scenario.common().clone();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if common.threads > 0 {
        runtime.worker_threads(common.threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(scenarios::run(&scenario));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result.and_then(|report| report.emit(&common).map(|()| report.ok)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) if err.is::<protocol::Unsupported>() => {
            // Not a failure: this server cannot run this scenario. With --json, say
            // so on stdout, for the comparison's "n/a".
            let reason = err.downcast_ref::<protocol::Unsupported>().map_or("", |u| u.0);
            if common.json {
                let name = scenario.name();
                let na = serde_json::json!({ "scenario": name, "target": common.target_name, "unsupported": reason });
                println!("{na}");
            }
            eprintln!("n/a: {err}");
            ExitCode::from(UNSUPPORTED)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
