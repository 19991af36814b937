//! Framing of the client → server half of RFB, after the security handshake.
//!
//! The gateway needs to know where each viewer message starts for two things: to notice
//! *input* (key and pointer events: what "idle" is measured against) and, for view-only
//! grants, to drop input and other state-changing messages while passing the rest through.
//!
//! [`ClientScanner`] is a streaming state machine: bytes may arrive split anywhere. Its work
//! is per message header, not per byte: a 64 KiB clipboard paste is skipped in one step.
//! A message type it cannot frame makes it stop with [`ScanError::Unknown`]; the caller then
//! either treats the rest of the stream as opaque (a normal grant) or closes (view-only).

/// What kind of message a byte range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The one-byte ClientInit (shared flag) at the start of the stream.
    ClientInit,
    /// Keyboard or pointer input: counts as activity, dropped for view-only viewers.
    Input,
    /// Changes the desktop but is not typing or pointing (clipboard, resize, xvp power
    /// actions): dropped for view-only viewers. A clipboard paste counts as activity.
    Control { activity: bool },
    /// Protocol housekeeping (pixel format, encodings, update requests, fences): always kept.
    Protocol,
}

impl Class {
    /// Whether a view-only viewer may send it.
    pub fn allowed_view_only(self) -> bool {
        matches!(self, Class::ClientInit | Class::Protocol)
    }

    /// Whether it counts as user activity for the idle sweep.
    pub fn is_activity(self) -> bool {
        matches!(self, Class::Input | Class::Control { activity: true })
    }
}

/// The scanner cannot frame the stream any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("unknown RFB client message type {0}")]
    Unknown(u8),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for ClientInit.
    Init,
    /// Collecting the first bytes of a message until its length is known.
    Header {
        buf: [u8; 12],
        have: usize,
    },
    /// Inside a message of known class with `remaining` bytes left.
    Body {
        class: Class,
        remaining: u64,
    },
    /// Inside a SetEncodings list: `left` encodings to go, the current one's first `have`
    /// bytes in `part`, and the quality and compression levels seen so far.
    Encodings {
        left: u16,
        part: [u8; 4],
        have: usize,
        seen: Encodings,
    },
    Failed(ScanError),
}

/// The image settings a viewer asked for in a SetEncodings message: the JPEG quality
/// (pseudo-encodings -32..=-23) and compression level (-256..=-247), 0-9 each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encodings {
    pub quality: Option<u8>,
    pub compression: Option<u8>,
}

impl Encodings {
    fn see(&mut self, encoding: i32) {
        match encoding {
            -32..=-23 => self.quality = Some((encoding + 32) as u8),
            -256..=-247 => self.compression = Some((encoding + 256) as u8),
            _ => {}
        }
    }
}

/// Streaming framer of client → server RFB messages.
#[derive(Debug, Clone)]
pub struct ClientScanner {
    state: State,
    /// The settings of the last complete SetEncodings not yet taken.
    encodings: Option<Encodings>,
}

impl Default for ClientScanner {
    fn default() -> Self {
        ClientScanner::new()
    }
}

/// Length and class of a message given its first bytes, or how many bytes are needed.
enum Need {
    More,
    Known(Class, u64),
}

fn frame(h: &[u8]) -> Result<Need, ScanError> {
    let need = |n: usize| -> Option<Need> { (h.len() < n).then_some(Need::More) };
    let t = h[0];
    Ok(match t {
        0 => Need::Known(Class::Protocol, 20), // SetPixelFormat
        2 => match need(4) {
            // SetEncodings
            Some(m) => m,
            None => {
                let n = u16::from_be_bytes([h[2], h[3]]) as u64;
                Need::Known(Class::Protocol, 4 + 4 * n)
            }
        },
        3 => Need::Known(Class::Protocol, 10), // FramebufferUpdateRequest
        4 => Need::Known(Class::Input, 8),     // KeyEvent
        5 => Need::Known(Class::Input, 6),     // PointerEvent
        6 => match need(8) {
            // ClientCutText
            Some(m) => m,
            None => {
                // Negative lengths belong to the Extended Clipboard extension.
                let len = i32::from_be_bytes([h[4], h[5], h[6], h[7]]).unsigned_abs() as u64;
                Need::Known(Class::Control { activity: true }, 8 + len)
            }
        },
        150 => Need::Known(Class::Protocol, 10), // EnableContinuousUpdates
        248 => match need(9) {
            // ClientFence
            Some(m) => m,
            None => Need::Known(Class::Protocol, 9 + h[8] as u64),
        },
        250 => Need::Known(Class::Control { activity: false }, 4), // xvp
        251 => match need(8) {
            // SetDesktopSize
            Some(m) => m,
            None => Need::Known(Class::Control { activity: false }, 8 + 16 * h[6] as u64),
        },
        255 => match need(2) {
            // QEMU
            Some(m) => m,
            None => match h[1] {
                0 => Need::Known(Class::Input, 12), // QEMU extended key event
                1 => match need(4) {
                    // QEMU audio
                    Some(m) => m,
                    None => match u16::from_be_bytes([h[2], h[3]]) {
                        0 | 1 => Need::Known(Class::Protocol, 4),
                        2 => Need::Known(Class::Protocol, 10),
                        _ => return Err(ScanError::Unknown(t)),
                    },
                },
                _ => return Err(ScanError::Unknown(t)),
            },
        },
        _ => return Err(ScanError::Unknown(t)),
    })
}

