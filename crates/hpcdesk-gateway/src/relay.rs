//! The relay between a viewer (WebSocket) and a desktop (RFB over TCP), after both
//! handshakes.
//!
//! Two directions run concurrently in one task, each waiting only on its own sockets, so a
//! slow viewer never delays input and a burst of input never delays the screen:
//! - **down** (desktop → viewer): waits until the desktop socket is readable, takes a pooled
//!   buffer, reads into it behind room for the frame header, and writes header and payload in
//!   one write. It also sends pings, pongs and the final close frame: it owns the viewer's
//!   write half.
//! - **up** (viewer → desktop): reads raw WebSocket bytes into a pooled buffer, unmasks
//!   payload in place and writes it to the desktop as it arrives; a frame split across reads
//!   needs no reassembly. Input is noted for the idle sweep; for view-only viewers only
//!   protocol messages pass.
//!
//! Back-pressure: each direction awaits its write before reading more, so memory per
//! connection is bounded by two buffers, and none while idle (see [`crate::pool`]).
//!
//! A desktop reached over TLS ([`Desktop::Tls`]) is read through the TLS stream instead of
//! the raw socket: the down direction then holds one buffer while it waits, as TLS records
//! cannot be waited for without reading them.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use hpcdesk_rfb::{Class, ClientScanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use crate::pool::Buf;
use crate::registry::{CloseReason, Connection};
use crate::ws::{self, Event, FrameReader, MAX_SERVER_HEADER, close};

/// Reads a direction makes in a row before looking at its other duties.
const READ_BUDGET: usize = 16;

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The viewer sent a close frame (with this code) or hung up.
    ViewerClosed(Option<u16>),
    ViewerError(String),
    /// The viewer broke the WebSocket protocol or sent what a view-only viewer may not.
    Protocol {
        code: u16,
        reason: String,
    },
    DesktopClosed,
    DesktopError(String),
    /// No pong for two heartbeats.
    Timeout,
    /// The viewer took no data for `write_timeout` (it stopped reading).
    ViewerStalled,
    Closed(CloseReason),
}

impl End {
    /// The close frame to send the viewer, if one should be sent.
    pub fn close_frame(&self) -> Option<(u16, &str)> {
        Some(match self {
            End::ViewerClosed(Some(code)) => (*code, ""),
            End::ViewerClosed(None) => (close::NORMAL, ""),
            End::ViewerError(_) => return None,
            End::Protocol { code, reason } => (*code, reason.as_str()),
            End::DesktopClosed => (close::NORMAL, "the desktop closed the connection"),
            End::DesktopError(_) => (close::DESKTOP_UNAVAILABLE, "cannot reach the desktop"),
            End::Timeout => (close::TIMEOUT, "no answer to pings"),
            // A frame was cut off halfway: nothing more can be written.
            End::ViewerStalled => return None,
            End::Closed(CloseReason::SessionDeleted) => {
                (close::SESSION_DELETED, "the desktop session was deleted")
            }
            End::Closed(CloseReason::Shutdown) => (close::GOING_AWAY, "the gateway is restarting"),
        })
    }
}

/// Control frames the up direction asks the down direction to send.
#[derive(Default)]
struct Pending {
    pong: Option<Vec<u8>>,
    pong_seen: bool,
}

struct Control {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Control {
    fn with<R>(&self, f: impl FnOnce(&mut Pending) -> R) -> R {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The viewer's write half, remembering whether a frame was cut off halfway (then nothing
/// more may be written). A write that takes longer than `timeout` fails: a viewer that has
/// stopped reading (a zero TCP window) must not hold the relay forever, and while this
/// direction waits on it, it sends no pings that could notice.
struct Out {
    w: OwnedWriteHalf,
    torn: bool,
    timeout: Duration,
}

/// The error of a write that timed out.
fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the viewer takes no data")
}

impl Out {
    async fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        self.torn = true;
        tokio::time::timeout(self.timeout, self.w.write_all(frame))
            .await
            .map_err(|_| stalled())??;
        self.torn = false;
        Ok(())
    }
}

/// The end of a relay whose write to the viewer failed with `e`.
fn viewer_write_error(e: io::Error) -> End {
    if e.kind() == io::ErrorKind::TimedOut {
        End::ViewerStalled
    } else {
        End::ViewerError(e.to_string())
    }
}

/// The desktop's side of a relay, after the VNC authentication.
pub enum Desktop {
    /// Plain RFB (loopback).
    Plain(TcpStream),
    /// RFB inside TLS (VeNCrypt X509Vnc), for desktops reached over the network.
    Tls(Box<crate::tls::TlsDesktop>),
}

/// Everything a relay needs.
pub struct Relay {
    pub viewer: TcpStream,
    pub desktop: Desktop,
    /// The frame parser's state after the handshake.
    pub reader: FrameReader,
    /// Viewer payload received during the handshake, to forward first.
    pub early: Vec<u8>,
    pub view_only: bool,
    pub heartbeat: Duration,
    /// See [`Out`].
    pub write_timeout: Duration,
}

/// Byte counts of a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub down: u64,
    pub up: u64,
}

