//! WebSocket frames to messages and back (RFC 6455, server side).
//!
//! Headers are parsed and written by tungstenite's [`FrameHeader`]; this
//! module holds the rules a server enforces on top: client frames are masked,
//! no extension bits, control frames short and unfragmented, continuation only
//! inside a fragmented message, sizes within the hard limit, text valid UTF-8.
//!
//! Payloads are split off the read buffer without copying: a relayed message is
//! the same allocation from the sender's socket to every receiver's write.

use std::io::Cursor;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Why a client's frames were refused; each ends the connection with its own
/// close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame or message above the hard size limit (close 1009).
    #[error("message too big")]
    TooBig,
    /// A text message or close reason that is not UTF-8 (close 1007).
    #[error("invalid UTF-8")]
    BadUtf8,
    /// Anything else RFC 6455 forbids (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Turns the bytes a client sends into whole messages.
///
/// Holds nothing between messages: a fragmented message in progress is the only
/// state, and it is boxed so that the common case (no fragments) costs one word.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    fragmented: Option<Box<Fragmented>>,
}

#[derive(Debug)]
struct Fragmented {
    text: bool,
    data: BytesMut,
}

impl Decoder {
    /// A decoder that refuses frames and messages above `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message, fragmented: None }
    }

    /// Takes the next message off the front of `buf`, or `None` when `buf`
    /// does not yet hold a complete one (what it does hold is kept, or moved
    /// into the fragmented message being assembled). Sizes are checked as soon
    /// as a header arrives, before any payload is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(FrameError::Protocol("malformed frame header")),
            };
            let header_len = cursor.position() as usize;
            let length = self.check(&header, length)?;
            if buf.len() < header_len + length {
                return Ok(None);
            }
            buf.advance(header_len);
            let mut payload = buf.split_to(length);
            if let Some(mask) = header.mask {
                unmask(&mut payload, mask);
            }
            if let Some(message) = self.assemble(&header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Checks one header against the rules and the size limit; returns the
    /// payload length.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<usize, FrameError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(FrameError::Protocol("reserved bits set without an extension"));
        }
        if header.mask.is_none() {
            return Err(FrameError::Protocol("unmasked frame from a client"));
        }
        let length = usize::try_from(length).map_err(|_| FrameError::TooBig)?;
        match header.opcode {
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(FrameError::Protocol("reserved opcode"))
            }
            OpCode::Control(_) if !header.is_final => Err(FrameError::Protocol("fragmented control frame")),
            OpCode::Control(_) if length > 125 => Err(FrameError::Protocol("control frame over 125 bytes")),
            OpCode::Control(_) => Ok(length),
            OpCode::Data(_) => {
                let so_far = self.fragmented.as_ref().map_or(0, |f| f.data.len());
                match so_far.checked_add(length) {
                    Some(total) if total <= self.max_message => Ok(length),
                    _ => Err(FrameError::TooBig),
                }
            }
        }
    }

    /// Adds one checked, unmasked frame; returns a message when one is complete.
    fn assemble(&mut self, header: &FrameHeader, payload: BytesMut) -> Result<Option<Message>, FrameError> {
        let text = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Control(Control::Close) => return close_frame(payload.freeze()).map(|f| Some(Message::Close(f))),
            OpCode::Data(Data::Text) => true,
            OpCode::Data(Data::Binary) => false,
            OpCode::Data(Data::Continue) => {
                let Some(fragmented) = self.fragmented.as_mut() else {
                    return Err(FrameError::Protocol("continuation frame outside a fragmented message"));
                };
                fragmented.data.unsplit(payload);
                if !header.is_final {
                    return Ok(None);
                }
                let Some(done) = self.fragmented.take() else { return Ok(None) };
                return message(done.text, done.data.freeze()).map(Some);
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(FrameError::Protocol("reserved opcode"))
            }
        };
        if self.fragmented.is_some() {
            return Err(FrameError::Protocol("new message inside a fragmented one"));
        }
        if header.is_final {
            return message(text, payload.freeze()).map(Some);
        }
        self.fragmented = Some(Box::new(Fragmented { text, data: payload }));
        Ok(None)
    }
}

fn message(text: bool, data: Bytes) -> Result<Message, FrameError> {
    match text {
        true => Utf8Bytes::try_from(data).map(Message::Text).map_err(|_| FrameError::BadUtf8),
        false => Ok(Message::Binary(data)),
    }
}

/// A close frame's payload: nothing, or a code the sender may use and a UTF-8 reason.
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, FrameError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(FrameError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() {
                return Err(FrameError::Protocol("close code not allowed on the wire"));
            }
            let reason = Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| FrameError::BadUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// XORs a client's mask out of a payload, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Whole chunks keep the mask aligned: the tail starts at mask byte 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Appends `message` to `out` as one unmasked, unfragmented server frame.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    let (opcode, payload): (OpCode, &[u8]) = match message {
        Message::Text(text) => (OpCode::Data(Data::Text), text.as_bytes()),
        Message::Binary(data) => (OpCode::Data(Data::Binary), data),
        Message::Ping(data) => (OpCode::Control(Control::Ping), data),
        Message::Pong(data) => (OpCode::Control(Control::Pong), data),
        Message::Close(frame) => {
            let mut payload = Vec::new();
            if let Some(frame) = frame {
                payload.put_u16(frame.code);
                payload.extend_from_slice(frame.reason.as_bytes());
            }
            return encode_frame(OpCode::Control(Control::Close), &payload, out);
        }
    };
    encode_frame(opcode, payload, out)
}

fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame: FIN/opcode byte, masked payload.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        frame
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder.decode(&mut buf)? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn text_frames_decode_whole_and_leave_the_rest() {
        let mut bytes = client_frame(0x81, "héllo, a longer message than eight bytes".as_bytes());
        bytes.extend(client_frame(0x82, &[1, 2, 3]));
        let partial = client_frame(0x81, b"next");
        bytes.extend(&partial[..3]);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = Decoder::new(1024);
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Message::text("héllo, a longer message than eight bytes")));
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Message::binary(vec![1, 2, 3])));
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &partial[..3], "an incomplete frame stays in the buffer");
        buf.extend_from_slice(&partial[3..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Message::text("next")));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragments_assemble_around_control_frames() {
        let mut bytes = client_frame(0x01, b"one ");
        bytes.extend(client_frame(0x89, b"ping"));
        bytes.extend(client_frame(0x00, b"two "));
        bytes.extend(client_frame(0x80, b"three"));
        let messages = decode_all(&mut Decoder::new(1024), &bytes).unwrap();
        assert_eq!(messages, [Message::Ping(Bytes::from_static(b"ping")), Message::text("one two three")]);
    }

    #[test]
    fn utf8_is_checked_on_the_whole_message_not_each_fragment() {
        let euro = "€".as_bytes();
        let mut bytes = client_frame(0x01, &euro[..1]);
        bytes.extend(client_frame(0x80, &euro[1..]));
        assert_eq!(decode_all(&mut Decoder::new(1024), &bytes).unwrap(), [Message::text("€")]);
        let bad = client_frame(0x81, &[0xff, 0xfe]);
        assert_eq!(decode_all(&mut Decoder::new(1024), &bad), Err(FrameError::BadUtf8));
    }

    #[test]
    fn sizes_are_refused_from_the_header_alone() {
        let header_only = &client_frame(0x81, &[b'a'; 2000])[..8];
        assert_eq!(decode_all(&mut Decoder::new(1024), header_only), Err(FrameError::TooBig));
        let mut fragments = client_frame(0x01, &[b'a'; 600]);
        fragments.extend(&client_frame(0x80, &[b'a'; 600])[..8]);
        assert_eq!(decode_all(&mut Decoder::new(1024), &fragments), Err(FrameError::TooBig));
        assert_eq!(decode_all(&mut Decoder::new(1024), &client_frame(0x81, &[b'a'; 1024])).unwrap().len(), 1);
    }

    #[test]
    fn protocol_violations_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", vec![0x81, 0x01, b'a']),
            ("rsv1", client_frame(0xc1, b"a")),
            ("reserved opcode", client_frame(0x83, b"a")),
            ("fragmented ping", client_frame(0x09, b"a")),
            ("long ping", client_frame(0x89, &[0; 126])),
            ("stray continuation", client_frame(0x80, b"a")),
            ("text inside fragments", [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat()),
            ("one-byte close", client_frame(0x88, &[3])),
            ("close code 1005", client_frame(0x88, &1005u16.to_be_bytes())),
        ];
        for (name, bytes) in cases {
            let result = decode_all(&mut Decoder::new(1024), &bytes);
            assert!(matches!(result, Err(FrameError::Protocol(_))), "{name}: {result:?}");
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let messages = decode_all(&mut Decoder::new(1024), &client_frame(0x88, &payload)).unwrap();
        assert_eq!(messages, [Message::Close(Some(CloseFrame { code: 1000, reason: "bye".into() }))]);
        let empty = decode_all(&mut Decoder::new(1024), &client_frame(0x88, &[])).unwrap();
        assert_eq!(empty, [Message::Close(None)]);
    }

    #[test]
    fn encode_writes_unmasked_frames_with_each_length_format() {
        for len in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode(&Message::binary(vec![7u8; len]), &mut out);
            let mut cursor = Cursor::new(&out[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!((header.opcode, header.mask, header.is_final), (OpCode::Data(Data::Binary), None, true));
            assert_eq!(length as usize, len);
            assert_eq!(out.len() - cursor.position() as usize, len);
        }
        let mut out = Vec::new();
        encode(&Message::Close(Some(CloseFrame { code: 1001, reason: "away".into() })), &mut out);
        assert_eq!(out, [0x88, 6, 0x03, 0xe9, b'a', b'w', b'a', b'y']);
    }

    #[test]
    fn unmask_matches_bytewise_xor_at_every_length() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            unmask(&mut data, MASK);
            let expected: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(data, expected, "length {len}");
        }
    }
}
