//! ttrpc connections that can stop at a frame boundary, so an upgrade can hand them over.
//!
//! ttrpc's server reads each frame with `read_exact`: a 10-byte header (length u32 BE, stream
//! id, type, flags) then the body. [`Gated`] never lets one read cross the end of a header or
//! a body, so it always knows where the next frame starts. When the [`Gate`] closes, a read
//! that would begin a new frame waits instead: the requests not yet read stay in the kernel's
//! socket buffer, and the next image reads them from the same descriptor. Replies are counted
//! as they are written, so the handoff can wait until every request read has its answer.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

const HEADER: usize = 10;
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;

/// Opens and closes every connection (and the listener) together; cheap to clone.
#[derive(Clone, Default)]
pub struct Gate(Arc<GateShared>);

#[derive(Default)]
struct GateShared {
    closed: AtomicBool,
    conns: Mutex<Vec<Weak<Conn>>>,
    /// Readers (and the listener) parked by a closed gate.
    parked: Mutex<Vec<Waker>>,
}

struct Conn {
    fd: RawFd,
    /// The read side is between frames.
    at_boundary: AtomicBool,
    requests: AtomicU64,
    replies: AtomicU64,
    eof: AtomicBool,
}

/// Where a byte stream is within its current frame.
#[derive(Default)]
struct Cursor {
    header: [u8; HEADER],
    got: usize,
    body_left: usize,
}

impl Cursor {
    fn between_frames(&self) -> bool {
        self.got == 0 && self.body_left == 0
    }

    /// How many bytes may be taken without crossing the end of the header or the body.
    fn room(&self) -> usize {
        if self.got < HEADER {
            HEADER - self.got
        } else {
            self.body_left
        }
    }

    /// Takes `bytes`; returns the frame's type if they completed it.
    fn advance(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            if self.got < HEADER {
                let n = (HEADER - self.got).min(bytes.len());
                self.header[self.got..self.got + n].copy_from_slice(&bytes[..n]);
                self.got += n;
                bytes = &bytes[n..];
                if self.got == HEADER {
                    let len = u32::from_be_bytes([
                        self.header[0],
                        self.header[1],
                        self.header[2],
                        self.header[3],
                    ]);
                    self.body_left = len as usize;
                }
            } else {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
            }
            if self.got == HEADER && self.body_left == 0 {
                done.push(self.header[8]);
                self.got = 0;
            }
        }
        done
    }
}

impl Gate {
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(SeqCst)
    }

    /// Closes (no new frame is read, no connection accepted) or opens the gate.
    pub fn set_closed(&self, closed: bool) {
        self.0.closed.store(closed, SeqCst);
        if !closed {
            for w in self.0.parked.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                w.wake();
            }
        }
    }

    /// Parks the caller until the gate opens.
    pub fn park(&self, cx: &Context<'_>) {
        self.0
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cx.waker().clone());
    }

    /// Wraps an accepted (or inherited) connection.
    pub fn wrap(&self, stream: UnixStream) -> Gated {
        let conn = Arc::new(Conn {
            fd: stream.as_raw_fd(),
            at_boundary: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            eof: AtomicBool::new(false),
        });
        let mut conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
        Gated {
            stream,
            conn,
            gate: self.clone(),
            rd: Cursor::default(),
            wr: Cursor::default(),
        }
    }

    /// Whether every open connection is between frames with every request answered.
    pub fn quiet(&self) -> bool {
        self.live().iter().all(|c| {
            c.at_boundary.load(SeqCst) && c.requests.load(SeqCst) == c.replies.load(SeqCst)
        })
    }

    /// The descriptors of the connections still open (the peer has not closed them).
    pub fn fds(&self) -> Vec<RawFd> {
        self.live()
            .iter()
            .filter(|c| !c.eof.load(SeqCst))
            .map(|c| c.fd)
            .collect()
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        let conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.iter().filter_map(Weak::upgrade).collect()
    }
}

/// A connection as ttrpc sees it.
pub struct Gated {
    stream: UnixStream,
    conn: Arc<Conn>,
    gate: Gate,
    rd: Cursor,
    wr: Cursor,
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rd.between_frames() && this.gate.is_closed() {
            this.gate.park(cx);
            // Closed and opened again between the check and the park: do not sleep forever.
            if !this.gate.is_closed() {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // A bounded read into our own buffer: never past the end of this header or body.
        let mut local = vec![0u8; this.rd.room().min(buf.remaining())];
        let mut limited = ReadBuf::new(&mut local);
        std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
        let filled = limited.filled();
        if filled.is_empty() {
            this.conn.eof.store(true, SeqCst);
        }
        buf.put_slice(filled);
        let requests = this.rd.advance(filled).iter().filter(|&&t| t == REQUEST).count();
        this.conn.requests.fetch_add(requests as u64, SeqCst);
        this.conn.at_boundary.store(this.rd.between_frames(), SeqCst);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.stream).poll_write(cx, data))?;
        let replies = this
            .wr
            .advance(&data[..n])
            .iter()
            .filter(|&&t| t == RESPONSE)
            .count() as u64;
        this.conn.replies.fetch_add(replies, SeqCst);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 1, kind, 0]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn the_cursor_finds_every_frame_end_however_the_bytes_are_cut() {
        let mut stream = frame(REQUEST, b"hello");
        stream.extend(frame(REQUEST, b""));
        stream.extend(frame(RESPONSE, &[7; 300]));
        for cut in 1..stream.len() {
            let mut c = Cursor::default();
            let mut types = Vec::new();
            for chunk in stream.chunks(cut) {
                // Never more than `room` at once, as the reader asks.
                let mut rest = chunk;
                while !rest.is_empty() {
                    let n = c.room().max(1).min(rest.len());
                    types.extend(c.advance(&rest[..n]));
                    rest = &rest[n..];
                }
            }
            assert_eq!(types, [REQUEST, REQUEST, RESPONSE], "cut {cut}");
            assert!(c.between_frames());
        }
    }
}
