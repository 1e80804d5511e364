//! The `switchboard` binary: parses the command line and runs the server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard_server::{serve, shutdown_signal, telemetry, Settings};

/// Switchboard: WebRTC signaling, WebSocket echo and broadcast, and Server-Sent Events.
#[derive(Parser)]
#[command(name = "switchboard", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Every option can also be set with its SWITCHBOARD_* variable
    /// or, by its long name, in the TOML file given with --config.
    Serve {
        /// A TOML file of settings (keys are the long option names, e.g. `max-message-size = 65536`).
        /// Command-line options and environment variables win over it.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)
        .map_err(|err| err.exit())
        .unwrap_or_else(|never| never);
    match cli.command {
        Command::Serve { config, settings } => {
            let serve_matches = matches
                .subcommand_matches("serve")
                .context("serve arguments")?;
            let settings = match config {
                Some(path) => settings.merge_file(serve_matches, &path)?,
                None => settings,
            };
            settings.validate()?;
            telemetry::logging::init(settings.log_format, &settings.log)
                .context("invalid --log filter")?;
            run(settings)
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.workers > 0 {
        runtime.worker_threads(settings.workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listen = settings.listen;
    runtime
        .block_on(serve(settings, shutdown_signal()))
        .with_context(|| format!("cannot serve on {listen}"))?;
    Ok(())
}