impl Relay {
    /// Runs until either side ends or the connection is told to close.
    pub async fn run(self, conn: &Connection) -> (End, Counts) {
        let (viewer_r, viewer_w) = self.viewer.into_split();
        let mut out = Out {
            w: viewer_w,
            torn: false,
            timeout: self.write_timeout,
        };
        let ctl = Control {
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
        };
        let mut up_state = Up {
            reader: self.reader,
            scanner: Some(ClientScanner::new()),
            view_only: self.view_only,
            filtered: Vec::new(),
            conn,
        };
        let early = self.early;
        let heartbeat = self.heartbeat;
        let (mut down_bytes, mut up_bytes) = (0u64, 0u64);
        let end = match self.desktop {
            Desktop::Plain(desktop) => {
                let (desktop_r, mut desktop_w) = desktop.into_split();
                let end = {
                    let closed = conn.closed();
                    let down = down(&desktop_r, &mut out, &ctl, heartbeat, &mut down_bytes);
                    let up = up(
                        &viewer_r,
                        &mut desktop_w,
                        &mut up_state,
                        &ctl,
                        early,
                        &mut up_bytes,
                    );
                    tokio::pin!(closed, down, up);
                    tokio::select! {
                        r = &mut closed => End::Closed(r),
                        e = &mut down => e,
                        e = &mut up => e,
                    }
                };
                let _ = desktop_w.shutdown().await;
                end
            }
            Desktop::Tls(tls) => {
                let (mut desktop_r, mut desktop_w) = tokio::io::split(*tls);
                let end = {
                    let closed = conn.closed();
                    let down =
                        down_stream(&mut desktop_r, &mut out, &ctl, heartbeat, &mut down_bytes);
                    let up = up(
                        &viewer_r,
                        &mut desktop_w,
                        &mut up_state,
                        &ctl,
                        early,
                        &mut up_bytes,
                    );
                    tokio::pin!(closed, down, up);
                    tokio::select! {
                        r = &mut closed => End::Closed(r),
                        e = &mut down => e,
                        e = &mut up => e,
                    }
                };
                let _ = desktop_w.shutdown().await;
                end
            }
        };
        let counts = Counts {
            down: down_bytes,
            up: up_bytes,
        };
        if !out.torn
            && let Some((code, reason)) = end.close_frame()
        {
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                out.write(&ws::close_frame(code, reason)),
            )
            .await;
            if matches!(sent, Ok(Ok(()))) && !matches!(end, End::ViewerClosed(_)) {
                // The closing handshake: let the viewer read our close frame and answer it
                // before the socket goes, or it may see a reset instead of the reason.
                let _ = tokio::time::timeout(Duration::from_secs(1), drain(&viewer_r)).await;
            }
        }
        let _ = out.w.shutdown().await;
        (end, counts)
    }
}

/// Reads and discards until the peer closes.
pub(crate) async fn drain(r: &OwnedReadHalf) {
    let mut buf = [0u8; 512];
    loop {
        if r.readable().await.is_err() {
            return;
        }
        match r.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Sends the pong the up direction asked for, and notes an answered ping.
async fn on_control(ctl: &Control, out: &mut Out, unanswered: &mut u32) -> Result<(), End> {
    let (pong, seen) = ctl.with(|p| (p.pong.take(), std::mem::take(&mut p.pong_seen)));
    if seen {
        *unanswered = 0;
    }
    if let Some(payload) = pong
        && let Err(e) = out.write(&ws::control_frame(ws::OP_PONG, &payload)).await
    {
        return Err(viewer_write_error(e));
    }
    Ok(())
}

/// A heartbeat: drops a viewer that missed two pings, or sends the next one.
async fn on_tick(ctl: &Control, out: &mut Out, unanswered: &mut u32) -> Result<(), End> {
    if ctl.with(|p| std::mem::take(&mut p.pong_seen)) {
        *unanswered = 0;
    }
    if *unanswered >= 2 {
        return Err(End::Timeout);
    }
    *unanswered += 1;
    out.write(&ws::control_frame(ws::OP_PING, b"hpcdesk"))
        .await
        .map_err(viewer_write_error)
}

/// Wraps `n` desktop bytes at `buf[MAX_SERVER_HEADER..]` in a frame and sends it.
async fn send_frame(out: &mut Out, buf: &mut [u8], n: usize) -> Result<(), End> {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let h = ws::encode_header(ws::OP_BINARY, n, &mut header);
    buf[MAX_SERVER_HEADER - h..MAX_SERVER_HEADER].copy_from_slice(&header[MAX_SERVER_HEADER - h..]);
    out.write(&buf[MAX_SERVER_HEADER - h..MAX_SERVER_HEADER + n])
        .await
        .map_err(viewer_write_error)
}

/// The down direction from a desktop read as a stream (TLS): one pooled buffer is held
/// while waiting.
async fn down_stream(
    desktop: &mut (impl AsyncRead + Unpin),
    out: &mut Out,
    ctl: &Control,
    heartbeat: Duration,
    bytes: &mut u64,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    let mut buf = Buf::take();
    loop {
        let step = tokio::select! {
            biased;
            _ = ctl.notify.notified() => on_control(ctl, out, &mut unanswered).await,
            r = desktop.read(&mut buf[MAX_SERVER_HEADER..]) => match r {
                Ok(0) => return End::DesktopClosed,
                Ok(n) => {
                    *bytes += n as u64;
                    send_frame(out, &mut buf, n).await
                }
                Err(e) => return End::DesktopError(e.to_string()),
            },
            _ = tick.tick() => on_tick(ctl, out, &mut unanswered).await,
        };
        if let Err(end) = step {
            return end;
        }
    }
}

async fn down(
    desktop: &OwnedReadHalf,
    out: &mut Out,
    ctl: &Control,
    heartbeat: Duration,
    bytes: &mut u64,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = ctl.notify.notified() => {
                if let Err(end) = on_control(ctl, out, &mut unanswered).await {
                    return end;
                }
            }
            r = desktop.readable() => {
                if let Err(e) = r {
                    return End::DesktopError(e.to_string());
                }
                let mut buf = Buf::take();
                for _ in 0..READ_BUDGET {
                    match desktop.try_read(&mut buf[MAX_SERVER_HEADER..]) {
                        Ok(0) => return End::DesktopClosed,
                        Ok(n) => {
                            if let Err(end) = send_frame(out, &mut buf, n).await {
                                return end;
                            }
                            *bytes += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return End::DesktopError(e.to_string()),
                    }
                }
            }
            _ = tick.tick() => {
                if let Err(end) = on_tick(ctl, out, &mut unanswered).await {
                    return end;
                }
            }
        }
    }
}

struct Up<'c> {
    reader: FrameReader,
    /// `None` once the stream could not be framed (then every byte counts as input).
    scanner: Option<ClientScanner>,
    view_only: bool,
    /// View-only output, reused.
    filtered: Vec<u8>,
    conn: &'c Connection,
}

