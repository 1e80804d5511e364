//! HTTPS/WSS, and certificate reload without dropping connections.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::Server;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

type TlsSocket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A fresh self-signed certificate for localhost and 127.0.0.1: (cert PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem(), generated.cert.der().clone())
}

/// Opens `wss://localhost:PORT/ws`, trusting only `trusted`.
async fn connect(server: &Server, trusted: &CertificateDer<'static>) -> Result<TlsSocket, String> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (socket, _) = tokio_tungstenite::client_async(url, tls).await.map_err(|e| e.to_string())?;
    Ok(socket)
}

async fn next_json(socket: &mut TlsSocket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            _ => continue,
        }
    }
}

async fn assert_alive(socket: &mut TlsSocket) {
    socket.send(Message::text(r#"{"type":"ping","rid":"tls"}"#)).await.unwrap();
    assert_eq!(next_json(socket).await["type"], "pong");
}

/// Retries until a connection trusting only `cert` succeeds (the reload is asynchronous).
async fn connect_eventually(server: &Server, cert: &CertificateDer<'static>) -> TlsSocket {
    let mut last = String::new();
    for _ in 0..100 {
        match connect(server, cert).await {
            Ok(socket) => return socket,
            Err(err) => last = err,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never served the new certificate: {last}");
}

#[tokio::test]
async fn wss_works_and_certificates_reload_without_dropping_connections() {
    let dir = std::env::temp_dir().join(format!("switchboard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (pem_a, key_a, der_a) = certificate();
    std::fs::write(&cert_path, &pem_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();

    let server = Server::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--tls-reload-interval",
        "200ms",
    ]);
    let mut open = connect(&server, &der_a).await.expect("wss with the first certificate");
    assert_eq!(next_json(&mut open).await["type"], "welcome");

    // Plain HTTP on the TLS port is not answered as HTTP.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), plain.read_to_end(&mut reply)).await;
    assert!(!reply.starts_with(b"HTTP/"), "plain HTTP was served on the TLS port");

    // SIGHUP: a new certificate is served, the open connection lives on.
    let (pem_b, key_b, der_b) = certificate();
    std::fs::write(&cert_path, &pem_b).unwrap();
    std::fs::write(&key_path, &key_b).unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &server_pid(&server)]).status().unwrap();
    assert!(status.success());
    let mut fresh = connect_eventually(&server, &der_b).await;
    assert_eq!(next_json(&mut fresh).await["type"], "welcome");
    assert!(connect(&server, &der_a).await.is_err(), "the old certificate is no longer served");
    assert_alive(&mut open).await;

    // A file change alone (no signal) is picked up too.
    let (pem_c, key_c, der_c) = certificate();
    std::fs::write(&key_path, &key_c).unwrap();
    std::fs::write(&cert_path, &pem_c).unwrap();
    let mut third = connect_eventually(&server, &der_c).await;
    assert_eq!(next_json(&mut third).await["type"], "welcome");
    assert_alive(&mut open).await;
    assert_alive(&mut fresh).await;

    // Shutdown over TLS: close 1001 and exit 0, as over plain HTTP.
    let mut server = server;
    server.terminate();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), open.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(1001));
    assert_eq!(server.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
}

fn server_pid(server: &Server) -> String {
    server.pid().to_string()
}
