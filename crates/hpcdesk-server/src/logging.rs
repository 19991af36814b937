//! The service's log output: which events are written (`HPCDESK_LOG`, else `RUST_LOG`, else
//! `info`), where (stderr, which systemd hands to the journal), and how.
//!
//! - **The line.** `tracing-subscriber`'s full format: time (UTC, µs), level, the spans, the
//!   target, the fields. On a terminal it comes in colour from `tracing-subscriber` itself;
//!   otherwise (the journal, a file) [`Line`] writes the same text without the escape codes,
//!   and at a fraction of the cost: the date and time of day are formatted once a second, not
//!   once a line. A launch URL logs its access line, so that cost is part of the API's
//!   throughput (`bench/api.sh` runs with the log on).
//! - **The queue.** A line is formatted where it happens and appended to a queue in memory;
//!   nobody is woken for it. A thread of its own writes the queue out in one `write`, a
//!   moment ([`LINGER`]) after the first line of a batch arrived, or at once when
//!   [`BATCH`] bytes are waiting. Under a stream of requests that is a few hundred writes a
//!   second, not one wake-up and one system call per line.
//! - **Nothing is dropped.** Past [`QUEUE_MAX`] bytes (a stalled journal), a line waits for
//!   room rather than be lost. [`LogGuard`] writes out what is queued when the service ends
//!   normally (waiting at most [`STOP_WAIT`] for an output that has stopped taking lines),
//!   and lines logged after that are written directly; a `kill -9` loses at most the last
//!   [`LINGER`] of lines.
//!
//! `hpcdesk serve` and the API benchmark's server both start logging here, so the benchmark
//! pays for the same lines the service writes.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How long the logging thread lets lines gather after the first one of a batch.
pub const LINGER: Duration = Duration::from_millis(2);
/// Bytes waiting at which the logging thread writes without lingering further.
pub const BATCH: usize = 64 << 10;
/// Bytes waiting past which a new line waits for the logging thread (never dropped).
pub const QUEUE_MAX: usize = 4 << 20;
/// How long the end of the service waits for the queue to be written out.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// Keeps the logging thread alive; dropping it writes out what is queued.
#[must_use = "the log is flushed and stopped when this is dropped"]
pub struct LogGuard {
    queue: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.stopping = true;
        self.queue.ready.notify_one();
        // The queue is written out, but a journal that has stopped reading must not keep the
        // service from ending: after STOP_WAIT the thread is left to it.
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !q.done {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            q = self
                .queue
                .room
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(q);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the global log subscriber. Call once, before the service starts, and keep the
/// guard until it ends.
pub fn init() -> LogGuard {
    let filter = EnvFilter::try_from_env("HPCDESK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if std::io::stderr().is_terminal() {
        builder.with_ansi(true).init();
    } else {
        builder
            .with_ansi(false)
            .event_format(Line)
            .fmt_fields(Fields)
            .init();
    }
    guard
}

/// Starts the logging thread writing to `out`: the writer to log through, and its guard.
fn start(out: impl Write + Send + 'static) -> (QueueWriter, LogGuard) {
    let queue = Arc::new(Queue::new(Box::new(out)));
    let thread = std::thread::Builder::new()
        .name("hpcdesk-log".into())
        .spawn({
            let queue = queue.clone();
            move || queue.write_out()
        })
        .expect("the logging thread starts");
    (
        QueueWriter(queue.clone()),
        LogGuard {
            queue,
            thread: Some(thread),
        },
    )
}

#[derive(Default)]
struct Queued {
    lines: Vec<u8>,
    /// The guard was dropped: write out what is queued and end.
    stopping: bool,
    /// The logging thread has ended: lines are written by whoever logs them.
    done: bool,
}

struct Queue {
    queued: Mutex<Queued>,
    /// Where lines go: the logging thread's, and anyone's once it has ended.
    out: Mutex<Box<dyn Write + Send>>,
    /// Lines arrived in an empty queue, a batch is full, or the guard was dropped.
    ready: Condvar,
    /// The queue was taken to be written (there is room again), or the thread has ended.
    room: Condvar,
}

impl Queue {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Queue {
            queued: Mutex::default(),
            out: Mutex::new(out),
            ready: Condvar::new(),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` out (errors are ignored: there is nowhere to report them).
    fn write(&self, bytes: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// Queues one formatted line (or writes it, once the logging thread has ended).
    fn push(&self, line: &[u8]) {
        let mut q = self.lock();
        while q.lines.len() >= QUEUE_MAX && !q.done {
            q = self.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.done {
            self.write(line);
            return;
        }
        let before = q.lines.len();
        q.lines.extend_from_slice(line);
        let wake = before == 0 || (before < BATCH && q.lines.len() >= BATCH);
        drop(q);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The logging thread: writes batches of lines to `out` until the guard is dropped.
    fn write_out(&self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let mut q = self.lock();
            while q.lines.is_empty() && !q.stopping {
                q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.stopping {
                // Written out until nothing is left, then lines are written by whoever logs
                // them: in order either way. Not under the lock, so that the guard can give
                // up on an output that has stopped taking lines.
                loop {
                    let lines = std::mem::take(&mut q.lines);
                    if lines.is_empty() {
                        q.done = true;
                        drop(q);
                        self.room.notify_all();
                        return;
                    }
                    drop(q);
                    self.room.notify_all();
                    self.write(&lines);
                    q = self.lock();
                }
            }
            if q.lines.len() < BATCH {
                q = self
                    .ready
                    .wait_timeout(q, LINGER)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            std::mem::swap(&mut q.lines, &mut batch);
            drop(q);
            self.room.notify_all();
            self.write(&batch);
            batch.clear();
        }
    }
}

/// Where the subscriber writes each formatted line (one `write_all` per event).
#[derive(Clone)]
struct QueueWriter(Arc<Queue>);

/// One event's writer.
struct LineSink<'a>(&'a Queue);

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink(&self.0)
    }
}

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tracing-subscriber`'s full format without colours, formatted for less:
/// `2026-12-06T19:48:14.371508Z  INFO span{a=1}:hpcdesk::access: answered method="GET" …`.
pub struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use tracing_log::NormalizeEvent;
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// `tracing-subscriber`'s default field format (`message name="text" n=3`) without
/// colours, with plain text and numbers written directly: the access line is all such.
/// Anything else (messages, errors, values that need escaping) is formatted by
/// `tracing-subscriber`'s own visitor, so it reads the same.
pub struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = FieldsVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldsVisitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet (no space before the next field).
    empty: bool,
    result: std::fmt::Result,
}

impl FieldsVisitor<'_> {
    /// A name written as is: not the message, no `r#`, not the `log.` metadata.
    fn plain(name: &str) -> bool {
        name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
    }

    /// `name=`, after a space if needed.
    fn name(&mut self, name: &str) -> std::fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(name)?;
        self.writer.write_char('=')
    }

    /// An integer field: written as it is under a plain name, else by `record`.
    fn integer(
        &mut self,
        field: &Field,
        value: impl std::fmt::Display,
        record: impl FnOnce(&mut DefaultVisitor<'_>),
    ) {
        if self.result.is_err() {
            return;
        }
        if Self::plain(field.name()) {
            self.result = self
                .name(field.name())
                .and_then(|()| write!(self.writer, "{value}"));
        } else {
            self.theirs(field, record);
        }
    }

    /// Has `tracing-subscriber`'s visitor format one field (it leaves out `log.` fields).
    fn theirs(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if field.name().starts_with("log.") {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.empty);
        record(&mut v);
        self.result = v.finish();
        self.empty = false;
    }
}

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        // Printable ASCII but `"` and `\\` reads the same quoted as through `Debug`.
        let plain_text = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if Self::plain(field.name()) && plain_text {
            self.result = self.name(field.name()).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        } else {
            self.theirs(field, |v| v.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value, |v| v.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value, |v| v.record_i64(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.theirs(field, |v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_ok() {
            self.theirs(field, |v| v.record_debug(field, value));
        }
    }
}

thread_local! {
    /// The second last formatted on this thread, and its text (`2026-12-06T19:48:14`).
    static SECOND: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((u64::MAX, String::new()))
    };
}

/// Writes `t` as `tracing-subscriber` does: `2026-12-06T19:48:14.371508Z` (UTC).
fn write_time(w: &mut impl std::fmt::Write, t: SystemTime) -> std::fmt::Result {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"))?;
            *second = secs;
        }
        w.write_str(text)
    })?;
    let micros = since.subsec_micros();
    let mut digits = *b".000000Z";
    let mut rest = micros;
    for d in digits[1..7].iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    w.write_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A writer collecting what it is given, for the stock formatter.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collect {
        type Writer = Collect;
        fn make_writer(&'a self) -> Collect {
            self.clone()
        }
    }

