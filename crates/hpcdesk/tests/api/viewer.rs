//! A minimal RFB viewer over WebSocket (tokio-tungstenite), written from the RFC and the
//! RFB spec independently of the gateway, to drive it the way noVNC does.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Viewer {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    buf: Vec<u8>,
    pub protocol: Option<String>,
}

/// What connecting got: a viewer, or the HTTP status of the refusal and its body.
pub enum Connect {
    Open(Box<Viewer>),
    Refused(u16, String),
}

/// `ws://host/vncws?token=…&mm=…` for a launch URL path like the API returns.
pub fn ws_url(base: &str, novnc_url: &str) -> String {
    let path = novnc_url
        .split("path=")
        .nth(1)
        .and_then(|p| p.split("&resize").next())
        .expect("launch URL carries path=");
    format!("{}{path}", base.replacen("http://", "ws://", 1))
}

/// A runtime for a test that drives viewers from blocking code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens a viewer on session `id` through a fresh launch URL and completes the RFB
/// handshake; returns it, what the server said, and the WebSocket URL (to try it again).
pub fn open_viewer(
    rt: &tokio::runtime::Runtime,
    app: &crate::helpers::TestApp,
    token: &str,
    id: &str,
) -> (Box<Viewer>, ServerInit, String) {
    let launch = app.launch_url(token, id);
    let url = launch["data"]["novncUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("no launch URL: {launch}"))
        .to_owned();
    let ws = ws_url(&app.base, &url);
    let Connect::Open(mut v) = rt.block_on(connect(&ws)) else {
        panic!("viewer refused");
    };
    let init = rt.block_on(v.handshake());
    (v, init, ws)
}

pub async fn connect(url: &str) -> Connect {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "binary".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => Connect::Open(Box::new(Viewer {
            ws,
            buf: Vec::new(),
            protocol: resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        })),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Connect::Refused(resp.status().as_u16(), body)
        }
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

/// ServerInit: framebuffer size and desktop name.
#[derive(Debug)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub name: String,
}

impl Viewer {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// The next `n` payload bytes; `Err` with the close frame if the gateway closes first.
    pub async fn recv_exact(&mut self, n: usize) -> Result<Vec<u8>, Option<CloseFrame>> {
        while self.buf.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(Message::Close(f)))) => return Err(f),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
                Ok(None) => return Err(None),
                Err(_) => panic!("no data from the gateway for 10 s"),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Sends `bytes`; `false` if the connection is gone.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .is_ok()
    }

    /// Payload received but not read yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads (and so answers pings) for `d`, keeping any payload for later.
    pub async fn pump(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let Message::Binary(b) = m {
                    self.buf.extend_from_slice(&b);
                }
            }
        })
        .await;
    }

    /// Waits for the gateway to close the connection; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| f.code.into()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The browser's side of the RFB handshake through the gateway: expects security
    /// type None only, then exchanges ClientInit / ServerInit.
    pub async fn handshake(&mut self) -> ServerInit {
        assert_eq!(self.recv_exact(12).await.unwrap(), b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        assert_eq!(
            self.recv_exact(2).await.unwrap(),
            vec![1, 1],
            "only None offered"
        );
        self.send(&[1]).await;
        assert_eq!(self.recv_exact(4).await.unwrap(), vec![0, 0, 0, 0]);
        self.send(&[1]).await; // ClientInit, shared
        let head = self.recv_exact(24).await.unwrap();
        let width = u16::from_be_bytes([head[0], head[1]]);
        let height = u16::from_be_bytes([head[2], head[3]]);
        let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
        let name = String::from_utf8_lossy(&self.recv_exact(name_len).await.unwrap()).into_owned();
        ServerInit {
            width,
            height,
            name,
        }
    }

    /// Asks for the whole screen in Raw encoding; returns the update's rectangle count.
    async fn request_raw_update(&mut self, width: u16, height: u16) -> u16 {
        self.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await; // SetEncodings [Raw]
        let mut req = vec![3, 0, 0, 0, 0, 0];
        req.extend_from_slice(&width.to_be_bytes());
        req.extend_from_slice(&height.to_be_bytes());
        self.send(&req).await;
        let head = self.recv_exact(4).await.unwrap();
        assert_eq!(head[0], 0, "FramebufferUpdate");
        u16::from_be_bytes([head[2], head[3]])
    }

    /// Asks for the whole screen in Raw encoding and returns the first update's rectangle
    /// count and the size of the first rectangle.
    pub async fn first_update(&mut self, width: u16, height: u16) -> (u16, u16, u16) {
        let rects = self.request_raw_update(width, height).await;
        let r = self.recv_exact(12).await.unwrap();
        let (w, h) = (
            u16::from_be_bytes([r[4], r[5]]),
            u16::from_be_bytes([r[6], r[7]]),
        );
        (rects, w, h)
    }

    /// Asks for the whole screen in Raw encoding and reads the whole update, pixels and all
    /// (32 bits per pixel, the server's default here); returns its rectangle count.
    pub async fn full_update(&mut self, width: u16, height: u16) -> u16 {
        let rects = self.request_raw_update(width, height).await;
        for _ in 0..rects {
            let r = self.recv_exact(12).await.unwrap();
            let (w, h) = (
                usize::from(u16::from_be_bytes([r[4], r[5]])),
                usize::from(u16::from_be_bytes([r[6], r[7]])),
            );
            assert_eq!(&r[8..12], &[0, 0, 0, 0], "Raw");
            self.recv_exact(w * h * 4).await.unwrap();
        }
        rects
    }

    /// A key press and release.
    pub async fn type_key(&mut self, keysym: u32) {
        for down in [1u8, 0] {
            let mut m = vec![4, down, 0, 0];
            m.extend_from_slice(&keysym.to_be_bytes());
            self.send(&m).await;
        }
    }
}
