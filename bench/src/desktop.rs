//! `hpcdesk-bench desktop` (run with `bench/desktop.sh`): one real TigerVNC desktop, started
//! through `hpcdesk serve`, reached four ways in one run — directly, through a plain relay
//! (socat), through websockify 0.13 and through hpcdesk's launch URL — measured interleaved
//! (frame rates in turns of 200 ms between the four paths, key latencies path after path), the
//! table the medians of the rounds, each ratio the median of the rounds' own ratios.
//!
//! For each path:
//! - full-screen updates (non-incremental requests, one at a time) in Raw and in Tight with
//!   the viewer's default JPEG quality (noVNC: quality 6, compression 2): frames/s and MB/s;
//! - key → first update: a key typed into the desktop's xterm while an incremental request
//!   waits, timed to the first byte of the update it causes (p50, p99);
//! - the relay's CPU-seconds per GB moved during the Raw run (the relay process and its
//!   children, from /proc; none for the direct path).
//!
//! The paths that must authenticate themselves (direct, socat, websockify) read the desktop's
//! VNC password as root from the agent's password file; through hpcdesk the gateway answers
//! the VNC authentication, as it does for browsers.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::median;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, clap::Args)]
pub struct DesktopOptions {
    /// websockify 0.13 (bench/desktop.sh installs it in a venv).
    #[arg(long)]
    websockify: PathBuf,
    /// socat, the plain relay.
    #[arg(long, default_value = "socat")]
    socat: PathBuf,
    /// socat's buffer in bytes (its `-b`); by default socat's own, 8 KiB, as in the issue's
    /// measurements. A larger one makes socat a stronger plain relay to compare CPU per GB
    /// with (hpcdesk reads the screen 256 KiB at a time).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    socat_buffer: Option<u32>,
    /// The hpcdesk binary to serve with (a release build).
    #[arg(long, default_value = "target/release/hpcdesk")]
    hpcdesk: PathBuf,
    /// Rounds; each measures every path once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each frame-rate measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Keys typed per latency measurement.
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// The desktop's screen.
    #[arg(long, default_value = "1280x800")]
    geometry: String,
    /// The account the desktop runs as (default: hdtest as root, else yourself).
    #[arg(long)]
    user: Option<String>,
    /// Milliseconds of full-screen updates a path has in each turn (see `frames`); the
    /// `secs` of the measurement are taken in turns this long.
    #[arg(long, default_value_t = 200.0)]
    turn_ms: f64,
    /// Have the viewer read the pixel bytes it skips into user space, instead of the kernel
    /// dropping them: the viewer then takes more of the two cores from Xvnc and the relay.
    #[arg(long)]
    read_pixels: bool,
    /// hpcdesk's gateway splices the screen (`gateway.splice = true`) instead of copying it.
    #[arg(long)]
    splice: bool,
}

// ---------------------------------------------------------------------------------------
// A byte stream over TCP or WebSocket, with the reads an RFB client needs.
//
// The WebSocket side is framed here, on the raw socket, so that every path costs the client
// the same: one read into a scratch buffer, and a copy into the stream of the payload it
// parses (a WebSocket library would add copies of its own and measure itself, not the relay).
// Pixel data it only skips is dropped by the kernel as it arrives (`recv` with `MSG_TRUNC`),
// never copied to user space: this viewer shares the two cores with Xvnc and the relay, where
// a browser runs on the user's own machine, so each CPU-second it spends is one the path being
// measured does not get. `--read-pixels` makes it read them (and drop them in user space).

/// WebSocket framing state of the server → client direction.
#[derive(Default)]
struct WsIn {
    /// Header bytes of a frame not yet complete.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come, and its opcode.
    remaining: u64,
    opcode: u8,
    /// The payload of a ping still arriving, and pings to answer.
    ping: Option<Vec<u8>>,
    pings: Vec<Vec<u8>>,
    closed: bool,
}

struct Rfb {
    tcp: TcpStream,
    /// `Some` on a WebSocket path.
    ws: Option<WsIn>,
    scratch: Box<[u8]>,
    buf: Vec<u8>,
    pos: usize,
    /// Payload bytes still to drop as they arrive (the rest of a [`Rfb::skip`]).
    discard: usize,
    /// Whether dropped bytes are read first (`--read-pixels`), or dropped by the kernel.
    read_pixels: bool,
    /// Bytes received in all (payload, as a viewer sees it).
    received: u64,
    width: u16,
    height: u16,
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A masked client frame, as a browser sends it.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    hpcdesk_gateway::ws::client_frame(opcode, true, payload, [0x5a, 0xa5, 0x3c, 0xc3])
}

