//! Screenshots of desktops: hpcdesk connects to the desktop itself ([`crate::connect_desktop`],
//! so the server answers the VNC authentication and no browser ever holds the password),
//! captures one frame as a shared viewer that sends no input ([`hpcdesk_rfb::capture`]),
//! scales it to the width asked for and encodes it as PNG.
//!
//! A capture is no viewer: it is not in the [`crate::registry::Registry`], so it neither
//! counts as activity for the idle sweep nor takes one of a session's viewer places.

use std::time::Duration;

use hpcdesk_rfb::capture::{self, Frame};

use crate::{DesktopAddr, relay::Desktop};

/// Widths a screenshot may be asked for.
pub const WIDTHS: std::ops::RangeInclusive<u16> = 16..=3840;

#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    #[error("cannot reach the desktop: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Capture(#[from] capture::CaptureError),
    #[error("the desktop did not send its screen within {0:?}")]
    Timeout(Duration),
}

/// A PNG of the desktop at `addr`, `width` pixels wide (never wider than the screen), all
/// within `timeout`.
pub async fn png(
    addr: DesktopAddr<'_>,
    width: u16,
    timeout: Duration,
) -> Result<Vec<u8>, ScreenshotError> {
    let frame = tokio::time::timeout(timeout, async {
        let desktop = crate::connect_desktop(addr)
            .await
            .map_err(ScreenshotError::Connect)?;
        let frame = match desktop {
            Desktop::Plain(mut s) => capture::capture(&mut s).await?,
            Desktop::Tls(mut s) => capture::capture(&mut *s).await?,
        };
        Ok::<_, ScreenshotError>(frame)
    })
    .await
    .map_err(|_| ScreenshotError::Timeout(timeout))??;
    // Scaling and compressing a large screen takes milliseconds of CPU: off the runtime.
    tokio::task::spawn_blocking(move || encode(&capture::scale_to_width(&frame, width)))
        .await
        .map_err(|e| ScreenshotError::Connect(std::io::Error::other(e)))
}

/// `frame` as a PNG (8-bit RGB, fast compression).
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().expect("writing to memory");
    w.write_image_data(&frame.rgb)
        .expect("the frame's size matches its header");
    w.finish().expect("writing to memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_encodes_as_a_png_of_its_size() {
        let f = Frame {
            width: 3,
            height: 2,
            rgb: (0..18).collect(),
        };
        let png = encode(&f);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut r = decoder.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..18], &f.rgb[..]);
    }
}
