//! The `switchboard` binary: parses the command line and runs the server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard_server::auth::{self, Claims};
use switchboard_server::{serve, shutdown_signal, telemetry, Settings};

/// jemalloc returns memory freed after a load peak to the system (with a
/// background thread, over seconds); glibc malloc kept about 70 MiB after the
/// 5,000-peer soak had ended (see docs/soak.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread purges pages
/// unused for a second (the default waits ten).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0"[0]);

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
        settings: Box<Settings>,
    },
    /// Mint a token for development and tests, printed on standard output.
    ///
    /// `switchboard token --sub alice --room demo --ttl 1h` with SWITCHBOARD_AUTH_SECRET set
    /// signs HS256; `--private-key key.pem` signs RS256 or ES256 instead.
    Token {
        /// The user (`sub` claim), shown to other peers.
        #[arg(long)]
        sub: String,
        /// A room (or `*` pattern) the token may join; repeat for several. None: any room.
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Largest capacity of a room created with this token (e.g. 2 for one-to-one calls).
        #[arg(long)]
        capacity: Option<u32>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Shared secret for HS256 (the server's --auth-secret).
        #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true)]
        auth_secret: Option<String>,
        /// PEM private key for RS256 (RSA) or ES256 (EC P-256).
        #[arg(long, conflicts_with = "auth_secret")]
        private_key: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).map_err(|err| err.exit()).unwrap_or_else(|never| never);
    match cli.command {
        Command::Serve { config, settings } => {
            let serve_matches = matches.subcommand_matches("serve").context("serve arguments")?;
            let settings = match config {
                Some(path) => settings.merge_file(serve_matches, &path)?,
                None => *settings,
            };
            settings.validate()?;
            telemetry::logging::init(settings.log_format, &settings.log).context("invalid --log filter")?;
            run(settings)
        }
        Command::Token { sub, rooms, capacity, ttl, auth_secret, private_key } => {
            let pem = match &private_key {
                Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
                None => None,
            };
            let claims = Claims {
                sub,
                exp: auth::now() + ttl.as_secs(),
                nbf: None,
                rooms: (!rooms.is_empty()).then_some(rooms),
                capacity,
            };
            println!("{}", auth::mint(&claims, auth_secret.as_deref(), pem.as_deref())?);
            Ok(())
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.workers > 0 {
        runtime.worker_threads(settings.workers);
    }
    let runtime = runtime.enable_all().build().context("cannot start the async runtime")?;
    let listen = settings.listen;
    runtime.block_on(serve(settings, shutdown_signal())).with_context(|| format!("cannot serve on {listen}"))?;
    Ok(())
}
