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
//!
//! The modules: [`cli`] (the command line), [`protocol`] (the interface to a
//! server, and the Switchboard adapter), [`scenarios`] (one file per scenario),
//! [`stats`] (histograms and the checker), [`report`] (table, JSON, SVG).

mod cli;
mod protocol;
mod report;
mod scenarios;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let common = cli.scenario.common().clone();
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
    let result = runtime.block_on(scenarios::run(&cli.scenario));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result.and_then(|report| report.emit(&common).map(|()| report.ok)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