impl ClientScanner {
    /// A scanner at the start of the stream (the next byte is ClientInit).
    pub fn new() -> Self {
        ClientScanner {
            state: State::Init,
            encodings: None,
        }
    }

    /// The image settings of the last SetEncodings completed since the last call, if any.
    pub fn take_encodings(&mut self) -> Option<Encodings> {
        self.encodings.take()
    }

    /// Feeds `data` and hands every byte of it, in order, to `out` together with the class
    /// of the message it belongs to. The first bytes of a message are held back until its
    /// class is known (at most 12 bytes), so a call may hand out fewer bytes than it got and
    /// a later call more.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut out: impl FnMut(&[u8], Class),
    ) -> Result<(), ScanError> {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                State::Failed(e) => return Err(*e),
                State::Init => {
                    out(&data[pos..pos + 1], Class::ClientInit);
                    pos += 1;
                    self.state = State::Header {
                        buf: [0; 12],
                        have: 0,
                    };
                }
                State::Header { buf, have } => {
                    buf[*have] = data[pos];
                    *have += 1;
                    pos += 1;
                    match frame(&buf[..*have]) {
                        Ok(Need::More) => {}
                        Ok(Need::Known(class, len)) => {
                            let header_len = *have;
                            out(&buf[..header_len], class);
                            let set_encodings = buf[0] == 2;
                            self.state = if set_encodings {
                                let left = ((len - 4) / 4) as u16;
                                if left == 0 {
                                    self.encodings = Some(Encodings::default());
                                    State::Header {
                                        buf: [0; 12],
                                        have: 0,
                                    }
                                } else {
                                    State::Encodings {
                                        left,
                                        part: [0; 4],
                                        have: 0,
                                        seen: Encodings::default(),
                                    }
                                }
                            } else if len > header_len as u64 {
                                State::Body {
                                    class,
                                    remaining: len - header_len as u64,
                                }
                            } else {
                                State::Header {
                                    buf: [0; 12],
                                    have: 0,
                                }
                            };
                        }
                        Err(e) => {
                            self.state = State::Failed(e);
                            return Err(e);
                        }
                    }
                }
                State::Encodings {
                    left,
                    part,
                    have,
                    seen,
                } => {
                    // Whole encodings at a time, but never more than this list holds.
                    let want = (*left as usize * 4 - *have).min(data.len() - pos);
                    let chunk = &data[pos..pos + want];
                    out(chunk, Class::Protocol);
                    pos += want;
                    for &b in chunk {
                        part[*have] = b;
                        *have += 1;
                        if *have == 4 {
                            seen.see(i32::from_be_bytes(*part));
                            *have = 0;
                            *left -= 1;
                        }
                    }
                    if *left == 0 {
                        self.encodings = Some(*seen);
                        self.state = State::Header {
                            buf: [0; 12],
                            have: 0,
                        };
                    }
                }
                State::Body { class, remaining } => {
                    let take = (*remaining).min((data.len() - pos) as u64) as usize;
                    out(&data[pos..pos + take], *class);
                    pos += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; 12],
                            have: 0,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Feeds `data` and reports only whether it completed any activity message header
    /// (the hot path of a normal, not view-only, connection).
    pub fn saw_activity(&mut self, data: &[u8]) -> Result<bool, ScanError> {
        let mut seen = false;
        self.feed(data, |_, c| seen |= c.is_activity())?;
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(down: bool) -> Vec<u8> {
        vec![4, down as u8, 0, 0, 0, 0, 0, 0x61]
    }
    fn pointer() -> Vec<u8> {
        vec![5, 1, 0, 10, 0, 20]
    }
    fn update_request() -> Vec<u8> {
        vec![3, 1, 0, 0, 0, 0, 4, 0, 3, 0]
    }
    fn encodings(n: u16) -> Vec<u8> {
        let mut v = vec![2, 0];
        v.extend_from_slice(&n.to_be_bytes());
        for i in 0..n {
            v.extend_from_slice(&(i as i32).to_be_bytes());
        }
        v
    }
    fn cut_text(text: &[u8]) -> Vec<u8> {
        let mut v = vec![6, 0, 0, 0];
        v.extend_from_slice(&(text.len() as i32).to_be_bytes());
        v.extend_from_slice(text);
        v
    }
    fn fence(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![248, 0, 0, 0, 0, 0, 0, 1, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    fn stream() -> Vec<u8> {
        let mut s = vec![1u8]; // ClientInit, shared
        s.extend(vec![0u8; 20]); // SetPixelFormat
        s.extend(encodings(5));
        s.extend(update_request());
        s.extend(key(true));
        s.extend(pointer());
        s.extend(cut_text(b"hello clipboard"));
        s.extend(fence(b"abc"));
        s.extend([255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]); // QEMU key
        s.extend([251, 0, 0, 0, 0, 0, 1, 0]); // SetDesktopSize, 1 screen
        s.extend(vec![0u8; 16]);
        s.extend(update_request());
        s
    }

    /// Feeds `s` in chunks of `n` and returns the bytes a view-only filter keeps and
    /// whether any activity was seen.
    fn run(s: &[u8], n: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut sc = ClientScanner::new();
        let (mut all, mut kept, mut act) = (Vec::new(), Vec::new(), false);
        for chunk in s.chunks(n) {
            sc.feed(chunk, |b, c| {
                all.extend_from_slice(b);
                if c.allowed_view_only() {
                    kept.extend_from_slice(b);
                }
                act |= c.is_activity();
            })
            .unwrap();
        }
        (all, kept, act)
    }

    #[test]
    fn the_quality_and_compression_a_viewer_asks_for_are_seen_whatever_the_chunking() {
        let mut first = vec![1u8];
        let encodings: [i32; 5] = [7, -32 + 6, 16, -256 + 2, -224];
        first.extend_from_slice(&[2, 0, 0, encodings.len() as u8]);
        for e in encodings {
            first.extend_from_slice(&e.to_be_bytes());
        }
        first.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 10, 0, 10]);
        // A later SetEncodings with neither level.
        let second = [2u8, 0, 0, 1, 0, 0, 0, 0];
        for n in [1, 2, 3, 5, 7, 64] {
            let mut sc = ClientScanner::new();
            let mut all = Vec::new();
            let mut feed = |bytes: &[u8], sc: &mut ClientScanner| {
                let mut seen = Vec::new();
                for chunk in bytes.chunks(n) {
                    sc.feed(chunk, |b, c| {
                        assert!(c.allowed_view_only());
                        all.extend_from_slice(b);
                    })
                    .unwrap();
                    seen.extend(sc.take_encodings());
                }
                seen
            };
            let asked = Encodings {
                quality: Some(6),
                compression: Some(2),
            };
            assert_eq!(feed(&first, &mut sc), [asked], "chunk size {n}");
            assert_eq!(feed(&second, &mut sc), [Encodings::default()]);
            assert_eq!(all, [&first[..], &second[..]].concat(), "chunk size {n}");
        }
    }

    #[test]
    fn every_byte_is_handed_out_in_order_whatever_the_chunking() {
        let s = stream();
        for n in [1, 2, 3, 5, 7, 11, 13, 64, 1000] {
            let (all, _, act) = run(&s, n);
            assert_eq!(all, s, "chunk size {n}");
            assert!(act);
        }
    }

    #[test]
    fn view_only_keeps_exactly_the_protocol_messages() {
        let s = stream();
        let mut expected = vec![1u8];
        expected.extend(vec![0u8; 20]);
        expected.extend(encodings(5));
        expected.extend(update_request());
        expected.extend(fence(b"abc"));
        expected.extend(update_request());
        for n in [1, 4, 9, 1000] {
            assert_eq!(run(&s, n).1, expected, "chunk size {n}");
        }
    }

    #[test]
    fn update_requests_alone_are_not_activity() {
        let mut s = vec![1u8];
        for _ in 0..100 {
            s.extend(update_request());
        }
        assert!(!run(&s, 7).2);
        let mut sc = ClientScanner::new();
        assert!(!sc.saw_activity(&s).unwrap());
        assert!(sc.saw_activity(&pointer()).unwrap());
    }

    #[test]
    fn a_large_paste_is_skipped_in_one_step() {
        let text = vec![b'x'; 1 << 20];
        let mut s = vec![1u8];
        s.extend(cut_text(&text));
        s.extend(key(false));
        let mut calls = 0;
        let mut sc = ClientScanner::new();
        sc.feed(&s, |_, _| calls += 1).unwrap();
        assert!(calls <= 5, "{calls} callbacks");
    }

    #[test]
    fn extended_clipboard_negative_lengths_are_framed() {
        let mut s = vec![1u8, 6, 0, 0, 0];
        s.extend_from_slice(&(-4i32).to_be_bytes());
        s.extend_from_slice(&[0, 0, 0, 1]);
        s.extend(key(true));
        assert_eq!(run(&s, 3).0, s);
    }

    #[test]
    fn an_unknown_message_stops_the_scanner() {
        let mut sc = ClientScanner::new();
        assert_eq!(
            sc.feed(&[1, 77, 0, 0], |_, _| {}),
            Err(ScanError::Unknown(77))
        );
        assert_eq!(sc.feed(&[3], |_, _| {}), Err(ScanError::Unknown(77)));
    }
}
