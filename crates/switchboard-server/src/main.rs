//! The `switchboard` binary: parses the command line and runs the server.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
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

/// `switchboard --version`: the crate's version and the commit it was built from
/// (`unknown` outside git; see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SWITCHBOARD_COMMIT"), ")");

/// Switchboard: WebRTC signaling, WebSocket echo and broadcast, and Server-Sent Events.
#[derive(Parser)]
#[command(name = "switchboard", version = VERSION, about, propagate_version = true)]
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
    /// Print a configuration file for `serve --config`: every option, commented
    /// out at its default, with its help text. deploy/switchboard.toml is this output.
    Config,
    /// Print a shell completion script on standard output.
    ///
    /// bash: `switchboard completions bash > /usr/share/bash-completion/completions/switchboard`;
    /// zsh: into a directory of `$fpath` as `_switchboard`; fish: `~/.config/fish/completions/switchboard.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff) on standard output: `switchboard man | man -l -`.
    Man,
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
        Command::Config => print(&config_file()?),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "switchboard", &mut out);
            print(&out)
        }
        Command::Man => print(&man_page().context("cannot render the man page")?),
    }
}

/// switchboard(1): the top-level page, then a section per subcommand with its
/// options (clap_mangen renders one command per page; `serve`'s options are
/// the ones people look for).
fn man_page() -> std::io::Result<Vec<u8>> {
    let cli = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cli.clone()).render(&mut out)?;
    for sub in cli.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = sub.get_name();
        out.extend_from_slice(format!(".SH \"SWITCHBOARD {}\"\n", name.to_uppercase()).as_bytes());
        let about = sub.get_long_about().or(sub.get_about()).map(ToString::to_string).unwrap_or_default();
        for paragraph in about.split("\n\n") {
            out.extend_from_slice(format!(".PP\n{}\n", roff_escape(paragraph)).as_bytes());
        }
        let mut options = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut options)?;
        // Its own `.SH OPTIONS` header would end the subcommand's section; the
        // quote string it defines again is defined by the page's preamble.
        let options = String::from_utf8_lossy(&options);
        let body: String = options
            .lines()
            .filter(|line| !line.starts_with(".SH") && !line.starts_with(".ie") && !line.starts_with(".el"))
            .map(|line| format!("{line}\n"))
            .collect();
        if sub.get_arguments().any(|arg| arg.get_id() != "help") {
            out.extend_from_slice(format!(".PP\n\\fBswitchboard {name}\\fR options:\n").as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
    }
    Ok(out)
}

/// Text as roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff_escape(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with(['.', '\'']) {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `bytes` to standard output; a closed pipe (`| head`) is not an error.
fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err).context("cannot write to standard output"),
        _ => Ok(()),
    }
}

/// The TOML file of every `serve` option at its default, generated from the
/// command line definition itself (names, help, environment variables) and
/// from the defaults as parsed (so values are typed as the file wants them).
fn config_file() -> anyhow::Result<Vec<u8>> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").context("no serve command")?;
    // The defaults alone: the environment of whoever runs this must not leak in.
    let pristine = serve.clone().mut_args(|arg| arg.env(None));
    let matches = pristine.try_get_matches_from(["serve"]).context("defaults do not parse")?;
    let defaults = Settings::from_arg_matches(&matches).context("defaults do not parse")?;
    let values = toml::Table::try_from(&defaults).context("defaults do not serialise")?;
    let mut out = String::from(concat!(
        "# Switchboard configuration: `switchboard serve --config /etc/switchboard/switchboard.toml`.\n",
        "#\n",
        "# Every option of `switchboard serve`, commented out at its default. Keys are the\n",
        "# long option names; a command-line flag or SWITCHBOARD_* variable wins over this file.\n",
        "# Generated by `switchboard config`; `switchboard serve --help` says the same.\n",
    ));
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "config" | "help" | "version") || arg.is_hide_set() {
            continue;
        }
        let key = id.replace('_', "-");
        out.push('\n');
        let mut help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        if !help.ends_with('.') {
            help.push('.');
        }
        let choices: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_owned()).collect();
        if !choices.is_empty() && choices != ["true", "false"] {
            help.push_str(&format!(" One of: {}.", choices.join(", ")));
        }
        for line in textwrap(&help, 86) {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# Environment: {}.\n", env.to_string_lossy()));
        }
        match values.get(&key) {
            Some(value) => {
                let line = toml::Table::from_iter([(key.clone(), value.clone())]).to_string();
                out.push_str(&format!("#{}\n", line.trim_end()));
            }
            None => out.push_str(&format!("# Unset by default.\n#{key} = \"...\"\n")),
        }
    }
    Ok(out.into_bytes())
}

/// Help text as comment lines: paragraphs kept, long lines wrapped at `width`.
fn textwrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.workers > 0 {
        runtime.worker_threads(settings.workers);
    }
    let runtime = runtime.enable_all().build().context("cannot start the async runtime")?;
    let listen = settings.listen;
    let tls = settings.tls_cert.is_some();
    runtime
        .block_on(async move {
            keep_hangup(tls);
            serve(settings, shutdown_signal()).await
        })
        .with_context(|| format!("cannot serve on {listen}"))?;
    Ok(())
}

/// SIGHUP reloads the TLS certificate (see `tls`); the systemd unit's ExecReload
/// sends it. Without TLS nothing listens for it and its default action would end
/// the server, so it is handled here, always: tokio keeps the handler installed
/// for the life of the process, and every listener gets the signal.
#[cfg(unix)]
fn keep_hangup(tls: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    if !tls {
                        tracing::info!("SIGHUP: nothing to reload (no TLS)");
                    }
                }
            });
        }
        Err(err) => tracing::warn!(%err, "cannot handle SIGHUP"),
    }
}

#[cfg(not(unix))]
fn keep_hangup(_tls: bool) {}
