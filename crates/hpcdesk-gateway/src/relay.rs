//! The relay between a viewer (WebSocket) and a desktop (RFB over TCP), after both
//! handshakes.
//!
//! Two directions run concurrently in one task, each waiting only on its own sockets, so a
//! slow viewer never delays input and a burst of input never delays the screen:
//! - **down** (desktop → viewer): waits until the desktop socket is readable, then moves
//!   what it has to the viewer as one binary frame per batch: it takes a pooled buffer, reads
//!   into it behind room for the frame header, and writes header and payload in one write.
//!   Between two plain sockets, with `gateway.splice`, the payload instead never enters user
//!   space ([`crate::splice`]: desktop → pipe → viewer, the frame header sent just before;
//!   copying again when no pipe can be had). It also sends pings, pongs and the final close
//!   frame: it owns the viewer's write half.
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
//! cannot be waited for without reading them. The same holds for the up direction of a
//! viewer that came over TLS ([`ClientStream::Tls`]); its writes are flushed through TLS.

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
use crate::splice::{self, Pipe};
use crate::viewer::ClientStream;
use crate::ws::{self, Event, FrameReader, MAX_SERVER_HEADER, close};

/// Reads a direction makes in a row before it lets the other viewers on its thread run
/// ([`give_way`]).
const READ_BUDGET: usize = 16;
/// The same for the screen's larger reads ([`Buf::take_screen`]): about as many bytes in a
/// row (1 MiB) as [`READ_BUDGET`] reads of an ordinary buffer.
const SCREEN_BUDGET: usize = 4;

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
            End::Closed(CloseReason::TimeLimit) => (
                close::SESSION_DELETED,
                "the desktop session reached its time limit",
            ),
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

/// How the up direction (which reads the viewer) gets a pong written by the down direction
/// (which owns the viewer's write half): only one task may write frames to the viewer, or
/// a pong could land in the middle of a screen update. A plain mutex, held only to set or
/// take a field and never across an await, because both directions run inside one task
/// (`select!`), so it is never contended; `Notify` wakes the down direction when it is
/// waiting on the desktop, and keeps a wake-up given while it was busy writing.
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
struct Out<W> {
    w: W,
    torn: bool,
    timeout: Duration,
}

/// The error of a write that timed out.
fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the viewer takes no data")
}

impl<W: AsyncWrite + Unpin> Out<W> {
    fn new(w: W, timeout: Duration) -> Self {
        Out {
            w,
            torn: false,
            timeout,
        }
    }

    /// Writes a whole frame and flushes it (a TLS stream holds written data until flushed;
    /// a socket has nothing to flush).
    async fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        self.torn = true;
        let written = async {
            self.w.write_all(frame).await?;
            self.w.flush().await
        };
        tokio::time::timeout(self.timeout, written)
            .await
            .map_err(|_| stalled())??;
        self.torn = false;
        Ok(())
    }
}

