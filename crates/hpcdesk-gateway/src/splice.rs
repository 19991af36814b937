//! The screen without copies: desktop → viewer bytes that never pass through user space.
//!
//! For a plain viewer and a plain desktop, the down direction of the relay moves each batch
//! the desktop has from its socket into a pipe (`splice`), which tells how many bytes there
//! are; sends the WebSocket frame header for that many (`send` with `MSG_MORE`, so that it
//! leaves in the same segment as the payload); and moves the batch from the pipe to the
//! viewer's socket (`splice`). The kernel hands over page references; hpcdesk reads and
//! writes no screen byte, where a copying relay copies each one twice.
//!
//! Pipes are pooled per thread as buffers are ([`crate::pool`]): a relay holds one only while
//! a batch is in it, so idle viewers hold none. A pipe that could not be emptied (the viewer
//! stopped reading, or went away mid-batch) is closed, never reused. Where no pipe can be had
//! (out of descriptors), the relay copies through a pooled buffer instead.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{MsgFlags, send};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// What a pipe is asked to hold: one batch, one frame. Four times a socket read's 64 KiB, so
/// a full screen takes a few batches; no more, because a viewer that stops reading holds a
/// full pipe until its write times out. (A smaller pipe, if that is all there is, works too.)
pub const PIPE_LEN: usize = 256 << 10;
/// Pipes kept per thread for reuse; more are closed.
const KEEP_PER_THREAD: usize = 16;

thread_local! {
    static FREE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A non-blocking pipe and what it can hold.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    pub fn take() -> io::Result<Pipe> {
        if let Some(p) = FREE.with(|f| f.borrow_mut().pop()) {
            return Ok(p);
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: the per-user pipe page limit may refuse a larger pipe.
        let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_LEN as i32));
        let cap = fcntl(&w, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|c| usize::try_from(c).ok())
            .filter(|c| *c > 0)
            .unwrap_or(64 * 1024);
        Ok(Pipe { r, w, cap })
    }

    /// Gives an empty pipe back to the pool.
    fn give_back(self) {
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP_PER_THREAD {
                f.push(self);
            }
        });
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// A batch of desktop bytes in a pipe, on its way to the viewer. Dropped before it is sent
/// whole, its pipe is closed (what is left in it must never reach another viewer).
pub struct Batch {
    pipe: Option<Pipe>,
    len: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Moves what the desktop has (up to a pipe's worth) into `pipe`, without waiting: `Ok(None)`
/// when the desktop has nothing after all (the pipe goes back), `Ok(Some(batch))` with
/// `batch.len() == 0` when the desktop closed.
pub fn fill(desktop: &TcpStream, pipe: Pipe) -> io::Result<Option<Batch>> {
    let moved = desktop.try_io(Interest::READABLE, || {
        splice(
            desktop.as_fd(),
            None,
            pipe.w.as_fd(),
            None,
            pipe.cap,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
        )
        .map_err(io::Error::from)
    });
    match moved {
        Ok(n) => Ok(Some(Batch {
            pipe: Some(pipe),
            len: n,
        })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            pipe.give_back();
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Sends `header` and then the batch to the viewer, waiting for room as needed; the pipe
/// goes back to the pool once it is empty.
pub async fn send_batch(viewer: &TcpStream, header: &[u8], mut batch: Batch) -> io::Result<()> {
    let mut sent = 0;
    while sent < header.len() {
        viewer.writable().await?;
        match viewer.try_io(Interest::WRITABLE, || {
            send(
                viewer.as_raw_fd(),
                &header[sent..],
                MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
            )
            .map_err(io::Error::from)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let pipe = batch.pipe.as_ref().expect("present until sent");
    while batch.len > 0 {
        viewer.writable().await?;
        match viewer.try_io(Interest::WRITABLE, || {
            splice(
                pipe.r.as_fd(),
                None,
                viewer.as_fd(),
                None,
                batch.len,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => batch.len -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(p) = batch.pipe.take() {
        p.give_back();
    }
    Ok(())
}

impl Drop for Batch {
    fn drop(&mut self) {
        // A pipe still holding bytes is closed with them (`pipe` drops its descriptors); an
        // empty one (the desktop closed: nothing was moved) can serve again.
        if self.len == 0
            && let Some(p) = self.pipe.take()
        {
            p.give_back();
        }
    }
}
