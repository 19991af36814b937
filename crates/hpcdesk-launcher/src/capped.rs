//! The one way hpcdesk reads what a user controls: the output of commands that run as the
//! user (the node agent through their shell start-up files, Slurm's tools), and files in
//! their home (job output, Xvnc's log, the agent's state files).
//!
//! Everything is read with a size cap, keeping the *tail* where a reason usually is; a
//! stream that goes on past a hard limit is cut off. Files are opened without following a
//! symlink and must be regular files, so a job output that is a link to `/dev/zero` or a
//! FIFO that never ends is refused rather than read. Time limits come from the caller:
//! commands run under [`Cmd`](crate::process::Cmd)'s timeout, and the agent itself runs
//! under the launcher's.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a stream or file is kept: its last 64 KiB.
pub const TAIL: usize = 64 * 1024;

/// A stream longer than this is cut off (the agent's replies are a few hundred bytes; this
/// much output means something is printing that should not be).
pub const STREAM_LIMIT: u64 = 4 << 20;

/// The last `cap` bytes of a stream, and how many bytes it had in all.
#[derive(Debug, Clone)]
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
    seen: u64,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
            seen: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        if bytes.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.buf.drain(..overflow);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes seen in all, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether bytes were dropped from the front.
    pub fn cut(&self) -> bool {
        self.seen > self.buf.len() as u64
    }

    /// The kept bytes as text; when the front was cut, from the first whole line on.
    pub fn text(&self) -> String {
        let mut start = 0;
        if self.cut()
            && let Some(nl) = self.buf.iter().position(|b| *b == b'\n')
        {
            start = nl + 1;
        }
        String::from_utf8_lossy(&self.buf[start..]).into_owned()
    }
}

/// Why a stream was not read to its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("more than {} of output", human_bytes(STREAM_LIMIT))]
    TooLong,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `r` to its end, keeping the last `cap` bytes; fails once it passed `limit` bytes.
pub async fn read_stream(
    mut r: impl AsyncRead + Unpin,
    cap: usize,
    limit: u64,
) -> Result<Tail, StreamError> {
    let mut tail = Tail::new(cap);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.push(&chunk[..n]);
        if tail.seen() > limit {
            return Err(StreamError::TooLong);
        }
    }
}

/// Opens a file a user controls: never through a symlink, never blocking on a FIFO, and
/// only if it is a regular file.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link, which hpcdesk does not follow",
                    path.display()
                ),
            ),
            _ => e,
        })?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// The last `cap` bytes of the regular file `path`, as text (from its first whole line).
pub fn file_tail(path: &Path, cap: usize) -> std::io::Result<String> {
    let mut f = open_regular(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(cap as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(cap.min(len as usize));
    f.take(cap as u64).read_to_end(&mut buf)?;
    let mut tail = Tail::new(cap);
    tail.seen = start;
    tail.push(&buf);
    Ok(tail.text())
}

/// The whole regular file `path`, if it is at most `cap` bytes (state files, reports).
pub fn small_file(path: &Path, cap: usize) -> std::io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut buf = Vec::new();
    f.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {}",
                path.display(),
                human_bytes(cap as u64)
            ),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_end() {
        let mut t = Tail::new(8);
        t.push(b"first line\nsecond\n");
        assert_eq!(t.seen(), 18);
        assert!(t.cut());
        // The last 8 bytes are "\nsecond\n": the text starts at the first whole line.
        assert_eq!(t.text(), "second\n");
        let mut t = Tail::new(5);
        t.push(b"abcdefgh\nij");
        assert_eq!(t.text(), "ij", "a cut line is dropped");
        let mut t = Tail::new(16);
        t.push(b"aaaa\nbbbb\n");
        t.push(b"cccc\ndddd\n");
        // Kept: "a\nbbbb\ncccc\ndddd\n", of which the cut first line goes.
        assert_eq!(t.text(), "bbbb\ncccc\ndddd\n");
        let mut t = Tail::new(100);
        t.push(b"short");
        assert!(!t.cut());
        assert_eq!(t.text(), "short");
    }

    #[tokio::test]
    async fn an_endless_stream_is_cut_off() {
        let zero = tokio::fs::File::open("/dev/zero").await.unwrap();
        let err = read_stream(zero, TAIL, 1 << 20).await.unwrap_err();
        assert!(matches!(err, StreamError::TooLong));
        let t = read_stream(&b"hello\nworld"[..], TAIL, STREAM_LIMIT)
            .await
            .unwrap();
        assert_eq!(t.text(), "hello\nworld");
    }

    #[test]
    fn files_are_read_only_when_regular_and_not_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("log");
        let mut text = "x".repeat(200_000);
        text.push_str("\nthe reason\n");
        std::fs::write(&f, &text).unwrap();
        let t = file_tail(&f, 1024).unwrap();
        assert!(t.len() <= 1024);
        assert!(t.ends_with("the reason\n"), "{t:?}");

        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(file_tail(&link, 1024).is_err(), "a link is not followed");
        assert!(small_file(&link, 1024).is_err());
        assert!(
            file_tail(Path::new("/dev/zero"), 1024).is_err(),
            "not a file"
        );

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(small_file(&fifo, 1024).is_err(), "a FIFO does not block");

        assert!(small_file(&f, 1024).is_err(), "too large");
        std::fs::write(&f, b"{}").unwrap();
        assert_eq!(small_file(&f, 1024).unwrap(), b"{}");
    }
}
