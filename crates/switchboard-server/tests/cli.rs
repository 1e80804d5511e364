//! The binary's packaging commands: `--version`, `config` (the shipped
//! deploy/switchboard.toml), `completions` and `man`.

use std::path::Path;
use std::process::Command;

use clap::{Args, FromArgMatches};
use switchboard_server::Settings;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(BIN).args(args).envs(env.iter().copied()).output().expect("run switchboard");
    assert!(output.status.success(), "switchboard {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn shipped_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The settings as clap parses them with no flags and no environment.
fn defaults() -> Settings {
    let command = Settings::augment_args(clap::Command::new("serve")).mut_args(|arg| arg.env(None));
    Settings::from_arg_matches(&command.try_get_matches_from(["serve"]).unwrap()).unwrap()
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = run(&["--version"], &[]);
    let line = out.trim_end();
    let rest = line.strip_prefix(&format!("switchboard {} (commit ", env!("CARGO_PKG_VERSION"))).unwrap_or_else(|| {
        panic!("`{line}` is not `switchboard {} (commit ...)`", env!("CARGO_PKG_VERSION"));
    });
    let commit = rest.strip_suffix(')').expect("closing parenthesis");
    assert!(
        commit == "unknown" || (commit.len() == 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit `{commit}`"
    );
}

#[test]
fn the_shipped_config_file_is_what_switchboard_config_prints() {
    let printed = run(&["config"], &[]);
    assert!(
        printed == shipped_config(),
        "deploy/switchboard.toml is stale: run `target/debug/switchboard config > deploy/switchboard.toml`"
    );
    // The environment of whoever generates it does not leak into it.
    let with_env = run(&["config"], &[("SWITCHBOARD_LISTEN", "0.0.0.0:1"), ("SWITCHBOARD_WORKERS", "3")]);
    assert_eq!(printed, with_env);
}

#[test]
fn the_shipped_config_file_names_every_option_at_its_default() {
    let text = shipped_config();
    // Uncomment every `#key = value` line (the unset options show `"..."`).
    let uncommented: String = text
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .filter(|line| line.contains(" = ") && !line.starts_with(' ') && !line.ends_with("\"...\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let parsed: Settings = toml::from_str(&uncommented).unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
    assert_eq!(format!("{parsed:?}"), format!("{:?}", defaults()), "a default in the file differs");
    let command = Settings::augment_args(clap::Command::new("serve"));
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str().replace('_', "-");
        let commented = text.lines().any(|line| line.starts_with(&format!("#{key} = ")));
        assert!(commented, "option `{key}` is missing from deploy/switchboard.toml");
    }
}

#[test]
fn completions_cover_the_subcommands_and_options() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell], &[]);
        for word in ["serve", "token", "max-message-size", "completions"] {
            assert!(script.contains(word), "{shell} completion lacks `{word}`");
        }
    }
    // bash is everywhere: the script must at least parse.
    let bash = run(&["completions", "bash"], &[]);
    let dir = std::env::temp_dir().join(format!("switchboard-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard.bash");
    std::fs::write(&path, bash).unwrap();
    let status = Command::new("bash").arg("-n").arg(&path).status().expect("bash");
    assert!(status.success(), "bash -n refused the completion script");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_man_page_documents_serve_options() {
    let page = run(&["man"], &[]);
    assert!(page.contains(".TH switchboard 1"), "no title");
    for text in [r"max\-message\-size", r"\-\-redis", "SWITCHBOARD SERVE", "SWITCHBOARD TOKEN"] {
        assert!(page.contains(text), "the man page lacks `{text}`");
    }
}