impl Up<'_> {
    /// Forwards one piece of viewer payload to the desktop.
    async fn forward(
        &mut self,
        data: &[u8],
        desktop: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), End> {
        if self.view_only {
            let scanner = self.scanner.as_mut().ok_or_else(view_only_violation)?;
            self.filtered.clear();
            let filtered = &mut self.filtered;
            scanner
                .feed(data, |b, class| {
                    if class.allowed_view_only() {
                        filtered.extend_from_slice(b);
                    }
                })
                .map_err(|_| view_only_violation())?;
            if !self.filtered.is_empty() {
                write_desktop(desktop, &self.filtered).await?;
            }
            return Ok(());
        }
        match &mut self.scanner {
            Some(scanner) => {
                let mut input = false;
                if scanner
                    .feed(data, |_, c: Class| input |= c.is_activity())
                    .is_err()
                {
                    // An extension we cannot frame: relay blindly from now on.
                    self.scanner = None;
                    input = true;
                }
                if input {
                    self.conn.input();
                }
            }
            None => self.conn.input(),
        }
        write_desktop(desktop, data).await
    }
}

/// Writes to the desktop, flushing (a TLS stream holds written data until flushed; a socket
/// has nothing to flush).
async fn write_desktop(desktop: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> Result<(), End> {
    let written = async {
        desktop.write_all(data).await?;
        desktop.flush().await
    };
    written.await.map_err(|e| End::DesktopError(e.to_string()))
}

fn view_only_violation() -> End {
    End::Protocol {
        code: close::POLICY,
        reason: "this viewer may only watch".into(),
    }
}

async fn up(
    viewer: &OwnedReadHalf,
    desktop: &mut (impl AsyncWrite + Unpin),
    st: &mut Up<'_>,
    ctl: &Control,
    early: Vec<u8>,
    bytes: &mut u64,
) -> End {
    if !early.is_empty() {
        if let Err(end) = st.forward(&early, desktop).await {
            return end;
        }
        *bytes += early.len() as u64;
    }
    loop {
        if let Err(e) = viewer.readable().await {
            return End::ViewerError(e.to_string());
        }
        let mut buf = Buf::take();
        for _ in 0..READ_BUDGET {
            let n = match viewer.try_read(&mut buf) {
                Ok(0) => return End::ViewerClosed(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return End::ViewerError(e.to_string()),
            };
            let mut pos = 0;
            loop {
                let ev = match st.reader.next(&mut buf[..n], &mut pos) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        return End::Protocol {
                            code: e.code,
                            reason: e.reason.to_owned(),
                        };
                    }
                };
                match ev {
                    Event::Data(d) => {
                        let len = d.len() as u64;
                        if let Err(end) = st.forward(d, desktop).await {
                            return end;
                        }
                        *bytes += len;
                    }
                    Event::Ping(p) => {
                        ctl.with(|c| c.pong = Some(p.as_slice().to_vec()));
                        ctl.notify.notify_one();
                    }
                    Event::Pong => {
                        ctl.with(|c| c.pong_seen = true);
                        ctl.notify.notify_one();
                    }
                    Event::Close { code } => return End::ViewerClosed(code),
                }
            }
        }
    }
}
