//! The service's log output: which events are written (`HPCDESK_LOG`, else `RUST_LOG`, else
//! `info`), where (stderr, which systemd hands to the journal), and how.
//!
//! - Colours only when stderr is a terminal: under systemd or redirected to a file, escape
//!   codes would litter every line.
//! - Lines are formatted where they happen and written by a thread of their own, which writes
//!   whatever has queued up in one `write` and flushes after every batch. A request pays for
//!   formatting its line, not for a system call. The queue is not lossy: when it is full
//!   (128 Ki lines behind a stalled journal), the logging thread waits rather than drop a line.
//!   The [`LogGuard`] flushes what is queued when the service ends normally; a `kill -9` loses
//!   at most the lines written in the last moment before it.
//!
//! `hpcdesk serve` and the API benchmark's server both start logging here, so the benchmark
//! pays for the same lines the service writes.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Keeps the logging thread alive; dropping it writes out what is queued.
#[must_use = "the log is flushed and stopped when this is dropped"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Installs the global log subscriber. Call once, before the service starts, and keep the
/// guard until it ends.
pub fn init() -> LogGuard {
    let filter = EnvFilter::try_from_env("HPCDESK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("hpcdesk-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .init();
    LogGuard { _worker: guard }
}
