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
/// Buffers kept per thread for reuse; more are freed.
const KEEP_PER_THREAD: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`BUF_LEN`] bytes, returned to the pool on drop.
pub struct Buf(Option<Box<[u8]>>);

impl Buf {
    pub fn take() -> Buf {
        let reused = FREE.with(|f| f.borrow_mut().pop());
        Buf(Some(
            reused.unwrap_or_else(|| vec![0u8; BUF_LEN].into_boxed_slice()),
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
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < KEEP_PER_THREAD {
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
    }
}
