//! TURN credentials from `welcome` and `/ice-servers`, tried against a real coturn.
//!
//! Needs coturn's `turnserver` and `turnutils_uclient` (Debian package `coturn`;
//! `scripts/test` installs it).

mod support;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::Server;

const SECRET: &str = "turn-rest-secret";

/// A coturn server on a free loopback port, checking REST credentials against `SECRET`.
struct Coturn {
    child: Child,
    port: u16,
}

impl Coturn {
    fn start() -> Coturn {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("turnserver")
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--use-auth-secret"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--static-auth-secret={SECRET}"))
            .args(["--realm=switchboard.test", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers"])
            .args(["--log-file=stdout", "--simple-log", "--no-stdout-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver from the coturn package (scripts/test installs it)");
        // coturn has no readiness signal; give it a moment to open its sockets.
        std::thread::sleep(Duration::from_millis(700));
        Coturn { child, port }
    }

    /// Allocates a relay with these credentials and sends a few packets through
    /// it. Returns (allocated and relayed, output).
    fn allocate(&self, username: &str, credential: &str) -> (bool, String) {
        let output = Command::new("turnutils_uclient")
            .args(["-y", "-n", "2", "-m", "1", "-e", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", username, "-w", credential, "127.0.0.1"])
            .output()
            .expect("turnutils_uclient from the coturn package");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        // The last progress line counts the packets that came back through the relay.
        let received = text
            .rsplit("tot_recv_msgs=")
            .next()
            .filter(|_| text.contains("tot_recv_msgs="))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        let relayed = received > 0 && !text.contains("Cannot complete Allocation");
        (output.status.success() && relayed, text)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (username, credential) of the TURN entry in an `iceServers` array.
fn turn_credentials(ice_servers: &Value) -> (String, String) {
    let turn = ice_servers
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["urls"][0].as_str().is_some_and(|u| u.starts_with("turn:"))))
        .unwrap_or_else(|| panic!("no TURN entry in {ice_servers}"));
    (turn["username"].as_str().unwrap().to_owned(), turn["credential"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn issued_turn_credentials_allocate_on_coturn_and_tampered_or_expired_ones_do_not() {
    let coturn = Coturn::start();
    let turn_url = format!("turn:127.0.0.1:{}", coturn.port);
    let server =
        Server::start(&["--ice-server", &turn_url, "--ice-server", "stun:127.0.0.1:3478", "--turn-secret", SECRET]);

    let client = server.client().await;
    let (username, credential) = {
        let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("/ws")).await.unwrap();
        let welcome = match futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => serde_json::from_str::<Value>(&text).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(welcome["iceServers"][0], serde_json::json!({"urls": ["stun:127.0.0.1:3478"]}));
        let (username, credential) = turn_credentials(&welcome["iceServers"]);
        let (expiry, user) = username.split_once(':').expect("expiry:user");
        assert_eq!(user, welcome["id"].as_str().unwrap(), "anonymous peers are named by their peer id");
        let expiry: u64 = expiry.parse().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!((now + 11 * 3600..=now + 13 * 3600).contains(&expiry), "12 h by default");
        (username, credential)
    };
    drop(client);

    let (ok, output) = coturn.allocate(&username, &credential);
    assert!(ok, "issued credentials must allocate:\n{output}");

    let mut tampered = credential.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let (ok, output) = coturn.allocate(&username, std::str::from_utf8(&tampered).unwrap());
    assert!(!ok, "a tampered credential must fail:\n{output}");
    let later = username.replacen(username.split(':').next().unwrap(), "9999999999", 1);
    let (ok, output) = coturn.allocate(&later, &credential);
    assert!(!ok, "a username with another expiry must fail:\n{output}");

    // /ice-servers gives the same kind of credentials over HTTP.
    let (status, body) = support::http_get(server.addr, "/ice-servers").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    let (username, credential) = turn_credentials(&body["iceServers"]);
    assert!(coturn.allocate(&username, &credential).0, "credentials from /ice-servers allocate");

    // Credentials that have expired are refused by coturn.
    let short = Server::start(&["--ice-server", &turn_url, "--turn-secret", SECRET, "--turn-ttl", "1s"]);
    let (_, body) = support::http_get(short.addr, "/ice-servers").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    let (username, credential) = turn_credentials(&body["iceServers"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ok, output) = coturn.allocate(&username, &credential);
    assert!(!ok, "expired credentials must fail:\n{output}");
}
