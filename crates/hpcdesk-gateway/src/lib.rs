//! hpcdesk's WebSocket ↔ VNC gateway (DESIGN §3).
//!
//! A viewer connects with a grant token and `mm`. The gateway resolves the grant through a
//! [`GrantResolver`] (the server's store), connects to *that* session's VNC server — never
//! to a host or port the client names — authenticates to it with the session's password,
//! offers the browser security type None, and relays.
//!
//! - [`ws`]: server-side WebSocket framing without I/O.
//! - [`viewer`]: a byte-stream view of the WebSocket for the RFB handshake.
//! - [`relay`]: the two-direction relay with back-pressure and heartbeats.
//! - [`registry`]: open connections per session, last input, closing on delete.
//! - [`pool`]: buffers held only while data flows.
//! - [`tls`]: TLS to desktops off loopback, accepting only the desktop's own certificate.
//! - [`screenshot`]: one frame of a desktop as a PNG, through hpcdesk's own RFB connection.

#![forbid(unsafe_code)]

pub mod pool;
pub mod registry;
pub mod relay;
pub mod screenshot;
pub mod splice;
pub mod tls;
pub mod viewer;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use registry::{Activity, CloseReason, Connection, Now, Registry};
pub use relay::{Counts, End};
pub use viewer::ClientStream;

/// What a valid grant lets a viewer reach.
#[derive(Clone)]
pub struct Grant {
    pub session_key: String,
    /// For logs.
    pub session_id: String,
    pub owner: String,
    pub host: String,
    pub port: u16,
    /// The session's VNC password, opened from `mm`.
    pub password: Vec<u8>,
    pub view_only: bool,
    /// The SHA-256 (hex) of the desktop's TLS certificate: when set, the gateway speaks TLS
    /// to it (VeNCrypt X509Vnc) and accepts only that certificate.
    pub tls_pin: Option<String>,
}

impl Grant {
    /// Where its desktop is, and how to authenticate to it.
    pub fn addr(&self) -> DesktopAddr<'_> {
        DesktopAddr {
            host: &self.host,
            port: self.port,
            password: &self.password,
            tls_pin: self.tls_pin.as_deref(),
        }
    }
}

/// A desktop's VNC server, as a grant or a session record names it.
#[derive(Clone, Copy)]
pub struct DesktopAddr<'a> {
    pub host: &'a str,
    pub port: u16,
    /// The VNC password to answer its challenge with.
    pub password: &'a [u8],
    /// The SHA-256 (hex) of its TLS certificate: TLS (VeNCrypt X509Vnc) when set.
    pub tls_pin: Option<&'a str>,
}

/// Connects to the desktop at `addr` and authenticates with its password (inside TLS when it
/// has a certificate pin). The caller bounds the time.
pub async fn connect_desktop(addr: DesktopAddr<'_>) -> std::io::Result<relay::Desktop> {
    use hpcdesk_rfb::handshake;
    let mut s = TcpStream::connect((addr.host, addr.port)).await?;
    let _ = s.set_nodelay(true);
    let Some(pin) = addr.tls_pin else {
        handshake::authenticate_to_server(&mut s, addr.password)
            .await
            .map_err(std::io::Error::other)?;
        return Ok(relay::Desktop::Plain(s));
    };
    let version = handshake::start_x509_vnc(&mut s)
        .await
        .map_err(std::io::Error::other)?;
    let mut tls = tls::connect(s, pin).await?;
    handshake::vnc_auth(&mut tls, addr.password, version)
        .await
        .map_err(std::io::Error::other)?;
    Ok(relay::Desktop::Tls(Box::new(tls)))
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("session_id", &self.session_id)
            .field("owner", &self.owner)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &"<redacted>")
            .field("view_only", &self.view_only)
            .field("tls", &self.tls_pin.is_some())
            .finish()
    }
}

/// Why a connection attempt is refused before the upgrade (HTTP 403). The text is shown to
/// the viewer and logged; it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the launch link is incomplete (token and mm are required)")]
    Missing,
    #[error("the launch link is not valid")]
    UnknownGrant,
    #[error("the launch link has expired; open the desktop again from the portal")]
    Expired,
    #[error("the desktop session of this link was deleted")]
    Revoked,
    #[error("the desktop session of this link ended: it reached its time limit")]
    TimeLimit,
    #[error("the desktop session is not running")]
    NotRunning,
    #[error("the launch link is damaged (mm does not match)")]
    BadMm,
    #[error(
        "this desktop already has {0} viewers, the most allowed \
         (gateway.max_viewers_per_session)"
    )]
    TooManyViewers(u32),
    #[error("internal error")]
    Internal,
}

/// Turns a grant token and `mm` into a [`Grant`].
#[async_trait]
pub trait GrantResolver: Send + Sync + 'static {
    async fn resolve(&self, token: &str, mm: &str) -> Result<Grant, Refusal>;
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Ping interval; a viewer that misses two pongs is dropped.
    pub heartbeat: Duration,
    /// How long connecting and authenticating to the desktop may take.
    pub connect_timeout: Duration,
    /// A viewer that takes no data for this long is dropped: it holds a buffer and the
    /// desktop's socket, and would keep the desktop from being swept.
    pub write_timeout: Duration,
    /// Most viewers of one session (on this instance, plus those reported elsewhere).
    pub max_viewers_per_session: u32,
    /// Between a plain desktop socket and a plain viewer socket, move the screen with
    /// `splice` ([`crate::splice`]) instead of reading it into a buffer and writing it out.
    /// Which is cheaper depends on the kernel; see the README's benchmark.
    pub splice: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            heartbeat: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            max_viewers_per_session: 8,
            splice: false,
        }
    }
}

