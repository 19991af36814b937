//! The viewer's side of the connection.
//!
//! - [`ClientStream`]: a browser's connection as the HTTP server accepted it, plain TCP or
//!   TLS. The server serves HTTP on it; after a WebSocket upgrade the gateway takes it over.
//! - [`WsStream`]: during the RFB handshake, a byte stream over WebSocket frames, so the same
//!   `accept_viewer` that speaks to a plain socket in tests speaks to the browser here. Only
//!   used for the few bytes of the handshake; the relay then takes over the frame parser's
//!   state and any payload the viewer already sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ws::{self, Event, FrameReader, WsError};

/// A browser's connection: plain, or TLS terminated by hpcdesk (`server.tls_cert`).
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(t) => t,
            ClientStream::Tls(t) => t.get_ref().0,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(t) => Pin::new(t).poll_read(cx, buf),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(t) => Pin::new(t).poll_write(cx, data),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(t) => t.is_write_vectored(),
            ClientStream::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(t) => Pin::new(t).poll_flush(cx),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(t) => Pin::new(t).poll_shutdown(cx),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Byte-stream view of a WebSocket connection (binary frames).
pub struct WsStream<'a> {
    tcp: &'a mut ClientStream,
    reader: FrameReader,
    /// Raw bytes not yet parsed (the upgrade's leftover first, then reads).
    raw: Vec<u8>,
    raw_pos: usize,
    /// Payload received but not yet read by the handshake.
    payload: Vec<u8>,
    payload_pos: usize,
    /// Frames waiting to be written.
    out: Vec<u8>,
    out_pos: usize,
    /// A close frame arrived, or the protocol was violated.
    ended: Option<WsError>,
}

fn to_io(e: WsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<'a> WsStream<'a> {
    pub fn new(tcp: &'a mut ClientStream, leftover: &[u8]) -> Self {
        WsStream {
            tcp,
            reader: FrameReader::new(),
            raw: leftover.to_vec(),
            raw_pos: 0,
            payload: Vec::new(),
            payload_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            ended: None,
        }
    }

    /// Hands over the frame parser and the payload the viewer sent beyond the handshake.
    pub fn into_parts(self) -> (FrameReader, Vec<u8>) {
        (self.reader, self.payload[self.payload_pos..].to_vec())
    }

    /// Parses every raw byte on hand into payload (and queued pongs).
    fn parse(&mut self) -> Result<(), WsError> {
        let mut raw = std::mem::take(&mut self.raw);
        let mut pos = self.raw_pos;
        while let Some(ev) = self.reader.next(&mut raw, &mut pos)? {
            match ev {
                Event::Data(d) => self.payload.extend_from_slice(d),
                Event::Ping(p) => self
                    .out
                    .extend_from_slice(&ws::control_frame(ws::OP_PONG, p.as_slice())),
                Event::Pong => {}
                Event::Close { .. } => {
                    self.ended = Some(WsError {
                        code: ws::close::NORMAL,
                        reason: "the viewer closed the connection",
                    });
                    break;
                }
            }
        }
        raw.clear();
        self.raw = raw;
        self.raw_pos = 0;
        Ok(())
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut *self.tcp).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsStream<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.payload_pos < this.payload.len() {
                let n = buf.remaining().min(this.payload.len() - this.payload_pos);
                buf.put_slice(&this.payload[this.payload_pos..this.payload_pos + n]);
                this.payload_pos += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.ended.clone() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)));
            }
            if this.raw_pos < this.raw.len() {
                this.parse().map_err(to_io)?;
                continue;
            }
            let mut tmp = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut *this.tcp).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(rb.filled());
            this.parse().map_err(to_io)?;
            // A pong may have been queued; send it without waiting for a write call.
            if !this.out.is_empty() {
                let _ = this.poll_drain(cx)?;
            }
        }
    }
}

impl AsyncWrite for WsStream<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut header = [0u8; ws::MAX_SERVER_HEADER];
        let h = ws::encode_header(ws::OP_BINARY, data.len(), &mut header);
        this.out
            .extend_from_slice(&header[ws::MAX_SERVER_HEADER - h..]);
        this.out.extend_from_slice(data);
        // The frame is queued whole; flushing sends it.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut *this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut *this.tcp).poll_shutdown(cx)
    }
}
