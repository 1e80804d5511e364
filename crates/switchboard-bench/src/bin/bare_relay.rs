//! `switchboard-bench-bare-relay`: the most a relay on Switchboard's WebSocket
//! stack can do per core. Built like the bare echo (src/bin/bare_echo.rs: axum
//! 0.8's `ws`, tungstenite underneath, 4 KiB read buffer, no write buffer, 64 KiB
//! message limit, `TCP_NODELAY`, a listen backlog of 4096), it groups
//! connections by URL path and forwards each frame, as it is, to the other
//! members of its group: a pair for the relay scenario (`/relay-N`), a room for
//! fanout (`/fanout-N`). No JSON, no peer ids, no rooms beyond the path, no
//! checks, rate limits, outbox or metrics: one task per connection that reads
//! the frames already there and writes them straight into the partners'
//! sockets, one flush per partner per batch.
//!
//! ```text
//! switchboard-bench-bare-relay [--listen 127.0.0.1:0]
//! ```
//!
//! Prints `listening ADDR` on stdout once it accepts connections; stops on
//! SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use anyhow::{bail, Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::any;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpSocket;

/// Matches Switchboard's settings (crates/switchboard-server/src/app.rs) and the bare echo.
const READ_BUFFER_SIZE: usize = 4 * 1024;
const MAX_MESSAGE_SIZE: usize = 64 * 1024;
const LISTEN_BACKLOG: u32 = 4096;
/// Frames read before the partners are flushed.
const MAX_BATCH: usize = 64;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs an address")?.parse()?,
            "-h" | "--help" => {
                println!("switchboard-bench-bare-relay [--listen 127.0.0.1:0]: the bare-library relay server");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (expected --listen ADDR)"),
        }
    }
    if !listen.ip().is_loopback() {
        bail!("--listen {listen}: the bench servers listen on loopback only");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(listen))
}

async fn serve(addr: SocketAddr) -> Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    println!("listening {}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().fallback(any(upgrade));
    axum::serve(listener, app).with_graceful_shutdown(stop()).await?;
    Ok(())
}

async fn stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn upgrade(upgrade: WebSocketUpgrade, uri: Uri) -> Response {
    let key = uri.path().to_owned();
    upgrade
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| relay(socket, key))
}

/// A member's sending half: written by the other members' tasks.
type Sink = Arc<tokio::sync::Mutex<SplitSink<WebSocket, Message>>>;

/// The connections to one path. The member list is replaced, never changed in
/// place, so a forwarder takes a snapshot with one reference count.
#[derive(Default)]
struct Group {
    members: Mutex<Arc<Vec<(u64, Sink)>>>,
}

impl Group {
    fn snapshot(&self) -> Arc<Vec<(u64, Sink)>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Vec<(u64, Sink)>)) -> usize {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::clone(&members);
        change(&mut next);
        let len = next.len();
        *members = Arc::new(next);
        len
    }
}

static GROUPS: LazyLock<Mutex<HashMap<String, Arc<Group>>>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Joins the group of `key`, forwards every frame to the other members until the
/// connection ends, then leaves.
async fn relay(socket: WebSocket, key: String) {
    let (sink, stream) = socket.split();
    let me = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let group = GROUPS.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
    group.update(|members| members.push((me, Arc::new(tokio::sync::Mutex::new(sink)))));
    forward(stream, me, &group).await;
    let left = group.update(|members| members.retain(|(id, _)| *id != me));
    if left == 0 {
        let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        if groups.get(&key).is_some_and(|g| Arc::ptr_eq(g, &group) && g.snapshot().is_empty()) {
            groups.remove(&key);
        }
    }
}

/// Reads the frames already there (at least one), writes them to every other
/// member and flushes each once; repeats until the connection ends. A close
/// frame is answered by the library on the next read, which then ends the loop.
async fn forward(mut stream: SplitStream<WebSocket>, me: u64, group: &Group) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    while open {
        match stream.next().await {
            Some(Ok(message)) => batch.push(message),
            _ => break,
        }
        while batch.len() < MAX_BATCH {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(_) => {
                    open = false;
                    break;
                }
                None => break,
            }
        }
        batch.retain(|m| matches!(m, Message::Text(_) | Message::Binary(_)));
        if !batch.is_empty() {
            for (id, sink) in group.snapshot().iter() {
                if *id == me {
                    continue;
                }
                let mut sink = sink.lock().await;
                let sent: Result<(), axum::Error> = async {
                    for message in &batch {
                        sink.feed(message.clone()).await?;
                    }
                    sink.flush().await
                }
                .await;
                // A partner that has gone is skipped.
                drop(sent);
            }
        }
        batch.clear();
    }
}
