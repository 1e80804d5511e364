//! Test support: the real `switchboard` binary in its own process, on a free
//! loopback port, driven over real TCP.

#![allow(dead_code)]

pub mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running server process. Killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `switchboard serve` with extra flags.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// A node on `redis` that hands its resumable sessions over when stopped
    /// (close 1012, no shutdown delay), with heartbeats of `ttl`, a 500 ms
    /// Redis timeout and a resume grace period of `grace`; then `extra` flags.
    pub fn handing_over(redis: &redis::Redis, ttl: &str, grace: &str, extra: &[&str]) -> Server {
        let url = redis.url();
        let mut args = vec![
            "--redis",
            url.as_str(),
            "--node-ttl",
            ttl,
            "--redis-timeout",
            "500ms",
            "--resume-grace",
            grace,
            "--shutdown-close-code",
            "1012",
            "--shutdown-delay",
            "0s",
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Starts `switchboard serve` with extra flags and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) {
                    if entry["fields"]["message"] == "listening" {
                        let addr = entry["fields"]["addr"].as_str().unwrap_or_default().to_owned();
                        let _ = addr_tx.send(addr);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Server { child, addr, log }
    }

    /// `ws://ADDR{path}`
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A signaling client on `/ws`, past its `welcome`.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url("/ws")).await.expect("connect to /ws")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL: no clean-up of any kind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log lines containing `needle`, once there are at least `count` of
    /// them (polled for up to 5 s): the server writes a line after the frame
    /// the test reacts to, and a reader thread carries it here.
    pub async fn wait_log_lines(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads one metric's value from `/metrics` (`name` includes labels, as printed).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.addr, "/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map(|value| value.trim().parse().expect("metric value"))
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{body}"))
    }

    /// Waits (up to 10 s) until the node reports its Redis broker up: it
    /// registers on its first heartbeat.
    pub async fn wait_broker_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("switchboard_broker_up").await != 1.0 {
            assert!(Instant::now() < deadline, "broker never came up:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a metric until it equals `expected`, for up to 5 s.
    pub async fn wait_metric(&self, name: &str, expected: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = self.metric(name).await;
            if value == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{name} is {value}, expected {expected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.logs());
        }
    }
}

/// A plain HTTP/1.1 GET over a fresh TCP connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(addr, path, "").await;
    (status, body)
}

/// A plain HTTP/1.1 GET with extra header lines: (status, lower-cased head, body).
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Opens an HTTP request whose response is a stream; returns the socket after the request is sent.
pub async fn http_open(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.expect("write request");
    stream
}

/// Reads from a streaming response until `needle` has appeared `count` times.
pub async fn read_until(stream: &mut TcpStream, needle: &str, count: usize) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Duration::from_secs(5);
    while seen.matches(needle).count() < count {
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got:\n{seen}"))
            .expect("read");
        assert!(n > 0, "stream ended before {needle:?}; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}
