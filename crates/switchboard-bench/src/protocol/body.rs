//! What the load generator puts in a relayed or broadcast body, whatever the
//! server's envelope: its own fields (`seq`, `ts`: due time, `st`: send time) and
//! padding that looks like what a browser sends (an SDP string, or an
//! RTCIceCandidateInit), up to the size the scenario asked for. Every adapter
//! writes its envelope's opening, then [`push_body`], then its closing.

use std::fmt::Write as _;
use std::sync::LazyLock;

use serde::Deserialize;

use super::{BodyKind, Outgoing, Stamp};

/// Appends `"seq":S,"ts":T,"st":U,` and the padded body for `message` to `frame`,
/// then `closing` (the envelope's closing brackets), so that the whole frame is
/// about `message.size` bytes.
pub fn push_body(frame: &mut String, message: &Outgoing, closing: &str) {
    let Stamp { seq, due_us, sent_us } = message.stamp;
    let _ = write!(frame, r#""seq":{seq},"ts":{due_us},"st":{sent_us},"#);
    match message.kind {
        BodyKind::Sdp | BodyKind::Signal => {
            const TAIL: &str = r#"","sdpType":"offer""#;
            frame.push_str(r#""sdp":""#);
            frame.push_str(sdp_pad(message.size.saturating_sub(frame.len() + TAIL.len() + closing.len())));
            frame.push_str(TAIL);
        }
        BodyKind::Candidate => {
            const HEAD: &str = r#""candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 "#;
            const TAIL: &str = r#" typ host generation 0","sdpMid":"0","sdpMLineIndex":0}"#;
            frame.push_str(HEAD);
            frame.push_str(digit_pad(message.size.saturating_sub(frame.len() + TAIL.len() + closing.len()).max(4)));
            frame.push_str(TAIL);
        }
    }
    frame.push_str(closing);
}

/// Appends `"seq":S,"ts":T,"st":U,"pad":"..."` and `closing`: a broadcast body.
pub fn push_broadcast_body(frame: &mut String, message: &Outgoing, closing: &str) {
    let Stamp { seq, due_us, sent_us } = message.stamp;
    let _ = write!(frame, r#""seq":{seq},"ts":{due_us},"st":{sent_us},"pad":""#);
    frame.push_str(sdp_pad(message.size.saturating_sub(frame.len() + 1 + closing.len())));
    frame.push('"');
    frame.push_str(closing);
}

/// The load generator's fields in a body; everything else is skipped unread.
#[derive(Deserialize)]
pub struct BodyStamp {
    seq: Option<u64>,
    ts: Option<u64>,
    st: Option<u64>,
}

impl BodyStamp {
    /// The stamp, when all three fields are there.
    pub fn stamp(&self) -> Option<Stamp> {
        match (self.seq, self.ts, self.st) {
            (Some(seq), Some(due_us), Some(sent_us)) => Some(Stamp { seq, due_us, sent_us }),
            _ => None,
        }
    }

    /// The stamp in a JSON object's text, if any.
    pub fn of(json: &str) -> Option<Stamp> {
        serde_json::from_str::<BodyStamp>(json).ok().and_then(|body| body.stamp())
    }
}

/// `{"type":KIND,"target":TO,<body>}`: a relay frame in the seeds' shape, which
/// Switchboard shares.
pub fn typed_relay(kind: &str, to: &str, message: &Outgoing) -> String {
    let mut frame = String::with_capacity(message.size + 64);
    frame.push_str(r#"{"type":""#);
    frame.push_str(kind);
    frame.push_str(r#"","target":"#);
    frame.push_str(&json_string(to));
    frame.push(',');
    push_body(&mut frame, message, "}");
    frame
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

/// At most 300 characters of `text`, for error messages.
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// 22 random URL-safe characters: a peer id for servers where the client picks it.
pub fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..22).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// SDP-looking padding: real lines, with `\r\n` escaped as JSON writes them.
static SDP_PAD: LazyLock<String> = LazyLock::new(|| {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0 1\\r\\na=extmap-allow-mixed\\r\\na=msid-semantic: WMS stream\\r\\n",
    );
    let mut line = 0;
    while sdp.len() < 70_000 {
        let _ = write!(
            sdp,
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\\r\\nc=IN IP4 0.0.0.0\\r\\n\
             a=rtcp:9 IN IP4 0.0.0.0\\r\\na=ice-ufrag:EsAw{line:04}\\r\\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\\r\\n\
             a=fingerprint:sha-256 0D:34:A4:9B:29:B7:4A:35:B7:9F:C3:2C:AD:3E:7C:E5:2D:30:A2:3B:65:1D:8C:5F:6E:6B:6C:9A:A4:CC:E5:{:02X}\\r\\n\
             a=setup:actpass\\r\\na=mid:{line}\\r\\na=sendrecv\\r\\na=rtcp-mux\\r\\na=rtpmap:111 opus/48000/2\\r\\n\
             a=fmtp:111 minptime=10;useinbandfec=1\\r\\na=ssrc:{} cname:benchbenchbench{line}\\r\\n",
            line % 256,
            3_000_000_000u64 + line as u64 * 7919,
        );
        line += 1;
    }
    sdp
});

/// At most `len` bytes of SDP padding, never cut inside an escape.
pub fn sdp_pad(len: usize) -> &'static str {
    let pad = &SDP_PAD[..len.min(SDP_PAD.len())];
    pad.trim_end_matches('\\')
}

/// `len` digits (at most 64 KiB), for a candidate's port-and-more field.
fn digit_pad(len: usize) -> &'static str {
    static DIGITS: LazyLock<String> = LazyLock::new(|| "5000012345".repeat(6554));
    &DIGITS[..len.min(DIGITS.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: BodyKind, size: usize) -> Outgoing {
        Outgoing { kind, stamp: Stamp { seq: 7, due_us: 1000, sent_us: 1200 }, size }
    }

    #[test]
    fn padding_never_breaks_json() {
        for len in 0..600 {
            let text = format!("\"{}\"", sdp_pad(len));
            let value: String = serde_json::from_str(&text).unwrap_or_else(|e| panic!("len {len}: {e}"));
            assert!(value.len() <= len);
        }
        assert!(sdp_pad(4096).len() >= 4095);
    }

    #[test]
    fn bodies_are_json_of_about_the_asked_size_with_their_stamp() {
        for kind in [BodyKind::Sdp, BodyKind::Signal, BodyKind::Candidate] {
            for size in [200, 1024, 4096] {
                let mut frame = String::from(r#"{"Signal":{"receiver":"x","data":{"#);
                push_body(&mut frame, &message(kind, size), "}}}");
                let value: serde_json::Value = serde_json::from_str(&frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
                assert!(frame.len().abs_diff(size) <= 2, "{kind:?} {size}: {} bytes", frame.len());
                let data = value["Signal"]["data"].to_string();
                assert_eq!(BodyStamp::of(&data), Some(Stamp { seq: 7, due_us: 1000, sent_us: 1200 }));
            }
        }
        let mut frame = String::from("{");
        push_broadcast_body(&mut frame, &message(BodyKind::Candidate, 300), "}");
        assert_eq!(frame.len(), 300);
        assert!(BodyStamp::of(&frame).is_some());
        assert_eq!(random_id().len(), 22);
    }
}