impl Out<OwnedWriteHalf> {
    /// Sends a frame `header` and then the batch's payload from its pipe, within the same
    /// time limit as [`Out::write`].
    async fn send_batch(&mut self, header: &[u8], batch: splice::Batch) -> io::Result<()> {
        self.torn = true;
        tokio::time::timeout(
            self.timeout,
            splice::send_batch(self.w.as_ref(), header, batch),
        )
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
    pub viewer: ClientStream,
    pub desktop: Desktop,
    /// The frame parser's state after the handshake.
    pub reader: FrameReader,
    /// Viewer payload received during the handshake, to forward first.
    pub early: Vec<u8>,
    pub view_only: bool,
    pub heartbeat: Duration,
    /// See [`Out`].
    pub write_timeout: Duration,
    /// Between two plain sockets, move the screen with [`splice_batches`] rather than
    /// [`copy_batches`] ([`crate::GatewayConfig::splice`]).
    pub splice: bool,
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
        let mut st = Up {
            reader: self.reader,
            scanner: Some(ClientScanner::new()),
            view_only: self.view_only,
            filtered: Vec::new(),
            conn,
        };
        let ctl = Control {
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
        };
        let timeout = self.write_timeout;
        let (early, heartbeat, splice) = (self.early, self.heartbeat, self.splice);
        let mut n = Counts::default();
        // Each pairing of the two sides; the plain ones wait on socket readiness and hold no
        // buffer while idle.
        let end = match (self.viewer, self.desktop) {
            (ClientStream::Plain(viewer), desktop) => {
                let (viewer_r, viewer_w) = viewer.into_split();
                let mut out = Out::new(viewer_w, timeout);
                let end = match desktop {
                    Desktop::Plain(desktop) => {
                        let (desktop_r, mut desktop_w) = desktop.into_split();
                        let down = down(
                            &desktop_r,
                            &mut out,
                            &ctl,
                            heartbeat,
                            &mut n.down,
                            async move |d, o, b| plain_batches(splice, d, o, b).await,
                        );
                        let up = up(&viewer_r, &mut desktop_w, &mut st, &ctl, early, &mut n.up);
                        let end = race(conn, down, up).await;
                        let _ = desktop_w.shutdown().await;
                        end
                    }
                    Desktop::Tls(tls) => {
                        let (mut desktop_r, mut desktop_w) = tokio::io::split(*tls);
                        let down =
                            down_stream(&mut desktop_r, &mut out, &ctl, heartbeat, &mut n.down);
                        let up = up(&viewer_r, &mut desktop_w, &mut st, &ctl, early, &mut n.up);
                        let end = race(conn, down, up).await;
                        let _ = desktop_w.shutdown().await;
                        end
                    }
                };
                close_viewer(&end, &mut out, drain(&viewer_r)).await;
                end
            }
            (ClientStream::Tls(viewer), desktop) => {
                let (mut viewer_r, viewer_w) = tokio::io::split(*viewer);
                let mut out = Out::new(viewer_w, timeout);
                let end = match desktop {
                    Desktop::Plain(desktop) => {
                        let (desktop_r, mut desktop_w) = desktop.into_split();
                        let down = down(
                            &desktop_r,
                            &mut out,
                            &ctl,
                            heartbeat,
                            &mut n.down,
                            async |d, o, b| copy_batches(d, o, b).await,
                        );
                        let up = up_stream(
                            &mut viewer_r,
                            &mut desktop_w,
                            &mut st,
                            &ctl,
                            early,
                            &mut n.up,
                        );
                        let end = race(conn, down, up).await;
                        let _ = desktop_w.shutdown().await;
                        end
                    }
                    Desktop::Tls(tls) => {
                        let (mut desktop_r, mut desktop_w) = tokio::io::split(*tls);
                        let down =
                            down_stream(&mut desktop_r, &mut out, &ctl, heartbeat, &mut n.down);
                        let up = up_stream(
                            &mut viewer_r,
                            &mut desktop_w,
                            &mut st,
                            &ctl,
                            early,
                            &mut n.up,
                        );
                        let end = race(conn, down, up).await;
                        let _ = desktop_w.shutdown().await;
                        end
                    }
                };
                close_viewer(&end, &mut out, drain_stream(&mut viewer_r)).await;
                end
            }
        };
        (end, n)
    }
}

/// Runs both directions until one ends or the connection is told to close.
async fn race(
    conn: &Connection,
    down: impl Future<Output = End>,
    up: impl Future<Output = End>,
) -> End {
    let closed = conn.closed();
    tokio::pin!(closed, down, up);
    tokio::select! {
        r = &mut closed => End::Closed(r),
        e = &mut down => e,
        e = &mut up => e,
    }
}

/// Lets the other tasks on this thread (other viewers' relays) run before a direction that
/// has used its budget of reads reads again. Without it, a desktop that always had more to
/// send kept its thread until Tokio's cooperative budget ran out, tens of MiB later, and
/// another viewer's keystroke on that thread waited behind it: a round trip's p99 beside a
/// flat-out download was 1.5–1.7× the plain relay's, 0.9–1.3× with this; with one thread
/// for each relay, 3.3–3.7× against 0.3–0.5× (`bench/gateway.sh --gateway-threads 1`).
async fn give_way() {
    tokio::task::yield_now().await;
}

/// The reads of a direction that reads a stream (TLS), which has no readiness to batch by:
/// it gives way after every [`READ_BUDGET`] of them.
#[derive(Default)]
struct StreamTurn(usize);

impl StreamTurn {
    async fn read_done(&mut self) {
        self.0 += 1;
        if self.0 == READ_BUDGET {
            self.0 = 0;
            give_way().await;
        }
    }
}

/// Sends the viewer the close frame `end` calls for, lets it answer (`drain` reads it to
/// its end), and shuts its side down.
async fn close_viewer<W: AsyncWrite + Unpin>(
    end: &End,
    out: &mut Out<W>,
    drain: impl Future<Output = ()>,
) {
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
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        }
    }
    let _ = out.w.shutdown().await;
}

