//! One server-side WebSocket over any byte stream.
//!
//! What sets it apart from a general-purpose WebSocket stream is what an idle
//! connection holds: nothing but the stream itself. Reads land in a buffer
//! shared by every connection on the worker thread; only the bytes of a message
//! still arriving are copied into the connection's own buffer, which is freed as
//! soon as the message is complete. Writes are encoded into a buffer that lives
//! from the first queued frame to the end of the flush. With 15,000 mostly idle
//! peers, that is the difference between kilobytes and tens of megabytes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::Message;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{encode, Decoder, FrameError};

/// Bytes read per `read` call. Larger batches fewer syscalls under load; the
/// buffer exists once per worker thread, not once per connection.
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client broke the protocol; see [`FrameError`] for the close code.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// A close frame was already sent: nothing more may be.
    #[error("the connection is closing")]
    Closed,
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The server sent a close frame and waits for the client's.
    Sent,
    /// Both sides have said goodbye, or the stream ended.
    Done,
}

/// A WebSocket connection, server side, after the HTTP upgrade.
pub struct WebSocket<S> {
    stream: S,
    decoder: Decoder,
    /// Bytes of a message still arriving. Empty, with no allocation, between messages.
    unread: BytesMut,
    /// Encoded frames not yet written, and how much of them was.
    unwritten: Vec<u8>,
    written: usize,
    closing: Closing,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose upgrade handshake is done. Messages or frames over
    /// `max_message` bytes end the connection.
    pub fn new(stream: S, max_message: usize) -> WebSocket<S> {
        WebSocket {
            stream,
            decoder: Decoder::new(max_message),
            unread: BytesMut::new(),
            unwritten: Vec::new(),
            written: 0,
            closing: Closing::Open,
        }
    }

    /// The next message from the client, or `None` once the stream has ended
    /// or the closing handshake is complete. Pings are answered (the pong is
    /// queued: [`flush`](Self::flush) sends it) and a client's close frame is
    /// echoed the same way, as RFC 6455 asks.
    ///
    /// Cancel-safe: bytes read are kept in `self` until a message is complete,
    /// so dropping the future loses nothing.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            if self.closing == Closing::Done {
                return Poll::Ready(None);
            }
            match self.decoder.decode(&mut self.unread) {
                Ok(Some(message)) => {
                    if self.unread.is_empty() {
                        // Let go of the allocation the message's bytes share.
                        self.unread = BytesMut::new();
                    }
                    self.answer(&message);
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
            if self.unread.is_empty() {
                // A fragment split off may have left a shared allocation behind.
                self.unread = BytesMut::new();
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.closing = Closing::Done;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
    }

    /// Reads what the stream has into the thread's scratch buffer, then keeps
    /// it in `unread`. Waiting holds no buffer at all.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let stream = Pin::new(&mut self.stream);
        let unread = &mut self.unread;
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(stream.poll_read(cx, &mut buf))?;
            unread.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
    }

    /// Queues what the protocol owes the client for `message`.
    fn answer(&mut self, message: &Message) {
        match message {
            Message::Ping(data) if self.closing == Closing::Open => {
                encode(&Message::Pong(data.clone()), &mut self.unwritten)
            }
            Message::Close(frame) => {
                if self.closing == Closing::Open {
                    encode(&Message::Close(frame.clone()), &mut self.unwritten);
                }
                self.closing = Closing::Done;
            }
            _ => {}
        }
    }

    /// Queues a message; [`flush`](Self::flush) writes it. Nothing may follow a close frame.
    pub fn feed(&mut self, message: &Message) -> Result<(), Error> {
        if self.closing != Closing::Open {
            return Err(Error::Closed);
        }
        if matches!(message, Message::Close(_)) {
            self.closing = Closing::Sent;
        }
        encode(message, &mut self.unwritten);
        Ok(())
    }

    /// Writes everything queued, then frees the write buffer.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.written < self.unwritten.len() {
            let rest = &self.unwritten[self.written..];
            match ready!(Pin::new(&mut self.stream).poll_write(cx, rest)) {
                Ok(0) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                Ok(n) => self.written += n,
                Err(err) => return Poll::Ready(Err(err.into())),
            }
        }
        self.unwritten = Vec::new();
        self.written = 0;
        Poll::Ready(ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(Error::from))
    }

    /// Queues a message and writes it with everything queued before it.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(&message)?;
        self.flush().await
    }
}
