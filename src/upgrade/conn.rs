//! ttrpc connections that can stop at a frame boundary, so an upgrade can hand them over.
//!
//! ttrpc's server reads each frame with `read_exact`: a 10-byte header (length u32 BE, stream
//! id, type, flags) then the body. [`Gated`] never lets one read cross the end of a header or
//! a body, so it always knows where the next frame starts. When the [`Gate`] closes, a read
//! that would begin a new frame waits instead: the requests not yet read stay in the kernel's
//! socket buffer, and the next image reads them from the same descriptor.
//!
//! Each request read is kept (its whole frame) until its reply is written. The handoff waits
//! until every request still unanswered is a `Wait`, which may take as long as the process
//! lives: those frames cross the exec with their connection and the next image reads them
//! first, as if they had just arrived, and answers them under the same stream id. `Wait` only
//! reads the table, so running it again is the same as having run it once.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
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
    /// The write side is between frames (no reply half written).
    wr_boundary: AtomicBool,
    /// Requests read and not answered yet, by stream id, with their frames. Whether one may
    /// be read again by the next image (a `Wait`) is decided only at a handoff.
    pending: Mutex<BTreeMap<u32, Vec<u8>>>,
    eof: AtomicBool,
}

/// A connection as it crosses the exec: its descriptor and the requests to read again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    pub fd: RawFd,
    pub replay: Vec<u8>,
}

/// One whole frame that went through a [`Cursor`].
struct Frame {
    kind: u8,
    stream: u32,
    bytes: Vec<u8>,
}

/// Whether a request frame may be answered by the next image instead: a `Wait` of the task
/// API (v2 or v3).
fn replayable(frame: &[u8]) -> bool {
    use protobuf::Message;
    let Some(body) = frame.get(HEADER..) else {
        return false;
    };
    ttrpc::Request::parse_from_bytes(body)
        .is_ok_and(|r| r.method == "Wait" && r.service.starts_with("containerd.task.v"))
}

/// Where a byte stream is within its current frame.
#[derive(Default)]
struct Cursor {
    header: [u8; HEADER],
    got: usize,
    body_left: usize,
    /// Keep the frames' bytes (the read side).
    keep: bool,
    bytes: Vec<u8>,
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

    /// Takes `bytes`; returns the frames they completed.
    fn advance(&mut self, mut bytes: &[u8]) -> Vec<Frame> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            let n = if self.got < HEADER {
                let n = (HEADER - self.got).min(bytes.len());
                self.header[self.got..self.got + n].copy_from_slice(&bytes[..n]);
                self.got += n;
                if self.got == HEADER {
                    let h = &self.header;
                    self.body_left = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                }
                n
            } else {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                n
            };
            if self.keep {
                self.bytes.extend_from_slice(&bytes[..n]);
            }
            bytes = &bytes[n..];
            if self.got == HEADER && self.body_left == 0 {
                let h = &self.header;
                done.push(Frame {
                    kind: h[8],
                    stream: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    bytes: std::mem::take(&mut self.bytes),
                });
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
            for w in self
                .0
                .parked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
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

    /// Wraps an accepted connection.
    pub fn wrap(&self, stream: UnixStream) -> Gated {
        self.wrap_replaying(stream, Vec::new())
    }

    /// Wraps a connection inherited from the previous image, whose unanswered requests
    /// (`replay`) are read again before anything new.
    pub fn wrap_replaying(&self, stream: UnixStream, replay: Vec<u8>) -> Gated {
        let conn = Arc::new(Conn {
            fd: stream.as_raw_fd(),
            at_boundary: AtomicBool::new(true),
            wr_boundary: AtomicBool::new(true),
            pending: Mutex::default(),
            eof: AtomicBool::new(false),
        });
        let mut conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
        Gated {
            stream,
            conn,
            gate: self.clone(),
            rd: Cursor {
                keep: true,
                ..Cursor::default()
            },
            wr: Cursor::default(),
            replay,
            replayed: 0,
            scratch: Vec::new(),
        }
    }

    /// Whether every open connection is between frames, and every request read either
    /// answered or one the next image may answer.
    pub fn quiet(&self) -> bool {
        self.live().iter().all(|c| {
            c.at_boundary.load(SeqCst)
                && c.wr_boundary.load(SeqCst)
                && lock(&c.pending).values().all(|f| replayable(f))
        })
    }

    /// The connections still open (the peer has not closed them), each with the requests the
    /// next image must read again.
    pub fn export(&self) -> Vec<Handed> {
        self.live()
            .iter()
            .filter(|c| !c.eof.load(SeqCst))
            .map(|c| Handed {
                fd: c.fd,
                replay: lock(&c.pending).values().flat_map(|f| f.clone()).collect(),
            })
            .collect()
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        lock(&self.0.conns)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection as ttrpc sees it.
pub struct Gated {
    stream: UnixStream,
    conn: Arc<Conn>,
    gate: Gate,
    rd: Cursor,
    wr: Cursor,
    /// Requests handed over by the previous image, read before the socket.
    replay: Vec<u8>,
    replayed: usize,
    scratch: Vec<u8>,
}

/// The largest read buffer a connection keeps between reads: headers and small requests reuse
/// it; a large body (a `Create`'s spec) gets a buffer of its own that an idle shim does not
/// keep.
const SCRATCH_KEPT: usize = 4 * 1024;

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
        // Reused: no allocation per read once it has grown.
        let want = this.rd.room().min(buf.remaining());
        let mut local = std::mem::take(&mut this.scratch);
        local.resize(want, 0);
        let n = if this.replayed < this.replay.len() {
            let n = local.len().min(this.replay.len() - this.replayed);
            local[..n].copy_from_slice(&this.replay[this.replayed..this.replayed + n]);
            this.replayed += n;
            n
        } else {
            let mut limited = ReadBuf::new(&mut local);
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
            limited.filled().len()
        };
        let filled = &local[..n];
        if filled.is_empty() {
            this.conn.eof.store(true, SeqCst);
        }
        buf.put_slice(filled);
        let frames = this.rd.advance(filled);
        if local.capacity() <= SCRATCH_KEPT {
            this.scratch = local;
        }
        for f in frames {
            if f.kind == REQUEST {
                lock(&this.conn.pending).insert(f.stream, f.bytes);
            }
        }
        this.conn
            .at_boundary
            .store(this.rd.between_frames(), SeqCst);
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
        for f in this.wr.advance(&data[..n]) {
            if f.kind == RESPONSE {
                lock(&this.conn.pending).remove(&f.stream);
            }
        }
        this.conn
            .wr_boundary
            .store(this.wr.between_frames(), SeqCst);
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
                    types.extend(c.advance(&rest[..n]).iter().map(|f| f.kind));
                    rest = &rest[n..];
                }
            }
            assert_eq!(types, [REQUEST, REQUEST, RESPONSE], "cut {cut}");
            assert!(c.between_frames());
        }
    }
}
