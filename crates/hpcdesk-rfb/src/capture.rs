//! hpcdesk as a VNC viewer of one frame: after [`crate::handshake`] has authenticated to the
//! desktop, [`capture`] sends ClientInit (shared, so no viewer is disconnected), asks for
//! 32-bit true colour in Raw encoding, requests the whole screen once and reads the update
//! into an RGB buffer. It sends no input, so the desktop does not count it as activity.
//!
//! What the VNC server sends is read with caps: the screen at most [`MAX_PIXELS`], its name
//! and any clipboard text skipped within [`MAX_SKIP`]. The caller bounds the time.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest screen captured (7680x4320, the largest geometry hpcdesk starts).
pub const MAX_PIXELS: usize = 7680 * 4320;
/// Most bytes of names and clipboard text skipped while waiting for the frame.
pub const MAX_SKIP: usize = 1 << 20;

/// A captured screen, 8-bit RGB, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u16,
    pub height: u16,
    pub rgb: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("the VNC server closed the connection or failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the VNC server sent something unexpected: {0}")]
    Protocol(String),
}

fn protocol(s: impl Into<String>) -> CaptureError {
    CaptureError::Protocol(s.into())
}

/// Captures one frame of an authenticated RFB connection `s`.
pub async fn capture<S>(s: &mut S) -> Result<Frame, CaptureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // ClientInit: shared.
    s.write_all(&[1]).await?;
    s.flush().await?;
    let mut init = [0u8; 24];
    s.read_exact(&mut init).await?;
    let width = u16::from_be_bytes([init[0], init[1]]);
    let height = u16::from_be_bytes([init[2], init[3]]);
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    if name_len > MAX_SKIP {
        return Err(protocol(format!("a desktop name of {name_len} bytes")));
    }
    skip(s, name_len).await?;
    let pixels = width as usize * height as usize;
    if pixels == 0 || pixels > MAX_PIXELS {
        return Err(protocol(format!("a screen of {width}x{height}")));
    }

    let mut out = Vec::with_capacity(20 + 8 + 10);
    // SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 8 bits each, RGB at
    // shifts 16, 8, 0.
    out.extend_from_slice(&[0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]);
    out.extend_from_slice(&[0, 0, 0]);
    // SetEncodings: Raw only.
    out.extend_from_slice(&[2, 0, 0, 1, 0, 0, 0, 0]);
    // FramebufferUpdateRequest: not incremental, the whole screen.
    out.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    s.write_all(&out).await?;
    s.flush().await?;

    let mut rgb = vec![0u8; pixels * 3];
    let mut skipped = 0usize;
    loop {
        let kind = s.read_u8().await?;
        match kind {
            // FramebufferUpdate
            0 => {
                let mut head = [0u8; 3];
                s.read_exact(&mut head).await?;
                let rects = u16::from_be_bytes([head[1], head[2]]);
                let mut row = Vec::new();
                for _ in 0..rects {
                    let mut r = [0u8; 12];
                    s.read_exact(&mut r).await?;
                    let x = u16::from_be_bytes([r[0], r[1]]) as usize;
                    let y = u16::from_be_bytes([r[2], r[3]]) as usize;
                    let w = u16::from_be_bytes([r[4], r[5]]) as usize;
                    let h = u16::from_be_bytes([r[6], r[7]]) as usize;
                    let encoding = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                    if encoding != 0 {
                        return Err(protocol(format!("encoding {encoding}, not Raw")));
                    }
                    if x + w > width as usize || y + h > height as usize {
                        return Err(protocol(format!(
                            "a rectangle {w}x{h}+{x}+{y} outside the {width}x{height} screen"
                        )));
                    }
                    row.resize(w * 4, 0);
                    for line in y..y + h {
                        s.read_exact(&mut row).await?;
                        let start = (line * width as usize + x) * 3;
                        for (px, dst) in row
                            .chunks_exact(4)
                            .zip(rgb[start..start + w * 3].chunks_exact_mut(3))
                        {
                            // Little-endian 0x00RRGGBB: B, G, R, 0.
                            dst.copy_from_slice(&[px[2], px[1], px[0]]);
                        }
                    }
                }
                return Ok(Frame { width, height, rgb });
            }
            // SetColourMapEntries: not in true colour.
            1 => return Err(protocol("a colour map")),
            // Bell
            2 => {}
            // ServerCutText
            3 => {
                let mut head = [0u8; 7];
                s.read_exact(&mut head).await?;
                let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
                skipped += len;
                if skipped > MAX_SKIP {
                    return Err(protocol("too much clipboard text"));
                }
                skip(s, len).await?;
            }
            other => return Err(protocol(format!("message type {other}"))),
        }
    }
}

