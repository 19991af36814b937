//! The benchmark's "VNC servers": one listener per behaviour, in a plain flavour (bytes from
//! the first moment) and an RFB flavour (RFB 3.8 greeting and VNC Authentication first, as
//! Xvnc does, then the viewer's ClientInit), which is what hpcdesk's gateway speaks to.

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
}

/// The listening address of each server.
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    pub plain: [SocketAddr; 3],
    pub rfb: [SocketAddr; 3],
}

/// Bytes received by the upload servers.
pub static UPLOADED: AtomicU64 = AtomicU64::new(0);

pub const BEHAVIOURS: [Behaviour; 3] = [Behaviour::Download, Behaviour::Upload, Behaviour::Echo];

pub async fn start() -> std::io::Result<Servers> {
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
    Ok(Servers {
        plain: [plain[0], plain[1], plain[2]],
        rfb: [rfb[0], rfb[1], rfb[2]],
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
