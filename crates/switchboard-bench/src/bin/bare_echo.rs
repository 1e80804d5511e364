//! `switchboard-bench-bare-echo`: the seeds' echo (`Server received: <text>`)
//! built from nothing but the WebSocket library Switchboard uses (axum 0.8's
//! `ws`, tungstenite underneath), configured as Switchboard configures it: 4 KiB
//! read buffer, no write buffer, 64 KiB message limit, `TCP_NODELAY`, a listen
//! backlog of 4096. One task per connection that reads a frame and writes the
//! reply; no admission, rate limits, outbox or metrics. It is the limit of what
//! the library alone can do, for bench/compare.sh.
//!
//! ```text
//! switchboard-bench-bare-echo [--listen 127.0.0.1:0]
//! ```
//!
//! Prints `listening ADDR` on stdout once it accepts connections; stops on
//! SIGTERM or SIGINT.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpSocket;

/// Matches Switchboard's settings (crates/switchboard-server/src/app.rs).
const READ_BUFFER_SIZE: usize = 4 * 1024;
const MAX_MESSAGE_SIZE: usize = 64 * 1024;
const LISTEN_BACKLOG: u32 = 4096;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs an address")?.parse()?,
            "-h" | "--help" => {
                println!("switchboard-bench-bare-echo [--listen 127.0.0.1:0]: the bare-library echo server");
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

async fn upgrade(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .on_upgrade(echo)
}

/// Reads a frame, writes the reply. A close frame is answered by the library on
/// the next read, which then ends the loop.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => Message::Text(format!("Server received: {}", text.as_str()).into()),
            Message::Binary(data) => Message::Binary(data),
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
