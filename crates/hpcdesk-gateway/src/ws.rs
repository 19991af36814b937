//! The server side of WebSocket (RFC 6455), as much as a VNC relay needs, without I/O.
//!
//! - [`check_upgrade`]: validates an upgrade request and computes `Sec-WebSocket-Accept`.
//! - [`FrameReader`]: a streaming parser of client frames that unmasks payloads *in place*
//!   (eight bytes at a time) and hands them out as slices of the caller's buffer, so relaying
//!   viewer input copies nothing. Partial headers and control payloads are kept in small
//!   fixed arrays; there is no per-message allocation.
//! - [`encode_header`]: headers of server frames (never masked), written in front of the
//!   payload in the caller's buffer so a frame goes out in one write.
//!
//! Text frames are refused (noVNC sends binary); fragmented binary messages are relayed as
//! their fragments arrive.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use sha1::{Digest, Sha1};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Room reserved in front of a payload for the largest server frame header.
pub const MAX_SERVER_HEADER: usize = 10;

/// Close codes the gateway sends.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    /// The desktop session was deleted.
    pub const SESSION_DELETED: u16 = 4001;
    /// The peer stopped answering pings.
    pub const TIMEOUT: u16 = 4002;
    /// The VNC server could not be reached or refused the gateway.
    pub const DESKTOP_UNAVAILABLE: u16 = 4003;
}

/// What a valid upgrade request leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub accept: String,
    /// `binary` when the client offered it.
    pub protocol: Option<&'static str>,
}

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks the WebSocket upgrade headers of a GET request.
pub fn check_upgrade(headers: &HeaderMap) -> Result<Upgrade, &'static str> {
    if !has_token(headers, "upgrade", "websocket") {
        return Err("not a WebSocket request (Upgrade: websocket missing)");
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err("not a WebSocket request (Connection: upgrade missing)");
    }
    if headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        return Err("unsupported WebSocket version (13 is required)");
    }
    let key = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or("Sec-WebSocket-Key missing")?;
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err("Sec-WebSocket-Key is not 16 bytes of base64");
    }
    Ok(Upgrade {
        accept: accept_key(key),
        protocol: has_token(headers, "sec-websocket-protocol", "binary").then_some("binary"),
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(h.finalize())
}

/// Writes the header of an unmasked, final server frame carrying `len` payload bytes into the
/// end of `out`; returns the header length.
pub fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    let first = 0x80 | opcode;
    let (bytes, n): ([u8; MAX_SERVER_HEADER], usize) = if len < 126 {
        ([first, len as u8, 0, 0, 0, 0, 0, 0, 0, 0], 2)
    } else if len <= u16::MAX as usize {
        let l = (len as u16).to_be_bytes();
        ([first, 126, l[0], l[1], 0, 0, 0, 0, 0, 0], 4)
    } else {
        let l = (len as u64).to_be_bytes();
        (
            [first, 127, l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]],
            10,
        )
    };
    out[MAX_SERVER_HEADER - n..].copy_from_slice(&bytes[..n]);
    n
}

/// A whole control frame (`close`, `ping`, `pong`) with `payload` (≤ 125 bytes).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut f = Vec::with_capacity(2 + payload.len());
    f.push(0x80 | opcode);
    f.push(payload.len() as u8);
    f.extend_from_slice(payload);
    f
}

/// A close frame with `code` and a reason cut to fit (on a UTF-8 boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..end]);
    control_frame(OP_CLOSE, &p)
}

/// XORs `data` with the 4-byte `mask`, starting at mask position `offset`, eight bytes at a
/// time.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let m: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let m8 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("chunks of 8")) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// A violation of the protocol by the client, with the close code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct WsError {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> WsError {
    WsError {
        code: close::PROTOCOL,
        reason,
    }
}

/// The payload of a control frame (at most 125 bytes), owned so it outlives the read buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlPayload {
    buf: [u8; 125],
    len: u8,
}