/// Drops bytes that have arrived on `tcp`, at most as many as `room` holds, uncopied: with
/// `MSG_TRUNC` the kernel discards TCP data instead of copying it out (`room` is never
/// written). How many.
async fn drop_bytes(tcp: &TcpStream, room: &mut [u8]) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    loop {
        tcp.readable().await?;
        match tcp.try_io(tokio::io::Interest::READABLE, || {
            recv(
                tcp.as_raw_fd(),
                room,
                MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)
        }) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Takes payload `data` into the stream `buf`, but for the first `discard` bytes, which are
/// dropped; `received` counts them all.
fn keep(buf: &mut Vec<u8>, discard: &mut usize, received: &mut u64, data: &[u8]) {
    let k = data.len().min(*discard);
    *discard -= k;
    buf.extend_from_slice(&data[k..]);
    *received += data.len() as u64;
}

impl Rfb {
    async fn tcp(addr: &str) -> io::Result<Rfb> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Rfb::new(s, None))
    }

    /// Opens `ws://host:port/path…` with subprotocol `binary`.
    async fn ws(url: &str) -> io::Result<Rfb> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| err(format!("not a ws:// URL: {url}")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut tcp = TcpStream::connect(host).await?;
        tcp.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: binary\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await?;
        // The answer's head, byte by byte (nothing of the stream after it is read).
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if tcp.read(&mut b).await? == 0 || head.len() > 8192 {
                return Err(err("the WebSocket upgrade was not answered"));
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(err(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&head).lines().next().unwrap_or("")
            )));
        }
        Ok(Rfb::new(tcp, Some(WsIn::default())))
    }

    fn new(tcp: TcpStream, ws: Option<WsIn>) -> Rfb {
        Rfb {
            tcp,
            ws,
            scratch: vec![0u8; 256 * 1024].into_boxed_slice(),
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            discard: 0,
            read_pixels: false,
            received: 0,
            width: 0,
            height: 0,
        }
    }

    /// Reads more into the buffer: at least the `want` payload bytes the parser waits for, if
    /// they have arrived, and not much more, so that pixel data that follows a header is left
    /// on the socket for the kernel to drop ([`Rfb::droppable`]) instead of being copied out
    /// with it. Cancel-safe: nothing changes until a read completes.
    async fn fill(&mut self, want: usize) -> io::Result<()> {
        if let Some(k) = self.droppable() {
            let n = drop_bytes(&self.tcp, &mut self.scratch[..k]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.discard -= n;
            self.received += n as u64;
            if let Some(w) = &mut self.ws {
                w.remaining -= n as u64;
            }
            return Ok(());
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // A read stops a server frame's WebSocket header past what is wanted, and reads at
        // least a small message's worth, so that a handful of headers takes one call.
        let limit = if self.read_pixels {
            self.scratch.len()
        } else {
            (want + hpcdesk_gateway::ws::MAX_SERVER_HEADER).clamp(64, self.scratch.len())
        };
        let n = self.tcp.read(&mut self.scratch[..limit]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let before = self.received;
        match &mut self.ws {
            None => keep(
                &mut self.buf,
                &mut self.discard,
                &mut self.received,
                &self.scratch[..n],
            ),
            Some(w) => {
                let mut data = &self.scratch[..n];
                while !data.is_empty() {
                    if w.remaining > 0 {
                        let k = data.len().min(w.remaining as usize);
                        match w.opcode {
                            0 | 2 => keep(
                                &mut self.buf,
                                &mut self.discard,
                                &mut self.received,
                                &data[..k],
                            ),
                            9 => w.ping.get_or_insert_default().extend_from_slice(&data[..k]),
                            _ => {}
                        }
                        w.remaining -= k as u64;
                        data = &data[k..];
                        if w.remaining == 0
                            && let Some(p) = w.ping.take()
                        {
                            w.pings.push(p);
                        }
                        continue;
                    }
                    w.header.push(data[0]);
                    data = &data[1..];
                    let h = &w.header;
                    if h.len() < 2 {
                        continue;
                    }
                    let need = 2 + match h[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    if h.len() < need {
                        continue;
                    }
                    let len = match h[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                        127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                        l => u64::from(l),
                    };
                    w.opcode = h[0] & 0x0f;
                    w.remaining = len;
                    w.header.clear();
                    match w.opcode {
                        8 => w.closed = true,
                        9 if len == 0 => w.pings.push(Vec::new()),
                        9 => w.ping = Some(Vec::new()),
                        _ => {}
                    }
                }
                let pings = std::mem::take(&mut w.pings);
                let closed = w.closed;
                for p in pings {
                    self.tcp.write_all(&client_frame(0xA, &p)).await?;
                }
                if closed && self.received == before {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Ok(())
    }

    /// How many of the next bytes on the socket may be left to the kernel to drop: skipped
    /// payload, within the current WebSocket data frame (never its header).
    fn droppable(&self) -> Option<usize> {
        if self.read_pixels || self.discard == 0 || self.pos != self.buf.len() {
            return None;
        }
        let k = match &self.ws {
            None => self.discard,
            Some(w) if w.remaining > 0 && w.header.is_empty() && matches!(w.opcode, 0 | 2) => {
                self.discard.min(w.remaining as usize)
            }
            Some(_) => 0,
        };
        Some(k.min(self.scratch.len())).filter(|k| *k > 0)
    }

    async fn bytes(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.buf.len() - self.pos < n {
            let want = n - (self.buf.len() - self.pos);
            self.fill(want).await?;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    async fn u8(&mut self) -> io::Result<u8> {
        Ok(self.bytes(1).await?[0])
    }

    async fn u16(&mut self) -> io::Result<u16> {
        let b = self.bytes(2).await?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    async fn u32(&mut self) -> io::Result<u32> {
        let b = self.bytes(4).await?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips `n` payload bytes: those already read, then the rest dropped as they arrive.
    async fn skip(&mut self, n: usize) -> io::Result<()> {
        let k = n.min(self.buf.len() - self.pos);
        self.pos += k;
        self.discard = n - k;
        while self.discard > 0 {
            self.fill(0).await?;
        }
        Ok(())
    }

    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if self.ws.is_some() {
            self.tcp.write_all(&client_frame(2, data)).await
        } else {
            self.tcp.write_all(data).await
        }
    }

    async fn close(mut self) {
        if self.ws.is_some() {
            let _ = self
                .tcp
                .write_all(&client_frame(8, &1000u16.to_be_bytes()))
                .await;
        }
        let _ = self.tcp.shutdown().await;
    }

    /// The RFB 3.8 handshake as a viewer: VNC authentication with `password`, or security
    /// type None (`None`: hpcdesk's gateway authenticates to the desktop itself). Then
    /// ClientInit (shared), ServerInit, and a 32-bit true-colour pixel format.
    async fn handshake(&mut self, password: Option<&[u8]>) -> io::Result<()> {
        let version = self.bytes(12).await?.to_vec();
        if !version.starts_with(b"RFB 003.") {
            return Err(err(format!("not an RFB server: {version:?}")));
        }
        self.send(b"RFB 003.008\n").await?;
        let n = self.u8().await? as usize;
        if n == 0 {
            let len = self.u32().await? as usize;
            let why = String::from_utf8_lossy(self.bytes(len).await?).into_owned();
            return Err(err(format!("the server refused: {why}")));
        }
        let types = self.bytes(n).await?.to_vec();
        match password {
            Some(pw) => {
                if !types.contains(&2) {
                    return Err(err(format!("no VNC authentication offered: {types:?}")));
                }
                self.send(&[2]).await?;
                let challenge: [u8; 16] = self.bytes(16).await?.try_into().expect("16 bytes");
                let response = hpcdesk_rfb::vnc_auth_response(pw, &challenge);
                self.send(&response).await?;
            }
            None => {
                if !types.contains(&1) {
                    return Err(err(format!("security type None not offered: {types:?}")));
                }
                self.send(&[1]).await?;
            }
        }
        if self.u32().await? != 0 {
            return Err(err("authentication failed"));
        }
        self.send(&[1]).await?;
        self.width = self.u16().await?;
        self.height = self.u16().await?;
        self.skip(16).await?;
        let name_len = self.u32().await? as usize;
        self.skip(name_len).await?;
        // SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 8 bits each.
        let mut m = vec![0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0];
        m.extend_from_slice(&[0, 0, 0]);
        self.send(&m).await
    }

    async fn set_encodings(&mut self, encodings: &[i32]) -> io::Result<()> {
        let mut m = vec![2u8, 0];
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        self.send(&m).await
    }

    async fn request(&mut self, incremental: bool) -> io::Result<()> {
        let mut m = vec![3u8, u8::from(incremental), 0, 0, 0, 0];
        m.extend_from_slice(&self.width.to_be_bytes());
        m.extend_from_slice(&self.height.to_be_bytes());
        self.send(&m).await
    }

    async fn key(&mut self, keysym: u32) -> io::Result<()> {
        let mut m = Vec::with_capacity(16);
        for down in [1u8, 0] {
            m.extend_from_slice(&[4, down, 0, 0]);
            m.extend_from_slice(&keysym.to_be_bytes());
        }
        self.send(&m).await
    }

    async fn pointer(&mut self, x: u16, y: u16) -> io::Result<()> {
        let mut m = vec![5u8, 0];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.send(&m).await
    }

    /// Reads server messages until a FramebufferUpdate has been read whole (its type byte
    /// already read when `typed`).
    async fn update(&mut self, typed: bool) -> io::Result<()> {
        let mut t = if typed { 0 } else { self.u8().await? };
        loop {
            match t {
                0 => break,
                // SetColourMapEntries, Bell, ServerCutText: skipped.
                1 => {
                    self.skip(3).await?;
                    let n = self.u16().await? as usize;
                    self.skip(n * 6).await?;
                }
                2 => {}
                3 => {
                    self.skip(3).await?;
                    let n = self.u32().await? as usize;
                    self.skip(n).await?;
                }
                other => return Err(err(format!("unexpected server message {other}"))),
            }
            t = self.u8().await?;
        }
        self.skip(1).await?;
        let rects = self.u16().await?;
        for _ in 0..rects {
            let _x = self.u16().await?;
            let _y = self.u16().await?;
            let w = self.u16().await? as usize;
            let h = self.u16().await? as usize;
            let enc = self.u32().await? as i32;
            match enc {
                0 => self.skip(w * h * 4).await?,
                1 => self.skip(4).await?,
                7 => self.tight(w, h).await?,
                -223 => {}
                -224 => break,
                other => return Err(err(format!("unexpected encoding {other}"))),
            }
        }
        Ok(())
    }

    /// Tight's compact length: 7 bits, 7 bits, 8 bits, little end first.
    async fn compact_len(&mut self) -> io::Result<usize> {
        let b0 = self.u8().await? as usize;
        if b0 & 0x80 == 0 {
            return Ok(b0);
        }
        let b1 = self.u8().await? as usize;
        if b1 & 0x80 == 0 {
            return Ok((b0 & 0x7f) | (b1 << 7));
        }
        let b2 = self.u8().await? as usize;
        Ok((b0 & 0x7f) | ((b1 & 0x7f) << 7) | (b2 << 14))
    }

    /// Skips one Tight rectangle (32-bit pixels at depth 24: 3-byte TPIXELs).
    async fn tight(&mut self, w: usize, h: usize) -> io::Result<()> {
        let ctl = self.u8().await? >> 4;
        match ctl {
            0x8 => self.skip(3).await,
            0x9 => {
                let n = self.compact_len().await?;
                self.skip(n).await
            }
            c if c & 0x8 == 0 => {
                let mut row = w * 3;
                if c & 0x4 != 0 {
                    match self.u8().await? {
                        0 | 2 => {}
                        1 => {
                            let colours = self.u8().await? as usize + 1;
                            self.skip(colours * 3).await?;
                            row = if colours == 2 { w.div_ceil(8) } else { w };
                        }
                        f => return Err(err(format!("unknown Tight filter {f}"))),
                    }
                }
                let size = row * h;
                if size < 12 {
                    self.skip(size).await
                } else {
                    let n = self.compact_len().await?;
                    self.skip(n).await
                }
            }
            c => Err(err(format!("unexpected Tight control {c:#x}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes and CPU.

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------------------------------
// The paths.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path4 {
    Direct,
    Socat,
    Websockify,
    Hpcdesk,
}

const PATHS: [Path4; 4] = [
    Path4::Direct,
    Path4::Socat,
    Path4::Websockify,
    Path4::Hpcdesk,
];

impl Path4 {
    fn name(self) -> &'static str {
        match self {
            Path4::Direct => "direct TCP to Xvnc",
            Path4::Socat => "plain relay (socat)",
            Path4::Websockify => "websockify 0.13",
            Path4::Hpcdesk => "hpcdesk launch URL",
        }
    }
}

struct Desktop {
    /// Xvnc's port.
    port: u16,
    password: Vec<u8>,
    /// The gateway's WebSocket URL of a fresh launch URL.
    ws_url: String,
    /// `hpcdesk serve`'s pid.
    server_pid: u32,
}

/// An open connection along one path, and the relay process to charge its CPU to.
struct Opened {
    rfb: Rfb,
    relay: Option<(u32, Option<tokio::process::Child>)>,
}

async fn open(path: Path4, d: &Desktop, o: &DesktopOptions) -> Result<Opened> {
    let mut opened = open_path(path, d, o).await?;
    opened.rfb.read_pixels = o.read_pixels;
    Ok(opened)
}

/// A viewer connected along `path`, past the RFB handshake.
async fn open_path(path: Path4, d: &Desktop, o: &DesktopOptions) -> Result<Opened> {
    let xvnc = format!("127.0.0.1:{}", d.port);
    Ok(match path {
        Path4::Direct => {
            let mut rfb = Rfb::tcp(&xvnc).await?;
            rfb.handshake(Some(&d.password)).await?;
            Opened { rfb, relay: None }
        }
        Path4::Socat => {
            let port = free_port();
            let mut socat = tokio::process::Command::new(&o.socat);
            if let Some(b) = o.socat_buffer {
                socat.args(["-b", &b.to_string()]);
            }
            let child = socat
                .arg(format!(
                    "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,nodelay"
                ))
                .arg(format!("TCP:{xvnc},nodelay"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_for_port_once(port).await?;
            let pid = child.id().unwrap_or(0);
            let mut rfb = Rfb::tcp(&format!("127.0.0.1:{port}")).await?;
            rfb.handshake(Some(&d.password)).await?;
            Opened {
                rfb,
                relay: Some((pid, Some(child))),
            }
        }
        Path4::Websockify => {
            let port = free_port();
            let child = tokio::process::Command::new(&o.websockify)
                .args(["--run-once", "--heartbeat", "0"])
                .arg(format!("127.0.0.1:{port}"))
                .arg(&xvnc)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_for_port_once(port).await?;
            let pid = child.id().unwrap_or(0);
            let mut rfb = Rfb::ws(&format!("ws://127.0.0.1:{port}/")).await?;
            rfb.handshake(Some(&d.password)).await?;
            Opened {
                rfb,
                relay: Some((pid, Some(child))),
            }
        }
        Path4::Hpcdesk => {
            let mut rfb = Rfb::ws(&d.ws_url).await?;
            rfb.handshake(None).await?;
            Opened {
                rfb,
                relay: Some((d.server_pid, None)),
            }
        }
    })
}

/// socat and websockify (`--run-once`) serve one connection: probing their port with a
/// connection would use it up, so wait for the listening socket in /proc/net/tcp instead.
async fn wait_for_port_once(port: u16) -> Result<()> {
    let hex = format!(":{port:04X} ");
    for _ in 0..200 {
        if std::fs::read_to_string("/proc/net/tcp")
            .is_ok_and(|t| t.lines().any(|l| l.contains(&hex) && l.contains(" 0A ")))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("the relay does not listen on {port}").into())
}

#[derive(Debug, Default, Clone)]
struct Sample {
    raw_fps: f64,
    raw_mbs: f64,
    tight_fps: f64,
    tight_mbs: f64,
    key_p50_ms: f64,
    key_p99_ms: f64,
    /// CPU-seconds per GB through the relay in the Raw run.
    cpu_s_per_gb: Option<f64>,
}

/// Full-screen updates with `encodings` on every path, until each path has spent `secs` on
/// them: each path's (frames/s, MB/s, relay CPU-seconds per GB), in [`PATHS`] order.
///
/// All four viewers are connected at once, and the paths take turns of `turn_ms` each, every
/// frame timed on its own, so that the frames a ratio compares were taken within a second of
/// each other: this machine's speed drifts by 2× within seconds (direct alone gave 336–704
/// frames/s in one run of 2-second blocks), which a block per path turns into noise in every
/// ratio. Frames never overlap (each waits for the last), so a path is idle while another
/// has its turn. Turns of a single frame are not used: alternating frame by frame made every
/// path fall to ~130 frames/s now and then (a stall of ~5 ms per frame, direct included),
/// which turns of 100 ms and more do not show.
async fn frames(
    d: &Desktop,
    o: &DesktopOptions,
    encodings: &[i32],
) -> Result<Vec<(f64, f64, Option<f64>)>> {
    let mut conns = Vec::new();
    for p in PATHS {
        let c = async {
            let mut c = open(p, d, o).await?;
            c.rfb.set_encodings(encodings).await?;
            // One frame to settle the encoder, then measure.
            c.rfb.request(false).await?;
            c.rfb.update(false).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        };
        conns.push(c.await.map_err(named(p))?);
    }
    let cpu = |c: &Opened| {
        c.relay
            .as_ref()
            .map(|(pid, _)| crate::procs::cpu_seconds(*pid))
    };
    let cpu0: Vec<_> = conns.iter().map(cpu).collect();
    let bytes0: Vec<_> = conns.iter().map(|c| c.rfb.received).collect();
    let budget = Duration::from_secs_f64(o.secs);
    let turn = Duration::from_secs_f64(o.turn_ms / 1e3);
    let mut spent = vec![Duration::ZERO; PATHS.len()];
    let mut count = vec![0u64; PATHS.len()];
    while spent.iter().any(|s| *s < budget) {
        for (i, c) in conns.iter_mut().enumerate() {
            if spent[i] >= budget {
                continue;
            }
            // At least one frame a turn, so that `--turn-ms 0` alternates frame by frame.
            let until = (spent[i] + turn).min(budget);
            loop {
                let t0 = Instant::now();
                c.rfb.request(false).await.map_err(named(PATHS[i]))?;
                c.rfb.update(false).await.map_err(named(PATHS[i]))?;
                spent[i] += t0.elapsed();
                count[i] += 1;
                if spent[i] >= until {
                    break;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let dt = spent[i].as_secs_f64();
        let bytes = (c.rfb.received - bytes0[i]) as f64;
        let per_gb = match (cpu0[i], cpu(&c)) {
            (Some(a), Some(b)) if bytes > 0.0 => Some((b - a).max(0.0) / (bytes / 1e9)),
            _ => None,
        };
        c.rfb.close().await;
        out.push((count[i] as f64 / dt, bytes / dt / 1e6, per_gb));
    }
    Ok(out)
}

/// An error of `path`'s, named.
fn named<E: std::fmt::Display>(path: Path4) -> impl Fn(E) -> String {
    move |e| format!("{}: {e}", path.name())
}

/// Key → first update (ms), `keys` times: p50, p99.
async fn keys(path: Path4, d: &Desktop, o: &DesktopOptions) -> Result<(f64, f64)> {
    let mut c = open(path, d, o).await?;
    c.rfb.set_encodings(&[7, -26, -254]).await?;
    c.rfb.request(false).await?;
    c.rfb.update(false).await?;
    // The xterm at the top left has the keyboard when the pointer is in it (twm).
    c.rfb.pointer(200, 150).await?;
    let mut lat = Vec::with_capacity(o.keys);
    for i in 0..o.keys {
        c.rfb.request(true).await?;
        // Quiet first: whatever else was going to be drawn is drawn.
        loop {
            match tokio::time::timeout(Duration::from_millis(40), c.rfb.u8()).await {
                Err(_) => break,
                Ok(t) => {
                    let t = t?;
                    if t == 0 {
                        c.rfb.update(true).await?;
                        c.rfb.request(true).await?;
                    } else {
                        return Err(format!("unexpected server message {t}").into());
                    }
                }
            }
        }
        // 'a', then BackSpace: the line stays short.
        let keysym = if i % 2 == 0 { 0x61 } else { 0xff08 };
        let t0 = Instant::now();
        c.rfb.key(keysym).await?;
        let t = c.rfb.u8().await?;
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        if t != 0 {
            return Err(format!("unexpected server message {t}").into());
        }
        c.rfb.update(true).await?;
    }
    c.rfb.close().await;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99)))
}

/// One round: frame rates of the four paths in turns ([`frames`]), then each path's key
/// latencies in turn, so that the paths compared in a ratio ran seconds apart at most.
async fn round(d: &Desktop, o: &DesktopOptions) -> Result<Vec<Sample>> {
    let raw = frames(d, o, &[0]).await?;
    let tight = frames(d, o, &[7, -26, -254]).await?;
    let mut key = Vec::new();
    for p in PATHS {
        key.push(keys(p, d, o).await.map_err(named(p))?);
    }
    Ok((0..PATHS.len())
        .map(|i| Sample {
            raw_fps: raw[i].0,
            raw_mbs: raw[i].1,
            cpu_s_per_gb: raw[i].2,
            tight_fps: tight[i].0,
            tight_mbs: tight[i].1,
            key_p50_ms: key[i].0,
            key_p99_ms: key[i].1,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// The desktop, through hpcdesk serve.

struct Server {
    child: tokio::process::Child,
    base: String,
    token: String,
    _dir: TempDir,
}

/// A directory removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn default_user() -> String {
    if nix::unistd::Uid::effective().is_root() {
        "hdtest".into()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "nobody".into())
    }
}

async fn start_server(o: &DesktopOptions, user: &str) -> Result<Server> {
    let dir = std::env::temp_dir().join(format!("hpcdesk-desktop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir = TempDir(dir);
    let config = dir.0.join("hpcdesk.toml");
    let secret: String = (0..32)
        .map(|i| char::from(b'a' + ((std::process::id() as usize * 7 + i * 13) % 26) as u8))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[auth]\njwt_secret = \"{secret}\"\n\n\
             [launcher]\ndefault_desktop = \"twm\"\ngeometry = \"{}\"\ndepth = 24\ndisplay_min = 500\ndisplay_max = 599\n\n\
             [gateway]\nsplice = {}\n",
            dir.0.join("data").display(),
            o.geometry,
            o.splice
        ),
    )?;
    let mut child = tokio::process::Command::new(&o.hpcdesk)
        .args(["serve", "--config"])
        .arg(&config)
        .env("HPCDESK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(rest) = l.split("listening on ").nth(1) {
                return Some(rest.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or("hpcdesk serve did not start")?;
    // Keep reading its log, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let out = tokio::process::Command::new(&o.hpcdesk)
        .arg("--config")
        .arg(&config)
        .args(["token", "--user", "bench", "--compute-user", user])
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("hpcdesk token: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(Server {
        child,
        base,
        token: String::from_utf8(out.stdout)?.trim().to_owned(),
        _dir: dir,
    })
}

/// The obfuscated password in an Xvnc password file, in the clear.
fn password_of(file: &Path) -> Result<Vec<u8>> {
    let b = std::fs::read(file)?;
    let first: [u8; 8] = b
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or("short password file")?;
    Ok(hpcdesk_rfb::password_from_file(&first).to_vec())
}

async fn desktop(server: &Server, user: &str) -> Result<Desktop> {
    let http = reqwest::Client::new();
    let vnc = format!("{}/hpc/openapi/v2/desktop/vnc", server.base);
    let created: serde_json::Value = http
        .put(&vnc)
        .header("token", &server.token)
        .send()
        .await?
        .json()
        .await?;
    let item = &created["data"];
    let id = item["sessionId"]
        .as_str()
        .ok_or_else(|| format!("create failed: {created}"))?;
    let display: u16 = item["displayNumber"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .or_else(|| item["displayNumber"].as_u64().map(|d| d as u16))
        .ok_or_else(|| format!("no display: {created}"))?;
    let path = crate::procs::viewer_path(&http, &vnc, id, &server.token).await?;
    let home = nix::unistd::User::from_name(user)?
        .ok_or_else(|| format!("no account {user}"))?
        .dir;
    let file = std::fs::read_dir(home.join(".hpcdesk/desktops"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&format!("-{display}")))
        })
        .ok_or("the desktop's directory is not there")?
        .join("passwd");
    Ok(Desktop {
        port: 5900 + display,
        password: password_of(&file)?,
        ws_url: format!("{}{path}", server.base.replacen("http://", "ws://", 1)),
        server_pid: server.child.id().unwrap_or(0),
    })
}

pub async fn run(o: DesktopOptions) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let user = o.user.clone().unwrap_or_else(default_user);
    let server = start_server(&o, &user).await?;
    // The desktop goes with the bench, however the measurement ends.
    let result = match desktop(&server, &user).await {
        Ok(d) => measure(&o, &d).await,
        Err(e) => Err(e),
    };
    delete_all(&server).await;
    result
}

async fn measure(o: &DesktopOptions, d: &Desktop) -> Result<()> {
    let (o, d) = (o, d);
    // The desktop draws its xterm; fill it with text, so that Tight has some to encode.
    {
        let mut c = open(Path4::Direct, d, o).await?;
        c.rfb.set_encodings(&[0]).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.rfb.pointer(200, 150).await?;
        for ch in "ls -l /usr/bin | head -40\r".chars() {
            let keysym = if ch == '\r' { 0xff0d } else { ch as u32 };
            c.rfb.key(keysym).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.rfb.close().await;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); PATHS.len()];
    for r in 0..o.rounds {
        for (i, s) in round(d, o).await?.into_iter().enumerate() {
            eprintln!(
                "round {}: {:<22} raw {:6.1} f/s {:7.1} MB/s, tight {:6.1} f/s {:6.1} MB/s, key p50 {:5.2} ms p99 {:5.2} ms, cpu {}",
                r + 1,
                PATHS[i].name(),
                s.raw_fps,
                s.raw_mbs,
                s.tight_fps,
                s.tight_mbs,
                s.key_p50_ms,
                s.key_p99_ms,
                s.cpu_s_per_gb
                    .map(|c| format!("{c:.2} s/GB"))
                    .unwrap_or_else(|| "-".into())
            );
            samples[i].push(s);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
        median(samples[i].iter().filter_map(f).collect())
    };
    let (w, h) = o.geometry.split_once('x').unwrap_or(("?", "?"));
    let socat_buffer = o
        .socat_buffer
        .map_or("its default 8 KiB".to_owned(), |b| format!("{b} bytes"));
    println!(
        "\nOne TigerVNC desktop ({w}x{h}, twm + xterm), {} interleaved rounds, medians; Raw and Tight (quality 6, compression 2) full-screen updates one at a time; socat's buffer {socat_buffer}.\n",
        o.rounds
    );
    println!(
        "| path | Raw frames/s | Raw MB/s | Tight frames/s | Tight MB/s | key → update p50 | p99 | relay CPU s/GB (Raw) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, p) in PATHS.iter().enumerate() {
        let cpu = med(i, &|s| s.cpu_s_per_gb);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {} |",
            p.name(),
            med(i, &|s| Some(s.raw_fps)),
            med(i, &|s| Some(s.raw_mbs)),
            med(i, &|s| Some(s.tight_fps)),
            med(i, &|s| Some(s.tight_mbs)),
            med(i, &|s| Some(s.key_p50_ms)),
            med(i, &|s| Some(s.key_p99_ms)),
            if cpu.is_nan() {
                "—".to_owned()
            } else {
                format!("{cpu:.2}")
            }
        );
    }
    // Each target's ratio is the median of the rounds' own ratios: the two paths of a ratio
    // ran back to back, where the table's medians may come from different minutes.
    let ratio = |a: usize, b: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
        median(
            samples[a]
                .iter()
                .zip(&samples[b])
                .filter_map(|(x, y)| Some(f(x)? / f(y)?))
                .collect(),
        )
    };
    let raw = |s: &Sample| Some(s.raw_fps);
    let key = |s: &Sample| Some(s.key_p50_ms);
    let cpu = |s: &Sample| s.cpu_s_per_gb;
    println!();
    println!("Ratios: the median of each round's ratio.");
    println!(
        "- Raw frames/s, hpcdesk ÷ direct: {:.2} (target ≥ 0.9); hpcdesk ÷ websockify: {:.2} (target ≥ 1.5)",
        ratio(3, 0, &raw),
        ratio(3, 2, &raw)
    );
    println!(
        "- key → update p50, hpcdesk ÷ direct: {:.2} (target ≤ 1.05)",
        ratio(3, 0, &key)
    );
    println!(
        "- relay CPU per GB, hpcdesk ÷ socat: {:.2} (target ≤ 0.6); websockify ÷ socat: {:.2}",
        ratio(3, 1, &cpu),
        ratio(2, 1, &cpu)
    );
    Ok(())
}

async fn delete_all(server: &Server) {
    let http = reqwest::Client::new();
    let vnc = format!("{}/hpc/openapi/v2/desktop/vnc", server.base);
    let Ok(r) = http.get(&vnc).header("token", &server.token).send().await else {
        return;
    };
    let Ok(list) = r.json::<serde_json::Value>().await else {
        return;
    };
    for s in list["data"].as_array().into_iter().flatten() {
        if let Some(id) = s["sessionId"].as_str() {
            let _ = http
                .delete(format!("{vnc}/{id}"))
                .header("token", &server.token)
                .send()
                .await;
        }
    }
}
