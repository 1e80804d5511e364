//! Smoke test: every scenario of the load generator, a few hundred connections
//! for about two seconds, against the real `switchboard` binary on a free loopback
//! port. Asserts correctness only (exit status 0, nothing lost, duplicated or out
//! of order, some messages checked), never timing: CI machines are shared.
//!
//! The server binary comes from another crate, so Cargo does not build it for
//! this test: run `cargo build -p switchboard-server` first (scripts/test builds
//! every binary before testing).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one benchmark run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The `switchboard` binary: beside this crate's binary, or in the workspace's
/// `target/debug`.
fn server_binary() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_BIN_EXE_switchboard-bench")).with_file_name("switchboard");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/switchboard");
    for candidate in [beside, workspace] {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the switchboard server binary is not built (looked beside {} and in target/debug): \
         run `cargo build -p switchboard-server` first",
        env!("CARGO_BIN_EXE_switchboard-bench")
    );
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(server_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--rate-limit-messages", "0", "--rate-limit-bytes", "0"])
            // Every benchmark connection comes from 127.0.0.1.
            .args(["--max-connections-per-ip", "10000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the switchboard server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = log.clone();
        // Keeps reading until the server exits, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["fields"]["message"] == "listening" {
                        let _ = addr_tx.send(entry["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
                let mut lines = lines.lock().unwrap();
                if lines.len() < 200 {
                    lines.push(line);
                }
            }
        });
        match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Server { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not log `listening`; its log:\n{}", log.lock().unwrap().join("\n"));
            }
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of one load generator run.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the load generator with `args`, killing it after [`RUN_TIMEOUT`].
fn bench(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard-bench");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for switchboard-bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchboard-bench {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { success: status.success(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Runs one scenario for two seconds with `--json` against a fresh server and
/// checks the verdict; returns the JSON report.
fn scenario(args: &[&str]) -> Value {
    let server = Server::start();
    let url = server.url();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--url", &url, "--duration", "2s", "--json"]);
    let run = bench(&full);
    let context = || {
        format!(
            "switchboard-bench {}\n--- stdout\n{}\n--- stderr\n{}\n--- server log (first lines)\n{}",
            full.join(" "),
            run.stdout,
            run.stderr,
            server.log.lock().unwrap().join("\n")
        )
    };
    assert!(run.success, "the run failed\n{}", context());
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", context()));
    let check = &report["check"];
    for field in ["lost", "duplicated", "out_of_order", "wrong_sender", "errors", "unexpected", "connection_failures"] {
        assert_eq!(check[field], 0, "check.{field} is not 0\n{}", context());
    }
    assert!(check["messages"].as_u64().unwrap_or(0) > 0, "no messages were checked\n{}", context());
    assert!(report["throughput"]["operations"].as_u64().unwrap_or(0) > 0, "nothing completed\n{}", context());
    assert_eq!(report["ok"], true, "{}", context());
    report
}

#[test]
fn idle_holds_connections_and_measures_server_memory() {
    let server = Server::start();
    let pid = server.child.id().to_string();
    let url = server.url();
    let run = bench(&[
        "idle",
        "--connections",
        "300",
        "--rooms",
        "30",
        "--server-pid",
        &pid,
        "--url",
        &url,
        "--duration",
        "2s",
        "--json",
    ]);
    assert!(run.success, "idle failed:\n{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    // 30 rooms of 10: each owes 10*9/2 peer-joined; plus 300 joined.
    assert_eq!(report["results"]["peer_joined"], 30 * 45, "{}", run.stdout);
    assert_eq!(report["check"]["messages"], 300 + 30 * 45, "{}", run.stdout);
    assert_eq!(report["check"]["lost"], 0);
    assert_eq!(report["check"]["duplicated"], 0);
    assert!(report["results"]["server_rss_after_kib"].as_u64().unwrap_or(0) > 0, "{}", run.stdout);
    assert!(report["results"]["server_rss_per_connection_kib"].is_number(), "{}", run.stdout);
}

#[test]
fn echo_round_trips() {
    scenario(&["echo", "--clients", "50"]);
}

#[test]
fn relay_closed_loop_mixed_sizes_with_chart() {
    let svg = std::env::temp_dir().join(format!("switchboard-bench-smoke-{}.svg", std::process::id()));
    let svg_arg = svg.to_str().unwrap().to_owned();
    let report = scenario(&["relay", "--pairs", "100", "--size-mix", "mixed", "--svg", &svg_arg]);
    assert_eq!(report["params"]["mode"], "closed");
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    let _ = std::fs::remove_file(&svg);
    assert!(chart.starts_with("<svg") && chart.contains("relay on switchboard"), "not the chart: {chart:.200}");
}

#[test]
fn relay_open_loop_sdp() {
    let report = scenario(&["relay", "--pairs", "100", "--size-mix", "sdp", "--rate", "2000"]);
    assert_eq!(report["params"]["mode"], "open");
    assert!(report["service_latency_us"]["count"].as_u64().unwrap_or(0) > 0);
    // The pacer thread (the default) sent every message and says how late.
    let pacer = &report["pacer"];
    assert_eq!(pacer["kind"], "thread", "{report}");
    assert_eq!(pacer["spin_us"], 150, "{report}");
    assert_eq!(pacer["lateness_us"]["count"], report["results"]["sent"], "{report}");
    for field in ["p50", "p99", "max"] {
        assert!(pacer["lateness_us"][field].is_u64(), "pacer.lateness_us.{field}: {report}");
    }
    assert!(report["cpus"]["load_generator"].is_string(), "{report}");
}

#[test]
fn relay_open_loop_on_the_tokio_pacer() {
    let report = scenario(&["relay", "--pairs", "20", "--rate", "1000", "--pacer", "tokio"]);
    assert_eq!(report["pacer"]["kind"], "tokio", "{report}");
    assert!(report["pacer"]["spin_us"].is_null(), "{report}");
    assert_eq!(report["pacer"]["lateness_us"]["count"], report["results"]["sent"], "{report}");
}

#[test]
fn fanout_closed_and_open_loop() {
    let report = scenario(&["fanout", "--room-size", "20", "--rooms", "10"]);
    // Every broadcast reaches the 19 others.
    assert_eq!(
        report["throughput"]["operations"].as_u64().unwrap(),
        report["results"]["broadcasts"].as_u64().unwrap() * 19
    );
    scenario(&["fanout", "--room-size", "10", "--rooms", "5", "--rate", "500", "--size-mix", "mixed"]);
}

#[test]
fn churn_cycles() {
    let report = scenario(&["churn", "--concurrency", "20"]);
    let cycles = report["throughput"]["operations"].as_u64().unwrap();
    assert_eq!(report["results"]["distinct_peer_ids"].as_u64().unwrap(), cycles, "a peer id was handed out twice");
}

/// bench/compare.sh's `switchboard-peerjs`: the peerjs-server adapter against
/// the Switchboard binary's PeerJS dialect. Every message once, in order, from
/// the right peer; every connection welcomed with `OPEN` and held.
#[test]
fn peerjs_adapter_drives_the_switchboard_peerjs_dialect() {
    let relay = scenario(&["relay", "--adapter", "peerjs", "--pairs", "50", "--size-mix", "mixed"]);
    assert_eq!(relay["params"]["mode"], "closed", "{relay}");
    assert_eq!(relay["throughput"]["operations"], relay["results"]["sent"], "{relay}");
    let open = scenario(&["relay", "--adapter", "peerjs", "--pairs", "20", "--rate", "1000"]);
    assert_eq!(open["pacer"]["lateness_us"]["count"], open["results"]["sent"], "{open}");

    let server = Server::start();
    let pid = server.child.id().to_string();
    let idle = checked_run(
        &server.url(),
        &["idle", "--adapter", "peerjs", "-n", "200", "--rooms", "20", "--server-pid", &pid, "--duration", "1s"],
    );
    // No rooms, so no membership events: one `OPEN` per connection.
    assert_eq!(idle["check"]["messages"], 200, "{idle}");
    assert_eq!(idle["check"]["connection_failures"], 0, "{idle}");
    assert!(idle["results"]["server_rss_per_connection_kib"].is_number(), "{idle}");
    drop(server);

    let churn = scenario(&["churn", "--adapter", "peerjs", "--concurrency", "10"]);
    assert_eq!(churn["params"]["cycle"], "connect, join, close", "{churn}");
}

#[test]
fn refuses_anything_but_loopback() {
    let run = bench(&["echo", "--clients", "1", "--url", "ws://10.1.2.3:8080", "--duration", "1s"]);
    assert!(!run.success);
    assert!(run.stderr.contains("not a loopback address"), "{}", run.stderr);
}

/// One of this crate's bare-library servers (echo or relay), killed when dropped.
struct BareEcho {
    child: Child,
    url: String,
}

impl BareEcho {
    fn start() -> BareEcho {
        BareEcho::start_binary(env!("CARGO_BIN_EXE_switchboard-bench-bare-echo"))
    }

    fn start_binary(binary: &str) -> BareEcho {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read its first line");
        let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("not `listening ADDR`: {line:?}"));
        BareEcho { url: format!("ws://{addr}"), child }
    }
}

impl Drop for BareEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bare_echo_server_echoes_and_holds_idle_connections() {
    let server = BareEcho::start();
    let run =
        bench(&["echo", "--adapter", "bare", "--clients", "20", "--url", &server.url, "--duration", "1s", "--json"]);
    assert!(run.success, "echo against the bare server failed:\n{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], true, "{}", run.stdout);
    assert!(report["throughput"]["operations"].as_u64().unwrap_or(0) > 0);

    let pid = server.child.id().to_string();
    let run = bench(&[
        "idle",
        "--adapter",
        "bare",
        "-n",
        "100",
        "--server-pid",
        &pid,
        "--url",
        &server.url,
        "--duration",
        "1s",
        "--json",
    ]);
    assert!(run.success, "idle against the bare server failed:\n{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["check"]["messages"], 100, "{}", run.stdout);
    assert!(report["results"]["server_rss_per_connection_kib"].is_number(), "{}", run.stdout);
}

/// Runs the load generator against `url` with `args` and checks the verdict.
fn checked_run(url: &str, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["--url", url, "--json"]);
    let run = bench(&full);
    assert!(run.success, "switchboard-bench {full:?} failed:\n{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], true, "{}", run.stdout);
    assert!(report["throughput"]["operations"].as_u64().unwrap_or(0) > 0, "{}", run.stdout);
    report
}

#[test]
fn bare_relay_server_relays_pairs_and_fans_out() {
    let server = BareEcho::start_binary(env!("CARGO_BIN_EXE_switchboard-bench-bare-relay"));
    let pid = server.child.id().to_string();
    let run = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--adapter", "bare-relay", "--duration", "1s"]);
        checked_run(&server.url, &args)
    };
    let closed = run(&["relay", "--pairs", "20", "--server-pid", &pid]);
    assert_eq!(closed["params"]["mode"], "closed");
    assert!(closed["results"]["server_cpu_us_per_op"].is_number(), "{closed}");
    // Every message sent arrived, once, in order, from the partner.
    assert_eq!(closed["throughput"]["operations"], closed["results"]["sent"], "{closed}");
    let open = run(&["relay", "--pairs", "20", "--rate", "1000"]);
    assert_eq!(open["pacer"]["lateness_us"]["count"], open["results"]["sent"], "{open}");
    let fanout = run(&["fanout", "-k", "10", "-m", "3"]);
    assert_eq!(
        fanout["throughput"]["operations"].as_u64().unwrap(),
        fanout["results"]["broadcasts"].as_u64().unwrap() * 9,
        "{fanout}"
    );
    // No rooms, ids or echo: the other scenarios are not applicable.
    let run = bench(&["echo", "--adapter", "bare-relay", "--clients", "1", "--url", &server.url, "--json"]);
    assert!(!run.success);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert!(report["unsupported"].as_str().unwrap_or("").contains("bare relay"), "{}", run.stdout);
}

#[test]
fn a_scenario_the_server_cannot_run_is_not_applicable() {
    // No server needed: the load generator refuses before connecting.
    let run = bench(&["relay", "--adapter", "bare", "--pairs", "1", "--url", "ws://127.0.0.1:9", "--json"]);
    assert!(!run.success);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["scenario"], "relay");
    assert!(report["unsupported"].as_str().unwrap_or("").contains("no peers"), "{}", run.stdout);
    let run = bench(&["fanout", "--adapter", "matchbox", "-k", "2", "-m", "1", "--url", "ws://127.0.0.1:9", "--json"]);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert!(report["unsupported"].as_str().unwrap_or("").contains("broadcast"), "{}", run.stdout);
}

#[test]
fn compare_writes_the_report_from_results() {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = bench(&["fanout", "--adapter", "peerjs", "-k", "2", "-m", "1", "--url", "ws://127.0.0.1:9", "--json"]);
    std::fs::write(dir.join("fanout.peerjs.json"), &run.stdout).unwrap();
    std::fs::write(dir.join("echo.seed.json"), r#"{"failed": "seed did not start"}"#).unwrap();
    // Three fixed-rate runs of one target: best and median per percentile.
    for (rep, p99) in [(1, 900), (2, 300), (3, 500)] {
        let report = serde_json::json!({
            "scenario": "relay", "duration_s": 5.0, "ok": true,
            "params": {"pairs": 100, "size_mix": "mixed", "rate": 20000},
            "latency_us": {"p50": 100 + rep, "p99": p99, "p999": 2 * p99},
            "service_latency_us": {"p99": 90},
            "pacer": {"kind": "thread", "lateness_us": {"p50": 1, "p99": 4 + rep, "max": 30 * rep}},
            "results": {"sent": 100000},
            "throughput": {"value": 19_800.0 + rep as f64 * 100.0, "unit": "msgs/s"},
            "cpus": {"load_generator": "1", "server": "0"},
        });
        std::fs::write(dir.join(format!("relay-rate-20000.switchboard.{rep}.json")), report.to_string()).unwrap();
    }
    let out = dir.join("benchmarks.md");
    let svg = dir.join("benchmarks.svg");
    let run = bench(&[
        "compare",
        "--results",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--setting",
        "date=today",
        "--setting",
        "pinning=server on CPU 0, load generator on CPU 1 (taskset -c)",
    ]);
    assert!(run.success, "{}", run.stderr);
    let markdown = std::fs::read_to_string(&out).unwrap();
    let chart = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(markdown.contains("| peerjs-server | n/a: the PeerJS protocol has no rooms"), "{markdown}");
    assert!(markdown.contains("**run failed**: seed did not start"), "{markdown}");
    assert!(markdown.contains("| idle memory ≤ 2 KiB"), "{markdown}");
    assert!(markdown.contains("## The targets of issue #16"), "{markdown}");
    assert!(markdown.contains("| pinning | server on CPU 0, load generator on CPU 1"), "{markdown}");
    assert!(markdown.contains("server 0, load generator 1"), "{markdown}");
    assert!(
        markdown.contains(
            "| 20,000 msgs/s | Switchboard | 3 | 101 µs / 102 µs | 300 µs / 500 µs | 600 µs / 1.00 ms | 90 µs | 6 µs / 90 µs | 100% | ok |"
        ),
        "{markdown}"
    );
    assert!(markdown.contains("relay p99 from the due time ≤ 250 µs at 20,000 msgs/s | best 300 µs, median 500 µs of 3 runs | **not met**"), "{markdown}");
    assert!(chart.starts_with("<svg"));
}