impl ControlPayload {
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// One thing the client said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Unmasked payload bytes of a binary message (possibly a part of one frame).
    Data(&'a [u8]),
    Ping(ControlPayload),
    Pong,
    Close {
        code: Option<u16>,
    },
}

/// Streaming parser of client frames.
#[derive(Debug, Clone)]
pub struct FrameReader {
    header: [u8; 14],
    header_len: usize,
    in_payload: bool,
    opcode: u8,
    fin: bool,
    remaining: u64,
    mask: [u8; 4],
    mask_pos: usize,
    control: [u8; 125],
    control_len: usize,
    /// A fragmented binary message is in progress.
    in_message: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            header: [0; 14],
            header_len: 0,
            in_payload: false,
            opcode: 0,
            fin: true,
            remaining: 0,
            mask: [0; 4],
            mask_pos: 0,
            control: [0; 125],
            control_len: 0,
            in_message: false,
        }
    }
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Length of the header whose first bytes are in `h`, if enough is known.
    fn header_needed(h: &[u8]) -> usize {
        if h.len() < 2 {
            return 2;
        }
        let ext = match h[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
    }

    fn start_frame(&mut self) -> Result<(), WsError> {
        let h = &self.header[..self.header_len];
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err(protocol("reserved bits set (no extension was negotiated)"));
        }
        let opcode = h[0] & 0x0f;
        if h[1] & 0x80 == 0 {
            return Err(protocol("client frames must be masked"));
        }
        let (len, mask_at) = match h[1] & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => {
                let l = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if l >> 63 != 0 {
                    return Err(protocol("frame length out of range"));
                }
                (l, 10)
            }
            l => (l as u64, 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > 125 {
                    return Err(protocol(
                        "control frames must be final and at most 125 bytes",
                    ));
                }
            }
            OP_BINARY => {
                if self.in_message {
                    return Err(protocol("a new message started inside a fragmented one"));
                }
                self.in_message = !fin;
            }
            OP_CONTINUATION => {
                if !self.in_message {
                    return Err(protocol("continuation frame without a message"));
                }
                self.in_message = !fin;
            }
            OP_TEXT => {
                return Err(WsError {
                    code: close::UNSUPPORTED,
                    reason: "text frames are not supported; send binary",
                });
            }
            _ => return Err(protocol("unknown opcode")),
        }
        self.opcode = opcode;
        self.fin = fin;
        self.remaining = len;
        self.mask_pos = 0;
        self.control_len = 0;
        self.in_payload = true;
        self.header_len = 0;
        Ok(())
    }

    /// Parses from `buf[*pos..]`, advancing `pos`; returns the next event, or `None` when
    /// `buf` is used up. Data payloads are unmasked in place in `buf`.
    pub fn next<'b>(
        &mut self,
        buf: &'b mut [u8],
        pos: &mut usize,
    ) -> Result<Option<Event<'b>>, WsError> {
        loop {
            if !self.in_payload {
                while *pos < buf.len() {
                    let need = Self::header_needed(&self.header[..self.header_len]);
                    if self.header_len == need {
                        break;
                    }
                    let take = (need - self.header_len).min(buf.len() - *pos);
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&buf[*pos..*pos + take]);
                    self.header_len += take;
                    *pos += take;
                }
                let need = Self::header_needed(&self.header[..self.header_len]);
                if self.header_len < need || self.header_len < 2 {
                    return Ok(None);
                }
                self.start_frame()?;
            }
            let is_control = self.opcode >= OP_CLOSE;
            let take = (self.remaining.min((buf.len() - *pos) as u64)) as usize;
            if is_control {
                let dst = &mut self.control[self.control_len..self.control_len + take];
                dst.copy_from_slice(&buf[*pos..*pos + take]);
                unmask(dst, self.mask, self.mask_pos);
                self.control_len += take;
            }
            let start = *pos;
            *pos += take;
            self.remaining -= take as u64;
            let offset = self.mask_pos;
            self.mask_pos = (self.mask_pos + take) % 4;
            let done = self.remaining == 0;
            if done {
                self.in_payload = false;
            }
            if is_control {
                if !done {
                    return Ok(None);
                }
                let payload = &self.control[..self.control_len];
                return Ok(Some(match self.opcode {
                    OP_PING => {
                        let mut p = ControlPayload {
                            buf: [0; 125],
                            len: payload.len() as u8,
                        };
                        p.buf[..payload.len()].copy_from_slice(payload);
                        Event::Ping(p)
                    }
                    OP_PONG => Event::Pong,
                    _ => {
                        if payload.len() == 1 {
                            return Err(protocol("close frame with a 1-byte payload"));
                        }
                        Event::Close {
                            code: (payload.len() >= 2)
                                .then(|| u16::from_be_bytes([payload[0], payload[1]])),
                        }
                    }
                }));
            }
            if take > 0 {
                let data = &mut buf[start..start + take];
                unmask(data, self.mask, offset);
                return Ok(Some(Event::Data(data)));
            }
            if *pos >= buf.len() {
                return Ok(None);
            }
        }
    }
}

