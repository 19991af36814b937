//! Relay buffers that idle connections do not hold.
//!
//! A connection takes a buffer only when its socket is readable and gives it back as soon as
//! a read would block, so ten thousand idle viewers hold none. Returned buffers go to a small
//! per-thread free list, so a busy connection takes the same memory back each time instead of
//! allocating. Buffers are allocated zeroed (calloc), so pages never written stay out of RSS.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes a relay reads at once, plus room in front for a WebSocket frame header.
pub const BUF_LEN: usize = 64 * 1024 + crate::ws::MAX_SERVER_HEADER;
/// Bytes the down direction reads from a plain desktop at once (one frame to the viewer),
/// plus room for the header: a full-screen update is megabytes, and fewer, larger batches
/// cost the gateway less CPU per byte.
pub const SCREEN_LEN: usize = 256 * 1024 + crate::ws::MAX_SERVER_HEADER;
/// Buffers kept per thread for reuse; more are freed.
const KEEP_PER_THREAD: usize = 32;
/// Screen buffers kept per thread (2 MiB): fewer, as each is four times the size.
const KEEP_SCREEN_PER_THREAD: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static FREE_SCREEN: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`BUF_LEN`] (or [`SCREEN_LEN`]) bytes, returned to the pool on drop.
pub struct Buf(Option<Box<[u8]>>);

impl Buf {
    pub fn take() -> Buf {
        Buf::of(&FREE, BUF_LEN)
    }

    /// A buffer of [`SCREEN_LEN`] bytes, for the screen.
    pub fn take_screen() -> Buf {
        Buf::of(&FREE_SCREEN, SCREEN_LEN)
    }

    fn of(free: &'static std::thread::LocalKey<RefCell<Vec<Box<[u8]>>>>, len: usize) -> Buf {
        let reused = free.with(|f| f.borrow_mut().pop());
        Buf(Some(
            reused.unwrap_or_else(|| vec![0u8; len].into_boxed_slice()),
        ))
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().expect("present until drop")
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().expect("present until drop")
    }
}

/// A buffer goes back to its thread's free list when dropped, whichever way the relay
/// that held it ends.
impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            let (free, keep) = if b.len() == SCREEN_LEN {
                (&FREE_SCREEN, KEEP_SCREEN_PER_THREAD)
            } else {
                (&FREE, KEEP_PER_THREAD)
            };
            free.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < keep {
                    f.push(b);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused() {
        let first = Buf::take();
        let ptr = first.as_ptr();
        drop(first);
        let second = Buf::take();
        assert_eq!(second.as_ptr(), ptr);
        assert_eq!(second.len(), BUF_LEN);
        let screen = Buf::take_screen();
        assert_eq!(screen.len(), SCREEN_LEN);
        let screen_ptr = screen.as_ptr();
        drop((second, screen));
        assert_eq!(Buf::take_screen().as_ptr(), screen_ptr);
        assert_eq!(Buf::take().as_ptr(), ptr);
    }
}
