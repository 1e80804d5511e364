//! Client bytes into the WebSocket frame decoder: it must never panic, and it
//! must decode the same messages (and fail at the same point, the same way)
//! whether the bytes arrive at once or in pieces, as TCP may deliver them.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_server::websocket::codec::{Decoder, FrameError};

/// Small enough that the fuzzer reaches the size checks.
const MAX_MESSAGE: usize = 4096;

type Outcome = (Vec<axum::extract::ws::Message>, Option<FrameError>);

fn decode_in_pieces(bytes: &[u8], piece: usize) -> Outcome {
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(err) => return (messages, Some(err)),
            }
        }
    }
    (messages, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else { return };
    let whole = decode_in_pieces(bytes, bytes.len().max(1));
    let pieces = decode_in_pieces(bytes, usize::from(piece).max(1));
    assert_eq!(whole, pieces, "pieces of {piece} bytes");
});
