//! Reaching a server through one of the variants.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where a variant's connection goes.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    /// A WebSocket URL; `rfb` when the viewer's RFB handshake must be done first (hpcdesk).
    Ws {
        url: String,
        rfb: bool,
    },
}

pub enum Conn {
    Tcp(TcpStream),
    Ws {
        ws: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>,
        pending: Vec<u8>,
    },
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

pub async fn open(t: &Target) -> io::Result<Conn> {
    match t {
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Conn::Tcp(s))
        }
        Target::Ws { url, rfb } => {
            let mut req = url.as_str().into_client_request().map_err(other)?;
            req.headers_mut()
                .insert("sec-websocket-protocol", "binary".parse().map_err(other)?);
            let cfg = WebSocketConfig::default().write_buffer_size(0);
            let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
                .await
                .map_err(other)?;
            let mut c = Conn::Ws {
                ws: Box::new(ws),
                pending: Vec::new(),
            };
            if *rfb {
                // The viewer's side: version, security None, ClientInit.
                if c.recv_exact(12).await? != b"RFB 003.008\n" {
                    return Err(other("not an RFB 3.8 greeting"));
                }
                c.send(Bytes::from_static(b"RFB 003.008\n")).await?;
                if c.recv_exact(2).await? != [1, 1] {
                    return Err(other("security type None not offered"));
                }
                c.send(Bytes::from_static(&[1])).await?;
                if c.recv_exact(4).await? != [0, 0, 0, 0] {
                    return Err(other("security handshake failed"));
                }
                c.send(Bytes::from_static(&[1])).await?;
            }
            Ok(c)
        }
    }
}

impl Conn {
    pub async fn send(&mut self, data: Bytes) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(&data).await,
            Conn::Ws { ws, .. } => ws.send(Message::Binary(data)).await.map_err(other),
        }
    }

    /// What carries `message` on this connection as one RFB message, prepared once so that a
    /// test can send it again and again at no cost beyond the write: the bytes themselves on
    /// TCP, one binary WebSocket frame masked as a browser masks it on a WebSocket. (A
    /// browser masks on the user's machine; here the client shares the gateway's two cores,
    /// so it masks once rather than per message, like the plain TCP client that only writes.)
    pub fn prepare(&self, message: &[u8]) -> Bytes {
        match self {
            Conn::Tcp(_) => Bytes::copy_from_slice(message),
            Conn::Ws { .. } => Bytes::from(hpcdesk_gateway::ws::client_frame(
                hpcdesk_gateway::ws::OP_BINARY,
                true,
                message,
                [0x5a, 0xa5, 0x3c, 0xc3],
            )),
        }
    }

    /// Writes what [`Conn::prepare`] made, as it is.
    pub async fn send_prepared(&mut self, prepared: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(prepared).await,
            // tungstenite buffers no writes here (write_buffer_size 0) and sends nothing of
            // its own between messages, so whole frames may go to its socket directly.
            Conn::Ws { ws, .. } => ws.get_mut().write_all(prepared).await,
        }
    }

    /// Receives some bytes and returns how many (0 at the end of the stream).
    pub async fn recv_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Ws { ws, pending } => {
                if !pending.is_empty() {
                    let n = pending.len();
                    pending.clear();
                    return Ok(n);
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => return Ok(b.len()),
                        Some(Ok(Message::Close(_))) | None => return Ok(0),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(other(e)),
                    }
                }
            }
        }
    }

    pub async fn recv_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        match self {
            Conn::Tcp(s) => {
                let mut b = vec![0u8; n];
                s.read_exact(&mut b).await?;
                Ok(b)
            }
            Conn::Ws { ws, pending } => {
                while pending.len() < n {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => pending.extend_from_slice(&b),
                        Some(Ok(Message::Close(_))) | None => {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(other(e)),
                    }
                }
                Ok(pending.drain(..n).collect())
            }
        }
    }

    pub async fn close(self) {
        match self {
            Conn::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            Conn::Ws { mut ws, .. } => {
                let _ = (*ws).close(None).await;
            }
        }
    }
}