/// A frame as a browser sends it (masked with `mask`): the client side of the framing, which
/// the gateway never writes, for tests and benchmarks that play the browser.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `stream` fed in chunks of `n`; returns the data and the control events.
    fn parse(stream: &[u8], n: usize) -> (Vec<u8>, Vec<String>) {
        let mut r = FrameReader::new();
        let (mut data, mut events) = (Vec::new(), Vec::new());
        for chunk in stream.chunks(n) {
            let mut buf = chunk.to_vec();
            let mut pos = 0;
            while let Some(ev) = r.next(&mut buf, &mut pos).unwrap() {
                match ev {
                    Event::Data(d) => data.extend_from_slice(d),
                    other => events.push(format!("{other:?}")),
                }
            }
        }
        (data, events)
    }

    #[test]
    fn the_rfc_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn unmasking_matches_the_byte_at_a_time_definition() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            for offset in 0..4 {
                let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = orig.clone();
                unmask(&mut fast, mask, offset);
                let slow: Vec<u8> = orig
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn frames_split_anywhere_give_the_same_data_and_events() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = client_frame(OP_BINARY, true, b"RFB 003.008\n", [1, 2, 3, 4]);
        s.extend(client_frame(OP_PING, true, b"hi", [9, 9, 9, 9]));
        s.extend(client_frame(OP_BINARY, false, &big[..300], [5, 6, 7, 8]));
        s.extend(client_frame(
            OP_CONTINUATION,
            true,
            &big[300..],
            [8, 7, 6, 5],
        ));
        s.extend(client_frame(OP_BINARY, true, &[], [1, 1, 1, 1]));
        s.extend(client_frame(
            OP_CLOSE,
            true,
            &1000u16.to_be_bytes(),
            [4, 3, 2, 1],
        ));
        let mut expected = b"RFB 003.008\n".to_vec();
        expected.extend_from_slice(&big);
        for n in [1, 2, 3, 13, 125, 4096, 1 << 20] {
            let (data, events) = parse(&s, n);
            assert_eq!(data.len(), expected.len(), "chunk {n}");
            assert_eq!(data, expected, "chunk {n}");
            assert_eq!(
                events.last().unwrap(),
                "Close { code: Some(1000) }",
                "chunk {n}"
            );
            assert!(events.iter().any(|e| e.starts_with("Ping")), "chunk {n}");
        }
        // The ping payload comes back for the pong, however it was split.
        for n in [1, 3, 1 << 20] {
            let (_, events) = parse(&s, n);
            assert_eq!(events[0], "Ping([104, 105])");
        }
    }

    #[test]
    fn protocol_violations_are_refused_with_the_right_code() {
        let check = |frame: Vec<u8>, code: u16| {
            let mut r = FrameReader::new();
            let mut buf = frame;
            let mut pos = 0;
            let mut result = Ok(None);
            for _ in 0..4 {
                result = r.next(&mut buf, &mut pos).map(|e| e.map(|_| ()));
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result.unwrap_err().code, code);
        };
        let mut unmasked = client_frame(OP_BINARY, true, b"x", [0; 4]);
        unmasked[1] &= 0x7f;
        unmasked.truncate(2);
        unmasked.push(b'x');
        check(unmasked, close::PROTOCOL);
        check(
            client_frame(OP_TEXT, true, b"x", [1; 4]),
            close::UNSUPPORTED,
        );
        check(
            client_frame(OP_CONTINUATION, true, b"x", [1; 4]),
            close::PROTOCOL,
        );
        check(client_frame(OP_PING, false, b"x", [1; 4]), close::PROTOCOL);
        let mut rsv = client_frame(OP_BINARY, true, b"x", [1; 4]);
        rsv[0] |= 0x40;
        check(rsv, close::PROTOCOL);
        check(client_frame(0x3, true, b"x", [1; 4]), close::PROTOCOL);
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        let mut h = [0u8; MAX_SERVER_HEADER];
        assert_eq!(encode_header(OP_BINARY, 5, &mut h), 2);
        assert_eq!(&h[8..], &[0x82, 5]);
        assert_eq!(encode_header(OP_BINARY, 65535, &mut h), 4);
        assert_eq!(&h[6..], &[0x82, 126, 0xff, 0xff]);
        assert_eq!(encode_header(OP_BINARY, 65536, &mut h), 10);
        assert_eq!(&h[..], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        let f = close_frame(4001, &"é".repeat(100));
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn upgrade_requests_are_checked() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        h.insert("sec-websocket-version", "13".parse().unwrap());
        h.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        h.insert("sec-websocket-protocol", "base64, binary".parse().unwrap());
        let u = check_upgrade(&h).unwrap();
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.protocol, Some("binary"));
        h.insert("sec-websocket-version", "8".parse().unwrap());
        assert!(check_upgrade(&h).is_err());
        h.insert("sec-websocket-version", "13".parse().unwrap());
        h.remove("upgrade");
        assert!(check_upgrade(&h).is_err());
    }
}