pub struct Gateway {
    resolver: Arc<dyn GrantResolver>,
    pub registry: Registry,
    cfg: GatewayConfig,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("cfg", &self.cfg).finish()
    }
}

impl Gateway {
    pub fn new(resolver: Arc<dyn GrantResolver>, registry: Registry, cfg: GatewayConfig) -> Self {
        Gateway {
            resolver,
            registry,
            cfg,
        }
    }

    /// Checks a grant before the upgrade.
    pub async fn resolve(&self, token: Option<&str>, mm: Option<&str>) -> Result<Grant, Refusal> {
        match (token, mm) {
            (Some(t), Some(m)) if !t.is_empty() && !m.is_empty() => {
                self.resolver.resolve(t, m).await
            }
            _ => Err(Refusal::Missing),
        }
    }

    /// Whether one more viewer of `grant`'s session may connect, with `elsewhere` viewers of
    /// it on other instances.
    pub fn admit(&self, grant: &Grant, elsewhere: u32) -> Result<(), Refusal> {
        let here = self.registry.activity(&grant.session_key).connections;
        let max = self.cfg.max_viewers_per_session;
        if here + elsewhere >= max {
            return Err(Refusal::TooManyViewers(max));
        }
        Ok(())
    }

    /// Serves one upgraded viewer connection to its end. `leftover` holds bytes the HTTP
    /// server read past the upgrade request.
    pub async fn serve(
        &self,
        viewer: ClientStream,
        leftover: &[u8],
        grant: Grant,
        peer: SocketAddr,
    ) -> (End, Counts) {
        let _ = viewer.tcp().set_nodelay(true);
        let started = Instant::now();
        // Checked again here, atomically: several viewers may have passed `admit` at once.
        let Some(conn) = self
            .registry
            .open_within(&grant.session_key, self.cfg.max_viewers_per_session)
        else {
            let reason = Refusal::TooManyViewers(self.cfg.max_viewers_per_session).to_string();
            let mut viewer = viewer;
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                viewer.write_all(&ws::close_frame(ws::close::POLICY, &reason)),
            )
            .await;
            let _ = viewer.shutdown().await;
            return (
                End::Protocol {
                    code: ws::close::POLICY,
                    reason,
                },
                Counts::default(),
            );
        };
        tracing::info!(session = %grant.session_id, owner = %grant.owner, %peer, view_only = grant.view_only, "viewer connected");
        let (end, counts) = self.run(viewer, leftover, &grant, &conn).await;
        tracing::info!(
            session = %grant.session_id, owner = %grant.owner, %peer,
            end = ?end, down = counts.down, up = counts.up,
            secs = started.elapsed().as_secs_f32(),
            "viewer disconnected"
        );
        (end, counts)
    }

    async fn run(
        &self,
        mut viewer: ClientStream,
        leftover: &[u8],
        grant: &Grant,
        conn: &Connection,
    ) -> (End, Counts) {
        let started = Instant::now();
        let opened = tokio::select! {
            r = self.open(&mut viewer, leftover, grant) => r,
            reason = conn.closed() => Err(End::Closed(reason)),
        };
        let (desktop, reader, early) = match opened {
            Ok(parts) => {
                self.registry
                    .viewer_stats()
                    .setup
                    .observe(started.elapsed());
                parts
            }
            Err(end) => {
                if let Some((code, reason)) = end.close_frame() {
                    let frame = ws::close_frame(code, reason);
                    let sent =
                        tokio::time::timeout(Duration::from_secs(2), viewer.write_all(&frame))
                            .await;
                    if matches!(sent, Ok(Ok(()))) {
                        // Let the viewer read the reason before the socket goes.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let mut buf = [0u8; 512];
                            while let Ok(n) = viewer.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                }
                let _ = viewer.shutdown().await;
                return (end, Counts::default());
            }
        };
        relay::Relay {
            viewer,
            desktop,
            reader,
            early,
            view_only: grant.view_only,
            heartbeat: self.cfg.heartbeat,
            write_timeout: self.cfg.write_timeout,
            splice: self.cfg.splice,
        }
        .run(conn)
        .await
    }

    /// Connects and authenticates to the desktop (over TLS when the session has a
    /// certificate pin), then greets the viewer.
    async fn open(
        &self,
        viewer: &mut ClientStream,
        leftover: &[u8],
        grant: &Grant,
    ) -> Result<(relay::Desktop, ws::FrameReader, Vec<u8>), End> {
        let desktop =
            tokio::time::timeout(self.cfg.connect_timeout, connect_desktop(grant.addr())).await;
        let desktop = match desktop {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(session = %grant.session_id, host = %grant.host, port = grant.port, error = %e, "cannot open the desktop");
                return Err(End::DesktopError(e.to_string()));
            }
            Err(_) => {
                tracing::warn!(session = %grant.session_id, host = %grant.host, port = grant.port, "the desktop did not answer in time");
                return Err(End::DesktopError(
                    "the desktop did not answer in time".into(),
                ));
            }
        };
        let mut ws = viewer::WsStream::new(viewer, leftover);
        match tokio::time::timeout(
            self.cfg.connect_timeout,
            hpcdesk_rfb::handshake::accept_viewer(&mut ws),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(End::ViewerError(e.to_string())),
            Err(_) => return Err(End::ViewerError("the viewer handshake timed out".into())),
        }
        let (reader, early) = ws.into_parts();
        Ok((desktop, reader, early))
    }
}