    /// An error with a source.
    #[derive(Debug)]
    struct Outer(std::fmt::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Logs the same events through whichever subscriber is the default.
    fn events() {
        tracing::info!(target: "hpcdesk::access", method = "GET", path = "/a/b--c", status = 200u16, micros = 7u64, "answered");
        tracing::info!(path = "/a \"b\" \\ é \u{1b}[31m", n = -3i64, ok = true, x = 1.5f64, list = ?[1, 2], r#type = "t", "message \u{1b}[1m with {}", "args");
        let e = Outer(std::fmt::Error);
        tracing::info!(error = &e as &(dyn std::error::Error + 'static), plain = %e);
        tracing::info!(log.target = "x", a = "b");
        let outer = tracing::info_span!("reconcile", node = "gv101");
        let _o = outer.enter();
        let inner = tracing::warn_span!("probe");
        let _i = inner.enter();
        tracing::warn!(error = %"broken pipe", "probe failed");
        tracing::error!("no fields");
        tracing::debug!(n = 3, "debug");
        tracing::trace!(n = 4, "trace");
    }

    /// Each line without its timestamp (the first 27 characters).
    fn untimed(text: &[u8]) -> Vec<String> {
        String::from_utf8(text.to_vec())
            .unwrap()
            .lines()
            .map(|l| l[27..].to_owned())
            .collect()
    }

    #[test]
    fn lines_read_as_the_stock_full_format_without_colours() {
        let stock = Collect::default();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(stock.clone())
            .finish();
        tracing::subscriber::with_default(sub, events);

        let ours = Collect::default();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(ours.clone())
            .event_format(Line)
            .fmt_fields(Fields)
            .finish();
        tracing::subscriber::with_default(sub, events);

        let (stock, ours) = (stock.0.lock().unwrap(), ours.0.lock().unwrap());
        eprintln!("{}", String::from_utf8_lossy(&ours));
        assert_eq!(untimed(&ours), untimed(&stock));
        assert_eq!(untimed(&ours).len(), 8);
        assert!(!ours.contains(&0x1b), "no escape codes");
    }

    #[test]
    fn time_reads_as_tracing_subscribers() {
        for secs in [0u64, 59, 86_399, 951_782_400, 1_796_584_094, 4_102_444_800] {
            for micros in [0u32, 7, 371_508, 999_999] {
                let t = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(secs)
                    + Duration::from_micros(u64::from(micros));
                let mut ours = String::new();
                write_time(&mut ours, t).unwrap();
                let theirs = chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                assert_eq!(ours, theirs);
            }
        }
    }

    /// Writes into `out` through the queue, lines from several threads, then drops the guard.
    fn through_queue(lines: usize, threads: usize) -> Vec<u8> {
        let out = Collect::default();
        let (writer, guard) = start(out.clone());
        std::thread::scope(|s| {
            for t in 0..threads {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..lines {
                        let mut w = writer.make_writer();
                        w.write_all(format!("thread {t} line {i:06}\n").as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(guard);
        // After the guard: written directly, not lost.
        writer
            .make_writer()
            .write_all(b"after the guard\n")
            .unwrap();
        out.0.lock().unwrap().to_vec()
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_per_thread() {
        // More than QUEUE_MAX in all, so that writers wait for room at times.
        let text = through_queue(120_000, 4);
        let text = String::from_utf8(text).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines().take(480_000) {
            let (t, i) = line
                .strip_prefix("thread ")
                .and_then(|l| l.split_once(" line "))
                .unwrap_or_else(|| panic!("a torn line: {line:?}"));
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "thread {t}'s order");
            next[t] += 1;
        }
        assert_eq!(next, [120_000; 4]);
        assert_eq!(text.lines().count(), 480_001);
    }

    /// An output that takes nothing until it is opened: a stalled journal.
    #[derive(Clone, Default)]
    struct Stalled {
        open: Arc<(Mutex<bool>, Condvar)>,
        taken: Collect,
    }

    impl Stalled {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            self.taken.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_holds_lines_back_within_the_cap_and_loses_none() {
        let out = Stalled::default();
        let (writer, guard) = start(out.clone());
        let line = [b'x'; 63];
        // More than the queue and the one batch the stalled thread holds can take together.
        let lines = 3 * QUEUE_MAX / 64;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let logger = std::thread::spawn({
            let (writer, done) = (writer.clone(), done.clone());
            move || {
                for _ in 0..lines {
                    let mut w = writer.make_writer();
                    w.write_all(&line).unwrap();
                    w.write_all(b"\n").unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        // The logger waits for room: not done, nothing dropped, the queue within its cap.
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        assert!(writer.0.lock().lines.len() <= QUEUE_MAX + 64);
        out.open();
        logger.join().unwrap();
        drop(guard);
        let taken = out.taken.0.lock().unwrap();
        assert_eq!(taken.len(), lines * 64);
        assert!(taken.chunks(64).all(|l| l[..63] == line && l[63] == b'\n'));
    }

    #[test]
    fn an_output_that_never_takes_lines_does_not_keep_the_service_from_ending() {
        let out = Stalled::default();
        let (writer, guard) = start(out.clone());
        writer.make_writer().write_all(b"never taken\n").unwrap();
        let t0 = std::time::Instant::now();
        drop(guard);
        let took = t0.elapsed();
        assert!(
            took >= STOP_WAIT && took < STOP_WAIT + Duration::from_secs(2),
            "{took:?}"
        );
        // The logging thread is left waiting on the output, which this test never opens.
    }

    #[test]
    fn lines_after_the_guard_are_written_directly() {
        let out = Collect::default();
        let (writer, guard) = start(out.clone());
        writer.make_writer().write_all(b"queued\n").unwrap();
        drop(guard);
        writer.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(&*out.0.lock().unwrap(), b"queued\nafter\n");
    }
}
