//! Two unmodified `matchbox_socket` 0.14 peers reach `PeerState::Connected`
//! through a matchbox signaling server and exchange a packet each way over a
//! reliable data channel.
//!
//! Usage: matchbox-native-compat ROOM_URL_A [ROOM_URL_B]
//!   (B defaults to A; give two URLs to cross two Switchboard nodes)
//! Exits 0 and prints `ok ...` on success, 1 with a reason otherwise (60 s budget).

use futures::{FutureExt, select};
use matchbox_socket::{PeerState, RtcIceServerConfig, WebRtcSocket, WebRtcSocketBuilder};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn socket(url: &str) -> (WebRtcSocket, matchbox_socket::MessageLoopFuture) {
    WebRtcSocketBuilder::new(url)
        // No STUN/TURN: host candidates only (inside the test's network namespace).
        .ice_server(RtcIceServerConfig { urls: vec![], username: None, credential: None })
        .add_reliable_channel()
        .build()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url_a) = args.first().cloned() else {
        eprintln!("usage: matchbox-native-compat ROOM_URL_A [ROOM_URL_B]");
        return ExitCode::from(2);
    };
    let url_b = args.get(1).cloned().unwrap_or_else(|| url_a.clone());
    let deadline = Instant::now() + Duration::from_secs(60);

    let (mut a, loop_a) = socket(&url_a);
    let loop_a = loop_a.fuse();
    futures::pin_mut!(loop_a);
    let mut b: Option<WebRtcSocket> = None;
    let mut loop_b = futures::future::Fuse::terminated();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut a_got, mut b_got) = (None::<String>, None::<String>);
    let (mut a_connected, mut b_connected) = (false, false);

    loop {
        select! {
            r = loop_a => { eprintln!("peer A's message loop ended: {r:?}"); return ExitCode::FAILURE; }
            r = loop_b => { eprintln!("peer B's message loop ended: {r:?}"); return ExitCode::FAILURE; }
            _ = tick.tick().fuse() => {}
        }
        if Instant::now() > deadline {
            eprintln!("timed out: A connected {a_connected}, B connected {b_connected}, A got {a_got:?}, B got {b_got:?}");
            return ExitCode::FAILURE;
        }
        // B starts once A has its id, so A is the earlier peer of the room.
        if b.is_none() && a.id().is_some() {
            let (sb, lb) = socket(&url_b);
            b = Some(sb);
            loop_b = lb.fuse();
        }
        for (peer, state) in a.update_peers() {
            eprintln!("A: peer {peer} {state:?}");
            if state == PeerState::Connected {
                a_connected = true;
                a.channel_mut(0).send(b"hello from a".to_vec().into_boxed_slice(), peer);
            }
        }
        for (_, packet) in a.channel_mut(0).receive() {
            a_got = Some(String::from_utf8_lossy(&packet).into_owned());
        }
        if let Some(b) = b.as_mut() {
            for (peer, state) in b.update_peers() {
                eprintln!("B: peer {peer} {state:?}");
                if state == PeerState::Connected {
                    b_connected = true;
                    b.channel_mut(0).send(b"hello from b".to_vec().into_boxed_slice(), peer);
                }
            }
            for (_, packet) in b.channel_mut(0).receive() {
                b_got = Some(String::from_utf8_lossy(&packet).into_owned());
            }
        }
        if a_got.as_deref() == Some("hello from b") && b_got.as_deref() == Some("hello from a") {
            let b_id = b.as_mut().and_then(|b| b.id());
            println!("ok A={:?} B={:?}: A got {a_got:?}, B got {b_got:?}", a.id(), b_id);
            return ExitCode::SUCCESS;
        }
    }
}
