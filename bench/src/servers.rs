//! The benchmark's "VNC servers": one listener per behaviour, in a plain flavour (bytes from
//! the first moment) and an RFB flavour (RFB 3.8 greeting and VNC Authentication first, as
//! Xvnc does, then the viewer's ClientInit), which is what hpcdesk's gateway speaks to.
//!
//! They run in a process of their own (`hpcdesk-bench servers`), so that the measuring
//! client and the servers each have a whole open-file limit for thousands of sockets. A
//! `stats` port answers with the upload byte count (8 bytes, big-endian) and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of each write of the download server, and of each upload message.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Streams 64 KiB writes until the peer goes away.
    Download,
    /// Counts what it receives.
    Upload,
    /// Echoes what it receives.
    Echo,
    /// Streams at [`PACED_MB_S`], like a busy full-HD desktop (the background load of the
    /// latency-under-load measurement, the same for every variant).
    Paced,
}

/// Rate of the [`Behaviour::Paced`] server.
pub const PACED_MB_S: usize = 192;

/// The listening address of each server.
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    pub plain: [SocketAddr; 4],
    pub rfb: [SocketAddr; 4],
    pub stats: SocketAddr,
}

impl Servers {
    /// `ready` line format: the ten addresses, space separated.
    pub fn to_line(self) -> String {
        self.plain
            .iter()
            .chain(self.rfb.iter())
            .chain(std::iter::once(&self.stats))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn from_line(line: &str) -> Option<Servers> {
        let a: Vec<SocketAddr> = line
            .split_whitespace()
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        (a.len() == 9).then(|| Servers {
            plain: [a[0], a[1], a[2], a[3]],
            rfb: [a[4], a[5], a[6], a[7]],
            stats: a[8],
        })
    }
}

/// Reads the upload byte count from a servers process.
pub async fn uploaded(stats: SocketAddr) -> std::io::Result<u64> {
    let mut s = TcpStream::connect(stats).await?;
    s.read_u64().await
}

/// `hpcdesk-bench servers`: runs the servers until killed.
pub async fn main() -> Result<(), crate::procs::Error> {
    let s = start().await?;
    println!("ready {}", s.to_line());
    std::future::pending::<()>().await;
    Ok(())
}

/// Bytes received by the upload servers.
pub static UPLOADED: AtomicU64 = AtomicU64::new(0);

pub const BEHAVIOURS: [Behaviour; 4] = [
    Behaviour::Download,
    Behaviour::Upload,
    Behaviour::Echo,
    Behaviour::Paced,
];

async fn start() -> std::io::Result<Servers> {
    let payload: Arc<[u8]> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut plain = Vec::new();
    let mut rfb = Vec::new();
    for flavour_rfb in [false, true] {
        for b in BEHAVIOURS {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            if flavour_rfb {
                rfb.push(addr)
            } else {
                plain.push(addr)
            }
            let payload = payload.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        let _ = serve(s, b, flavour_rfb, payload).await;
                    });
                }
            });
        }
    }
    let stats = TcpListener::bind("127.0.0.1:0").await?;
    let stats_addr = stats.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = stats.accept().await {
            let _ = s.write_u64(UPLOADED.load(Ordering::Relaxed)).await;
        }
    });
    Ok(Servers {
        plain: [plain[0], plain[1], plain[2], plain[3]],
        rfb: [rfb[0], rfb[1], rfb[2], rfb[3]],
        stats: stats_addr,
    })
}

async fn serve(
    mut s: TcpStream,
    b: Behaviour,
    rfb: bool,
    payload: Arc<[u8]>,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    if rfb {
        // Xvnc's side of RFB 3.8 with VNC Authentication. The response is not checked:
        // the gateway computes it all the same, which is the cost that matters here.
        s.write_all(b"RFB 003.008\n").await?;
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await?;
        s.write_all(&[1, 2]).await?;
        s.read_u8().await?;
        s.write_all(&[7u8; 16]).await?;
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await?;
        s.write_u32(0).await?;
        s.read_u8().await?; // ClientInit
    }
    match b {
        Behaviour::Download => loop {
            s.write_all(&payload).await?;
        },
        Behaviour::Upload => {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                UPLOADED.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Behaviour::Paced => {
            // Three 64 KiB writes per millisecond.
            let per_tick = (PACED_MB_S * 1_000_000 / 1000).div_ceil(CHUNK);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                for _ in 0..per_tick {
                    s.write_all(&payload).await?;
                }
            }
        }
        Behaviour::Echo => {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n]).await?;
            }
        }
    }
}
