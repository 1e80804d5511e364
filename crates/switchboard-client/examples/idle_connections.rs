//! Opens N signaling connections, joins each to a room, and holds them, printing
//! the server's resident memory per connection. A quick check of per-connection
//! memory; the full load generator measures this and more.
//!
//! ```text
//! cargo run --release -p switchboard-client --example idle_connections -- <server-pid> <ws-url> <count> [rooms]
//! ```

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_client::Client;

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, pid, url, count, rest @ ..] = args.as_slice() else {
        eprintln!("usage: idle_connections <server-pid> <ws-url> <count> [rooms]");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("count");
    let rooms: usize = rest.first().map_or(count / 10, |r| r.parse().expect("rooms")).max(1);

    let before = rss_kib(pid);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = Client::connect(url).await.expect("connect");
        client.send(&json!({"type": "join", "room": format!("room-{}", i % rooms)})).await.expect("join");
        client.recv().await.expect("joined");
        clients.push(client);
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per_connection = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "connections={count} rooms={rooms} rss_before_kib={before} rss_after_kib={after} per_connection_kib={per_connection:.2} connect_join_per_s={:.0}",
        count as f64 / elapsed.as_secs_f64()
    );
    drop(clients);
}