async fn skip<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Result<(), CaptureError> {
    let copied = tokio::io::copy(&mut s.take(n as u64), &mut tokio::io::sink()).await?;
    if copied < n as u64 {
        return Err(CaptureError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// `frame` scaled down to `width` pixels wide (height in proportion), each target pixel the
/// mean of the source pixels it covers. A frame narrower than `width` is returned as it is.
pub fn scale_to_width(frame: &Frame, width: u16) -> Frame {
    if width == 0 || width >= frame.width {
        return frame.clone();
    }
    let (sw, sh) = (frame.width as usize, frame.height as usize);
    let tw = width as usize;
    let th = ((sh * tw) / sw).max(1);
    let mut rgb = vec![0u8; tw * th * 3];
    for ty in 0..th {
        let (y0, y1) = (ty * sh / th, ((ty + 1) * sh / th).max(ty * sh / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * sw / tw, ((tx + 1) * sw / tw).max(tx * sw / tw + 1));
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &frame.rgb[(y * sw + x0) * 3..(y * sw + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += px[0] as u32;
                    sum[1] += px[1] as u32;
                    sum[2] += px[2] as u32;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let at = (ty * tw + tx) * 3;
            for c in 0..3 {
                rgb[at + c] = (sum[c] / n) as u8;
            }
        }
    }
    Frame {
        width: tw as u16,
        height: th as u16,
        rgb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A VNC server's side after authentication: ServerInit for a 4x2 screen, then a bell,
    /// clipboard text and an update in two Raw rectangles.
    async fn serve(mut s: tokio::io::DuplexStream, rect_encoding: i32) {
        let mut shared = [0u8; 1];
        s.read_exact(&mut shared).await.unwrap();
        assert_eq!(shared[0], 1, "shared");
        let mut init = vec![0, 4, 0, 2];
        init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        init.extend_from_slice(&4u32.to_be_bytes());
        init.extend_from_slice(b"desk");
        s.write_all(&init).await.unwrap();
        let mut asked = [0u8; 20 + 8 + 10];
        s.read_exact(&mut asked).await.unwrap();
        assert_eq!(asked[20], 2, "SetEncodings");
        assert_eq!(&asked[28..], &[3, 0, 0, 0, 0, 0, 0, 4, 0, 2]);
        let mut out = vec![2u8, 3, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'];
        out.extend_from_slice(&[0, 0, 0, 2]);
        // Left half (2x2), then the right half (2x2): pixel value = B, G, R, 0.
        for (x, enc) in [(0u16, 0i32), (2, rect_encoding)] {
            out.extend_from_slice(&x.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 2, 0, 2]);
            out.extend_from_slice(&enc.to_be_bytes());
            for i in 0..4u8 {
                out.extend_from_slice(&[i, 10 + x as u8, 200, 0]);
            }
        }
        s.write_all(&out).await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_is_read_from_raw_rectangles_past_bells_and_clipboard_text() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(server, 0));
        let f = capture(&mut client).await.unwrap();
        assert_eq!((f.width, f.height), (4, 2));
        // Row 0: left rect pixels 0,1 then right rect pixels 0,1.
        assert_eq!(&f.rgb[..6], &[200, 10, 0, 200, 10, 1]);
        assert_eq!(&f.rgb[6..12], &[200, 12, 0, 200, 12, 1]);
        assert_eq!(&f.rgb[12..15], &[200, 10, 2]);
    }

    #[tokio::test]
    async fn other_encodings_and_rectangles_off_screen_are_refused() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(server, 7));
        assert!(matches!(
            capture(&mut client).await,
            Err(CaptureError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn a_screen_too_large_is_refused_before_anything_is_allocated() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            let mut init = vec![0xff, 0xff, 0xff, 0xff];
            init.extend_from_slice(&[0; 16]);
            init.extend_from_slice(&0u32.to_be_bytes());
            server.write_all(&init).await.unwrap();
        });
        let e = capture(&mut client).await.unwrap_err();
        assert!(e.to_string().contains("65535x65535"), "{e}");
    }

    #[test]
    fn scaling_averages_the_pixels_it_covers() {
        let f = Frame {
            width: 4,
            height: 2,
            rgb: [[0u8, 0, 0], [255, 255, 255], [10, 20, 30], [10, 20, 30]]
                .iter()
                .cycle()
                .take(8)
                .flatten()
                .copied()
                .collect(),
        };
        let s = scale_to_width(&f, 2);
        assert_eq!((s.width, s.height), (2, 1));
        assert_eq!(&s.rgb, &[127, 127, 127, 10, 20, 30]);
        assert_eq!(scale_to_width(&f, 10), f);
    }
}