/// Reads and discards until the peer closes (a stream: TLS).
async fn drain_stream(r: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 512];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            return;
        }
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
async fn on_control<W: AsyncWrite + Unpin>(
    ctl: &Control,
    out: &mut Out<W>,
    unanswered: &mut u32,
) -> Result<(), End> {
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
async fn on_tick<W: AsyncWrite + Unpin>(
    ctl: &Control,
    out: &mut Out<W>,
    unanswered: &mut u32,
) -> Result<(), End> {
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
async fn send_frame<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    buf: &mut [u8],
    n: usize,
) -> Result<(), End> {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let h = ws::encode_header(ws::OP_BINARY, n, &mut header);
    buf[MAX_SERVER_HEADER - h..MAX_SERVER_HEADER].copy_from_slice(&header[MAX_SERVER_HEADER - h..]);
    out.write(&buf[MAX_SERVER_HEADER - h..MAX_SERVER_HEADER + n])
        .await
        .map_err(viewer_write_error)
}

/// The down direction from a desktop read as a stream (TLS): one pooled buffer is held
/// while waiting.
async fn down_stream<W: AsyncWrite + Unpin>(
    desktop: &mut (impl AsyncRead + Unpin),
    out: &mut Out<W>,
    ctl: &Control,
    heartbeat: Duration,
    bytes: &mut u64,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    let mut buf = Buf::take();
    let mut turn = StreamTurn::default();
    loop {
        let step = tokio::select! {
            biased;
            _ = ctl.notify.notified() => on_control(ctl, out, &mut unanswered).await,
            r = desktop.read(&mut buf[MAX_SERVER_HEADER..]) => match r {
                Ok(0) => return End::DesktopClosed,
                Ok(n) => {
                    *bytes += n as u64;
                    let sent = send_frame(out, &mut buf, n).await;
                    turn.read_done().await;
                    sent
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

/// The down direction from a plain desktop socket: control messages and heartbeats as for
/// every viewer, and whenever the desktop is readable, `drain` moves what it has to the viewer
/// ([`copy_batches`], or [`splice_batches`] between two plain sockets).
async fn down<W: AsyncWrite + Unpin>(
    desktop: &OwnedReadHalf,
    out: &mut Out<W>,
    ctl: &Control,
    heartbeat: Duration,
    bytes: &mut u64,
    mut drain: impl AsyncFnMut(&OwnedReadHalf, &mut Out<W>, &mut u64) -> Result<(), End>,
) -> End {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    loop {
        let step = tokio::select! {
            biased;
            _ = ctl.notify.notified() => on_control(ctl, out, &mut unanswered).await,
            r = desktop.readable() => match r {
                Ok(()) => drain(desktop, out, bytes).await,
                Err(e) => return End::DesktopError(e.to_string()),
            },
            _ = tick.tick() => on_tick(ctl, out, &mut unanswered).await,
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// Copies up to [`SCREEN_BUDGET`] batches of what the desktop has through one pooled screen
/// buffer.
async fn copy_batches<W: AsyncWrite + Unpin>(
    desktop: &OwnedReadHalf,
    out: &mut Out<W>,
    bytes: &mut u64,
) -> Result<(), End> {
    let mut buf = Buf::take_screen();
    for _ in 0..SCREEN_BUDGET {
        if !copy_batch(desktop, &mut buf, out, bytes).await? {
            return Ok(());
        }
    }
    drop(buf);
    give_way().await;
    Ok(())
}

/// Reads one batch the desktop has into `buf` and sends it as a frame: `Ok(false)` when
/// there was nothing to read after all.
async fn copy_batch<W: AsyncWrite + Unpin>(
    desktop: &OwnedReadHalf,
    buf: &mut Buf,
    out: &mut Out<W>,
    bytes: &mut u64,
) -> Result<bool, End> {
    match desktop.try_read(&mut buf[MAX_SERVER_HEADER..]) {
        Ok(0) => Err(End::DesktopClosed),
        Ok(n) => {
            send_frame(out, buf, n).await?;
            *bytes += n as u64;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(End::DesktopError(e.to_string())),
    }
}

/// Moves what the desktop has between two plain sockets: spliced or copied.
async fn plain_batches(
    splice: bool,
    desktop: &OwnedReadHalf,
    out: &mut Out<OwnedWriteHalf>,
    bytes: &mut u64,
) -> Result<(), End> {
    if splice {
        splice_batches(desktop, out, bytes).await
    } else {
        copy_batches(desktop, out, bytes).await
    }
}

/// Moves up to [`READ_BUDGET`] batches between two plain sockets: each goes desktop → pipe →
/// viewer ([`crate::splice`]), the frame header sent just before it. Without a pipe (out of
/// descriptors), a batch is copied through a pooled buffer instead.
async fn splice_batches(
    desktop: &OwnedReadHalf,
    out: &mut Out<OwnedWriteHalf>,
    bytes: &mut u64,
) -> Result<(), End> {
    for _ in 0..READ_BUDGET {
        let batch = match Pipe::take() {
            Ok(pipe) => splice::fill(desktop.as_ref(), pipe),
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for the screen; copying");
                if copy_batch(desktop, &mut Buf::take(), out, bytes).await? {
                    continue;
                }
                return Ok(());
            }
        };
        let batch = match batch {
            Ok(Some(b)) => b,
            // All the desktop had is sent: nothing to give way for.
            Ok(None) => return Ok(()),
            Err(e) => return Err(End::DesktopError(e.to_string())),
        };
        if batch.is_empty() {
            return Err(End::DesktopClosed);
        }
        let n = batch.len();
        let mut header = [0u8; MAX_SERVER_HEADER];
        let h = ws::encode_header(ws::OP_BINARY, n, &mut header);
        out.send_batch(&header[MAX_SERVER_HEADER - h..], batch)
            .await
            .map_err(viewer_write_error)?;
        *bytes += n as u64;
    }
    give_way().await;
    Ok(())
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
            if let Some(e) = scanner.take_encodings() {
                self.conn.encodings(e);
            }
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
                } else if let Some(e) = scanner.take_encodings() {
                    self.conn.encodings(e);
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

/// Forwards what the viewer sent before the relay started.
async fn forward_early(
    early: Vec<u8>,
    desktop: &mut (impl AsyncWrite + Unpin),
    st: &mut Up<'_>,
    bytes: &mut u64,
) -> Result<(), End> {
    if !early.is_empty() {
        st.forward(&early, desktop).await?;
        *bytes += early.len() as u64;
    }
    Ok(())
}

/// Handles `raw`, the bytes of one read from the viewer: unmasks and forwards data, hands
/// pings and pongs to the down direction, and ends on a close frame or a protocol error.
async fn on_viewer_bytes(
    raw: &mut [u8],
    desktop: &mut (impl AsyncWrite + Unpin),
    st: &mut Up<'_>,
    ctl: &Control,
    bytes: &mut u64,
) -> Result<(), End> {
    let mut pos = 0;
    loop {
        let ev = match st.reader.next(raw, &mut pos) {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(End::Protocol {
                    code: e.code,
                    reason: e.reason.to_owned(),
                });
            }
        };
        match ev {
            Event::Data(d) => {
                let len = d.len() as u64;
                st.forward(d, desktop).await?;
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
            Event::Close { code } => return Err(End::ViewerClosed(code)),
        }
    }
}

/// The up direction from a plain viewer socket: waits for readiness with no buffer held.
async fn up(
    viewer: &OwnedReadHalf,
    desktop: &mut (impl AsyncWrite + Unpin),
    st: &mut Up<'_>,
    ctl: &Control,
    early: Vec<u8>,
    bytes: &mut u64,
) -> End {
    if let Err(end) = forward_early(early, desktop, st, bytes).await {
        return end;
    }
    'wait: loop {
        if let Err(e) = viewer.readable().await {
            return End::ViewerError(e.to_string());
        }
        let mut buf = Buf::take();
        for _ in 0..READ_BUDGET {
            let n = match viewer.try_read(&mut buf) {
                Ok(0) => return End::ViewerClosed(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue 'wait,
                Err(e) => return End::ViewerError(e.to_string()),
            };
            if let Err(end) = on_viewer_bytes(&mut buf[..n], desktop, st, ctl, bytes).await {
                return end;
            }
        }
        drop(buf);
        give_way().await;
    }
}

/// The up direction from a viewer read as a stream (TLS): one pooled buffer is held while
/// waiting.
async fn up_stream(
    viewer: &mut (impl AsyncRead + Unpin),
    desktop: &mut (impl AsyncWrite + Unpin),
    st: &mut Up<'_>,
    ctl: &Control,
    early: Vec<u8>,
    bytes: &mut u64,
) -> End {
    if let Err(end) = forward_early(early, desktop, st, bytes).await {
        return end;
    }
    let mut buf = Buf::take();
    let mut turn = StreamTurn::default();
    loop {
        let n = match viewer.read(&mut buf).await {
            Ok(0) => return End::ViewerClosed(None),
            Ok(n) => n,
            Err(e) => return End::ViewerError(e.to_string()),
        };
        if let Err(end) = on_viewer_bytes(&mut buf[..n], desktop, st, ctl, bytes).await {
            return end;
        }
        turn.read_done().await;
    }
}

#[cfg(test)]
mod tests {
    //! The relay over loopback socket pairs: a test viewer that speaks WebSocket frames and a
    //! test desktop that is a plain socket.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::net::TcpListener;

    use super::*;
    use crate::registry::Registry;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// A whole masked client frame.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        ws::client_frame(opcode, true, payload, [0x12, 0x34, 0x56, 0x78])
    }

    /// Reads one server frame: (opcode, payload).
    async fn server_frame(s: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.unwrap();
        (h[0] & 0x0f, payload)
    }

    /// The next data frame's payload, answering pings on the way.
    async fn next_data(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Vec<u8> {
        loop {
            match server_frame(s).await {
                (OP_BINARY_FRAME, p) => return p,
                (ws::OP_PING, p) => {
                    s.write_all(&client_frame(ws::OP_PONG, &p)).await.unwrap();
                    s.flush().await.unwrap();
                }
                (op, p) => panic!("unexpected frame {op}: {p:?}"),
            }
        }
    }

    const OP_BINARY_FRAME: u8 = ws::OP_BINARY;

    /// The close frame's code and reason, skipping anything before it.
    async fn close_of(s: &mut (impl AsyncRead + Unpin)) -> (u16, String) {
        loop {
            let (op, p) = server_frame(s).await;
            if op == ws::OP_CLOSE {
                let code = u16::from_be_bytes([p[0], p[1]]);
                return (code, String::from_utf8_lossy(&p[2..]).into_owned());
            }
        }
    }

    struct Setup {
        viewer: TcpStream,
        desktop: TcpStream,
        registry: Registry,
        relay: tokio::task::JoinHandle<(End, Counts)>,
    }

    async fn setup(view_only: bool, heartbeat: Duration, write_timeout: Duration) -> Setup {
        setup_moving(false, view_only, heartbeat, write_timeout).await
    }

    /// A relay between plain sockets that moves the screen with `splice` or by copying.
    async fn setup_moving(
        splice: bool,
        view_only: bool,
        heartbeat: Duration,
        write_timeout: Duration,
    ) -> Setup {
        let (viewer, relay_viewer) = pair().await;
        let (relay_desktop, desktop) = pair().await;
        let registry = Registry::new(Arc::new(chrono::Utc::now));
        let conn = registry.open("s1");
        let relay = Relay {
            viewer: ClientStream::Plain(relay_viewer),
            desktop: Desktop::Plain(relay_desktop),
            reader: FrameReader::new(),
            early: Vec::new(),
            view_only,
            heartbeat,
            write_timeout,
            splice,
        };
        let relay = tokio::spawn(async move { relay.run(&conn).await });
        Setup {
            viewer,
            desktop,
            registry,
            relay,
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_desktop_that_closes_closes_the_viewer_with_1000() {
        let mut s = setup(false, LONG, LONG).await;
        s.desktop.write_all(b"RFB screen bytes").await.unwrap();
        assert_eq!(next_data(&mut s.viewer).await, b"RFB screen bytes");
        // ClientInit, then a key press: unmasked on the desktop's side.
        let input = [1u8, 4, 1, 0, 0, 0, 0, 0x61];
        s.viewer
            .write_all(&client_frame(ws::OP_BINARY, &input))
            .await
            .unwrap();
        let mut got = [0u8; 9];
        s.desktop.read_exact(&mut got[..8]).await.unwrap();
        assert_eq!(&got[..8], &input);
        assert_eq!(s.registry.activity("s1").connections, 1);
        drop(s.desktop);
        assert_eq!(
            close_of(&mut s.viewer).await,
            (close::NORMAL, "the desktop closed the connection".into())
        );
        s.viewer.shutdown().await.unwrap();
        let (end, counts) = s.relay.await.unwrap();
        assert_eq!(end, End::DesktopClosed);
        assert_eq!((counts.down, counts.up), (16, 8));
        assert_eq!(s.registry.activity("s1").connections, 0);
    }

    /// Writes `total` bytes to `w` in 64 KiB pieces, counting what has been written.
    fn writer(
        mut w: impl AsyncWrite + Unpin + Send + 'static,
        total: usize,
        frame: bool,
    ) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let task = tokio::spawn(async move {
            let piece = vec![7u8; 64 << 10];
            let chunk = if frame {
                client_frame(ws::OP_BINARY, &piece)
            } else {
                piece.clone()
            };
            let mut sent = 0;
            while sent < total {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += piece.len();
                count.store(sent as u64, Ordering::Relaxed);
            }
        });
        (written, task)
    }

    /// Waits until `n` stops growing; returns where it stopped.
    async fn stalls(n: &AtomicU64) -> u64 {
        let mut last = n.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = n.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    const FLOOD: usize = 64 << 20;

    /// A relay of session `s1` between `viewer` and `desktop` with the usual settings (not
    /// view-only, no heartbeat or write timeout to speak of, the screen copied).
    fn spawn_relay(
        registry: &Registry,
        viewer: ClientStream,
        desktop: Desktop,
    ) -> tokio::task::JoinHandle<(End, Counts)> {
        let conn = registry.open("s1");
        tokio::spawn(async move {
            Relay {
                viewer,
                desktop,
                reader: FrameReader::new(),
                early: Vec::new(),
                view_only: false,
                heartbeat: LONG,
                write_timeout: LONG,
                splice: false,
            }
            .run(&conn)
            .await
        })
    }

    /// A TLS server side with a self-signed certificate, and the certificate's pin (what
    /// [`crate::tls::connect`] checks).
    fn tls_server() -> (tokio_rustls::TlsAcceptor, String) {
        use sha2::Digest;
        let made = rcgen::generate_simple_self_signed(vec!["hpcdesk".to_owned()]).unwrap();
        let pin = hex::encode(sha2::Sha256::digest(made.cert.der()));
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
        (tokio_rustls::TlsAcceptor::from(Arc::new(config)), pin)
    }

    /// A viewer that came over TLS (`server.tls_cert`): the same bytes both ways, whatever
    /// the record boundaries, and the same close.
    #[tokio::test]
    async fn a_viewer_over_tls_gets_the_same_bytes_both_ways_and_its_close() {
        let (acceptor, pin) = tls_server();
        let (viewer_tcp, relay_tcp) = pair().await;
        let (viewer, relay_viewer) = tokio::join!(
            crate::tls::connect(viewer_tcp, &pin),
            acceptor.accept(relay_tcp)
        );
        let (mut viewer, relay_viewer) = (viewer.unwrap(), relay_viewer.unwrap());
        let (relay_desktop, mut desktop) = pair().await;
        let registry = Registry::new(Arc::new(chrono::Utc::now));
        let relay = spawn_relay(
            &registry,
            ClientStream::Tls(Box::new(relay_viewer)),
            Desktop::Plain(relay_desktop),
        );

        // 1 MiB of screen, more than any TLS record or pooled buffer.
        let screen: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = screen.clone();
        let writer = tokio::spawn(async move {
            desktop.write_all(&sent).await.unwrap();
            desktop
        });
        let mut got = Vec::new();
        while got.len() < screen.len() {
            got.extend(next_data(&mut viewer).await);
        }
        assert!(got == screen, "the screen bytes arrive exactly");
        let mut desktop = writer.await.unwrap();

        // Input split across two writes (and so across TLS records).
        let frame = client_frame(ws::OP_BINARY, &[1u8, 4, 1, 0, 0, 0, 0, 0x61]);
        for half in [&frame[..5], &frame[5..]] {
            viewer.write_all(half).await.unwrap();
            viewer.flush().await.unwrap();
        }
        let mut input = [0u8; 8];
        desktop.read_exact(&mut input).await.unwrap();
        assert_eq!(input, [1u8, 4, 1, 0, 0, 0, 0, 0x61]);

        drop(desktop);
        assert_eq!(
            close_of(&mut viewer).await,
            (close::NORMAL, "the desktop closed the connection".into())
        );
        viewer.shutdown().await.unwrap();
        let (end, counts) = relay.await.unwrap();
        assert_eq!(end, End::DesktopClosed);
        assert_eq!((counts.down, counts.up), (1 << 20, 8));
        assert_eq!(registry.activity("s1").connections, 0);
    }

    /// 4 MiB of screen written in pieces of odd sizes, copied and spliced: every byte
    /// arrives, in order, in frames of the sizes the relay chose.
    #[tokio::test]
    async fn the_screen_arrives_exactly_whether_copied_or_spliced() {
        for splice in [false, true] {
            let mut s = setup_moving(splice, false, LONG, LONG).await;
            let screen: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
            let sent = screen.clone();
            let (desktop_r, mut desktop_w) = s.desktop.into_split();
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(77_777) {
                    desktop_w.write_all(piece).await.unwrap();
                }
                desktop_w
            });
            let mut got = Vec::with_capacity(screen.len());
            while got.len() < screen.len() {
                got.extend(next_data(&mut s.viewer).await);
            }
            assert!(
                got == screen,
                "the screen bytes arrive exactly (splice: {splice})"
            );
            drop((writer.await.unwrap(), desktop_r));
            let (end, counts) = s.relay.await.unwrap();
            assert_eq!(end, End::DesktopClosed);
            assert_eq!(counts.down, 4 << 20);
        }
    }

    /// Most bytes the far end may receive between two turns of another task on the relay's
    /// thread: one budget of reads (1 MiB of screen, or 16 reads) and what the sockets hold.
    /// Without the turns given away it was tens of MiB.
    const MOST_BETWEEN_TURNS: u64 = 16 << 20;

    /// A blocking socket of its own for a thread.
    fn std_socket(s: TcpStream) -> std::net::TcpStream {
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    }

    /// Runs `work` on a thread of its own with a Tokio runtime of its own (a flooding peer
    /// that must not share the relay's thread).
    fn on_own_thread(
        work: impl Future<Output = ()> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work)
        })
    }

    /// Reads `total` bytes from `far_end` on a thread of its own while this task takes turns
    /// on the test's one thread, beside the relay: returns what arrived, and the most that
    /// arrived between two of this task's turns.
    async fn arrivals_between_turns(mut far_end: std::net::TcpStream, total: u64) -> (u64, u64) {
        use std::io::Read;
        let seen = Arc::new(AtomicU64::new(0));
        let seen_w = seen.clone();
        let watcher = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < total {
                match far_end.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
                seen_w.store(got, Ordering::Relaxed);
            }
            got
        });
        let (mut last, mut gap) = (0u64, 0u64);
        while !watcher.is_finished() {
            tokio::task::yield_now().await;
            let now = seen.load(Ordering::Relaxed);
            gap = gap.max(now - last);
            last = now;
        }
        (watcher.join().unwrap(), gap)
    }

    /// Holds what [`arrivals_between_turns`] found to the bounds: everything arrived, and
    /// never more than [`MOST_BETWEEN_TURNS`] between two turns.
    fn assert_bounded((got, gap): (u64, u64), total: u64, what: &str) {
        assert!(got >= total, "{what}: {got} of {total} bytes arrived");
        assert!(
            gap < MOST_BETWEEN_TURNS,
            "{what}: {} MiB arrived between two turns of another task",
            gap >> 20
        );
    }

    /// A relay whose desktop always has more screen lets the other tasks on its thread run
    /// after each budget of reads, as on a gateway with more viewers than threads. The relay
    /// runs on this test's one thread beside a probe task; the desktop and the viewer are
    /// threads of their own, flat out. Between two turns of the probe, the viewer receives
    /// at most what one turn of the relay sent plus what the sockets held. Without the turns
    /// given away, the relay kept the thread until Tokio's cooperative budget ran out, tens
    /// of MiB later.
    #[tokio::test]
    async fn a_flooded_relay_lets_the_other_tasks_on_its_thread_run() {
        use std::io::Write;
        const SCREEN: u64 = 256 << 20;
        for splice in [false, true] {
            let flooded = setup_moving(splice, false, LONG, LONG).await;
            let mut desktop = std_socket(flooded.desktop);
            let flood = std::thread::spawn(move || {
                let piece = vec![7u8; 1 << 20];
                while desktop.write_all(&piece).is_ok() {}
            });
            let arrived = arrivals_between_turns(std_socket(flooded.viewer), SCREEN).await;
            assert_bounded(arrived, SCREEN, &format!("the screen (splice: {splice})"));
            flooded.relay.abort();
            drop(flood);
        }
    }

    /// The same on the paths that read a TLS stream: a desktop reached over TLS floods a
    /// plain viewer with screen, and a viewer that came over TLS floods a plain desktop with
    /// input (key events). Here each read goes through Tokio's cooperative budget as well,
    /// which alone kept the most between two turns to about 5 MiB of screen and 0.3–0.5 MiB
    /// of input; with the relay's own turns ([`StreamTurn`]) it was about 4 MiB and 0.3–1
    /// MiB. What this test guards is that neither TLS path ever holds the thread for long.
    #[tokio::test]
    async fn a_relay_flooded_over_tls_lets_the_other_tasks_on_its_thread_run() {
        const SCREEN: u64 = 256 << 20;
        const INPUT: u64 = 128 << 20;
        let registry = Registry::new(Arc::new(chrono::Utc::now));
        let relay = |viewer, desktop| spawn_relay(&registry, viewer, desktop);

        // Screen: TLS desktop → plain viewer.
        let (acceptor, pin) = tls_server();
        let (relay_desktop, desktop) = pair().await;
        let desktop = desktop.into_std().unwrap();
        let flood = on_own_thread(async move {
            let tcp = TcpStream::from_std(desktop).unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let piece = vec![7u8; 1 << 20];
            while tls.write_all(&piece).await.is_ok() {}
        });
        let relay_desktop = crate::tls::connect(relay_desktop, &pin).await.unwrap();
        let (viewer, relay_viewer) = pair().await;
        let down = relay(
            ClientStream::Plain(relay_viewer),
            Desktop::Tls(Box::new(relay_desktop)),
        );
        let arrived = arrivals_between_turns(std_socket(viewer), SCREEN).await;
        assert_bounded(arrived, SCREEN, "the screen from a desktop over TLS");
        down.abort();
        drop(flood);

        // Input: TLS viewer → plain desktop. ClientInit, then key events in 64 KiB frames.
        let (acceptor, pin) = tls_server();
        let (viewer, relay_viewer) = pair().await;
        let viewer = viewer.into_std().unwrap();
        let flood = on_own_thread(async move {
            let tcp = TcpStream::from_std(viewer).unwrap();
            let mut tls = crate::tls::connect(tcp, &pin).await.unwrap();
            let keys = client_frame(ws::OP_BINARY, &[4u8, 1, 0, 0, 0, 0, 0, 0x61].repeat(8192));
            let mut sent = tls.write_all(&client_frame(ws::OP_BINARY, &[1])).await;
            while sent.is_ok() {
                sent = tls.write_all(&keys).await;
            }
        });
        let relay_viewer = acceptor.accept(relay_viewer).await.unwrap();
        let (relay_desktop, desktop) = pair().await;
        let up = relay(
            ClientStream::Tls(Box::new(relay_viewer)),
            Desktop::Plain(relay_desktop),
        );
        let arrived = arrivals_between_turns(std_socket(desktop), INPUT).await;
        assert_bounded(arrived, INPUT, "the input from a viewer over TLS");
        up.abort();
        drop(flood);
    }

    #[tokio::test]
    async fn a_viewer_that_does_not_read_holds_the_desktop_back_and_then_gets_everything() {
        for splice in [false, true] {
            let mut s = setup_moving(splice, false, LONG, LONG).await;
            let (desktop_r, desktop_w) = s.desktop.into_split();
            let (written, task) = writer(desktop_w, FLOOD, false);
            let stuck = stalls(&written).await;
            assert!(
                stuck < (FLOOD as u64) / 4,
                "the relay reads the desktop only as fast as the viewer takes it ({stuck} bytes, splice: {splice})"
            );
            // The viewer reads again: everything arrives, in order, and the desktop goes on.
            let mut got = 0u64;
            while got < FLOOD as u64 {
                got += next_data(&mut s.viewer).await.len() as u64;
            }
            task.await.unwrap();
            assert_eq!(got, FLOOD as u64);
            drop(desktop_r);
        }
    }

    #[tokio::test]
    async fn a_desktop_that_does_not_read_holds_the_viewer_back() {
        let s = setup(false, LONG, LONG).await;
        let (viewer_r, viewer_w) = s.viewer.into_split();
        let (written, task) = writer(viewer_w, FLOOD, true);
        let stuck = stalls(&written).await;
        assert!(
            stuck < (FLOOD as u64) / 4,
            "the relay reads the viewer only as fast as the desktop takes it ({stuck} bytes)"
        );
        task.abort();
        drop((viewer_r, s.desktop));
    }

    #[tokio::test]
    async fn a_viewer_that_stops_reading_is_dropped_after_the_write_timeout() {
        for splice in [false, true] {
            let s = setup_moving(splice, false, LONG, Duration::from_millis(300)).await;
            let (desktop_r, desktop_w) = s.desktop.into_split();
            let (_written, task) = writer(desktop_w, FLOOD, false);
            let started = tokio::time::Instant::now();
            let (end, _) = tokio::time::timeout(Duration::from_secs(10), s.relay)
                .await
                .expect("the relay ends")
                .unwrap();
            assert_eq!(end, End::ViewerStalled, "splice: {splice}");
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(s.registry.activity("s1").connections, 0);
            task.abort();
            drop((desktop_r, s.viewer));
        }
    }

    #[tokio::test]
    async fn a_deleted_session_closes_its_viewers_with_4001() {
        let mut s = setup(false, LONG, LONG).await;
        s.registry.close_session("s1", CloseReason::SessionDeleted);
        assert_eq!(
            close_of(&mut s.viewer).await,
            (
                close::SESSION_DELETED,
                "the desktop session was deleted".into()
            )
        );
        s.viewer.shutdown().await.unwrap();
        let (end, _) = s.relay.await.unwrap();
        assert_eq!(end, End::Closed(CloseReason::SessionDeleted));
    }

    #[tokio::test]
    async fn a_viewer_close_is_echoed_with_its_code() {
        let mut s = setup(false, LONG, LONG).await;
        s.viewer
            .write_all(&client_frame(ws::OP_CLOSE, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(close_of(&mut s.viewer).await.0, 1000);
        let (end, _) = s.relay.await.unwrap();
        assert_eq!(end, End::ViewerClosed(Some(1000)));
    }

    #[tokio::test]
    async fn a_view_only_viewers_input_never_reaches_the_desktop() {
        let mut s = setup(true, LONG, LONG).await;
        // ClientInit, a key press, a pointer move, a framebuffer update request: only the
        // first and the last reach the desktop.
        let fbur = [3u8, 1, 0, 0, 0, 0, 0, 64, 0, 48];
        let mut msgs = vec![1u8];
        msgs.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0x61]);
        msgs.extend_from_slice(&[5, 1, 0, 10, 0, 10]);
        msgs.extend_from_slice(&fbur);
        s.viewer
            .write_all(&client_frame(ws::OP_BINARY, &msgs))
            .await
            .unwrap();
        let mut got = [0u8; 11];
        s.desktop.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], 1);
        assert_eq!(&got[1..], &fbur);
        // What cannot be framed is not passed on blindly, as for a full viewer: closed, 1008.
        s.viewer
            .write_all(&client_frame(ws::OP_BINARY, &[0xee, 1, 2, 3]))
            .await
            .unwrap();
        assert_eq!(
            close_of(&mut s.viewer).await,
            (close::POLICY, "this viewer may only watch".into())
        );
        s.viewer.shutdown().await.unwrap();
        let (end, _) = s.relay.await.unwrap();
        assert!(
            matches!(
                end,
                End::Protocol {
                    code: close::POLICY,
                    ..
                }
            ),
            "{end:?}"
        );
        let mut rest = Vec::new();
        s.desktop.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, Vec::<u8>::new(), "nothing after the update request");
    }

    #[tokio::test]
    async fn a_viewer_that_answers_no_pings_is_closed_with_4002() {
        let mut s = setup(false, Duration::from_millis(100), LONG).await;
        let started = tokio::time::Instant::now();
        assert_eq!(close_of(&mut s.viewer).await.0, close::TIMEOUT);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "two pings missed first"
        );
        s.viewer.shutdown().await.unwrap();
        assert_eq!(s.relay.await.unwrap().0, End::Timeout);
    }
}
