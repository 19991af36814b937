//! Who is connected to which desktop, and when they last typed or pointed.
//!
//! One entry per session with viewers now or earlier in this process: the number of open
//! connections, the last client input, the last disconnect, and a channel that tells every
//! open connection of the session to close (the session was deleted). A plain mutex guards
//! the map: it is held for a few instructions, never across an await, and touched on
//! connect, disconnect and at most once a second per connection for input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Where "now" comes from (tests control it).
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Why the gateway closes a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    SessionDeleted,
    /// The session ended by its time limit (4001, like a delete: do not reconnect).
    TimeLimit,
    Shutdown,
}

/// Activity of one session as the gateway saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    pub connections: u32,
    pub last_input: Option<DateTime<Utc>>,
    pub last_disconnect: Option<DateTime<Utc>>,
}

struct Entry {
    activity: Activity,
    /// Tells every relay of the session why it must close. A `watch`, not a broadcast:
    /// a relay only needs the latest value, one that subscribes after the send still
    /// sees it, and a sender with no relays left costs nothing.
    close: watch::Sender<Option<CloseReason>>,
}

/// What the gateway measures of its viewers, for `/metrics`: how many times they asked for
/// each JPEG quality and compression level (0-9, what image settings users choose), and how
/// long their set-up took. Atomics, so no lock.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub quality: [AtomicU64; 10],
    pub compression: [AtomicU64; 10],
    /// How long a viewer's set-up took: from the upgrade to the relay running (reaching and
    /// authenticating to the desktop, and the browser's RFB handshake).
    pub setup: hpcdesk_core::histogram::Histogram,
}

/// The open viewer connections of every session, by session key. Shared by every relay
/// and by the sweep; a plain mutex, held only to update or read an entry, never across
/// an await.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    encodings: Arc<ViewerStats>,
    now: Now,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Minimum time between two input records of one connection.
const INPUT_EVERY: Duration = Duration::from_secs(1);

impl Registry {
    pub fn new(now: Now) -> Self {
        Registry {
            inner: Arc::new(Mutex::new(HashMap::new())),
            encodings: Arc::default(),
            now,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }

    /// Registers a new connection to `session_key`.
    pub fn open(&self, session_key: &str) -> Connection {
        let closed = self.with(|m| {
            let e = m.entry(session_key.to_owned()).or_insert_with(|| Entry {
                activity: Activity::default(),
                close: watch::channel(None).0,
            });
            e.activity.connections += 1;
            e.close.subscribe()
        });
        Connection {
            registry: self.clone(),
            key: session_key.to_owned(),
            closed,
            last_input_ms: AtomicU64::new(0),
        }
    }

    /// Like [`Registry::open`], unless the session has `max` open connections already.
    pub fn open_within(&self, session_key: &str, max: u32) -> Option<Connection> {
        let closed = self.with(|m| {
            let e = m.entry(session_key.to_owned()).or_insert_with(|| Entry {
                activity: Activity::default(),
                close: watch::channel(None).0,
            });
            if e.activity.connections >= max {
                return None;
            }
            e.activity.connections += 1;
            Some(e.close.subscribe())
        })?;
        Some(Connection {
            registry: self.clone(),
            key: session_key.to_owned(),
            closed,
            last_input_ms: AtomicU64::new(0),
        })
    }

    /// The image settings viewers asked for, counted by level.
    pub fn viewer_stats(&self) -> &ViewerStats {
        &self.encodings
    }

    pub fn activity(&self, session_key: &str) -> Activity {
        self.with(|m| m.get(session_key).map(|e| e.activity).unwrap_or_default())
    }

    /// Every session's activity (for persisting it).
    pub fn all(&self) -> Vec<(String, Activity)> {
        self.with(|m| m.iter().map(|(k, e)| (k.clone(), e.activity)).collect())
    }

    /// Tells every open connection of the session to close, and forgets the session.
    pub fn close_session(&self, session_key: &str, reason: CloseReason) {
        if let Some(e) = self.with(|m| m.remove(session_key)) {
            let _ = e.close.send(Some(reason));
        }
    }

    /// Tells every open connection to close (server shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        self.with(|m| {
            for e in m.values() {
                let _ = e.close.send(Some(reason));
            }
        });
    }

    fn record_input(&self, key: &str) {
        let now = (self.now)();
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.activity.last_input = Some(now);
            }
        });
    }

    fn record_close(&self, key: &str) {
        let now = (self.now)();
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.activity.connections = e.activity.connections.saturating_sub(1);
                e.activity.last_disconnect = Some(now);
            }
        });
    }
}

/// One open viewer connection; dropping it records the disconnect. Shared by reference
/// between the two directions of a relay.
pub struct Connection {
    registry: Registry,
    key: String,
    closed: watch::Receiver<Option<CloseReason>>,
    /// When input was last recorded, in ms since [`epoch`] (0: never).
    last_input_ms: AtomicU64,
}

/// A process-wide monotonic origin for [`Connection::input`]'s rate limit.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Connection {
    /// Records client input (at most once a second).
    pub fn input(&self) {
        let now_ms = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last_input_ms.load(Ordering::Relaxed);
        if last == 0 || now_ms - last >= INPUT_EVERY.as_millis() as u64 {
            self.last_input_ms.store(now_ms, Ordering::Relaxed);
            self.registry.record_input(&self.key);
        }
    }

    /// Records the image settings the viewer asked for (a SetEncodings).
    pub fn encodings(&self, e: hpcdesk_rfb::Encodings) {
        let counts = &self.registry.encodings;
        if let Some(q) = e.quality {
            counts.quality[q as usize].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = e.compression {
            counts.compression[c as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resolves when the gateway must close this connection, with the reason.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.closed.clone();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The session was forgotten without a reason being sent: treat as deleted.
                return CloseReason::SessionDeleted;
            }
        }
    }

    pub fn session_key(&self) -> &str {
        &self.key
    }
}

/// The count of a session's connections goes down in `drop`, so that every way a relay
/// ends (an error, a panic, a task cancelled at shutdown) records the disconnect.
impl Drop for Connection {
    fn drop(&mut self) {
        self.registry.record_close(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> (Now, Arc<Mutex<DateTime<Utc>>>) {
        let t = Arc::new(Mutex::new(
            DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap(),
        ));
        let t2 = t.clone();
        (Arc::new(move || *t2.lock().unwrap()), t)
    }

    #[test]
    fn connections_are_counted_and_disconnects_remembered() {
        let (now, _) = clock();
        let r = Registry::new(now);
        let a = r.open("s");
        let b = r.open("s");
        assert_eq!(r.activity("s").connections, 2);
        drop(a);
        assert_eq!(r.activity("s").connections, 1);
        drop(b);
        let act = r.activity("s");
        assert_eq!(act.connections, 0);
        assert!(act.last_disconnect.is_some());
        assert_eq!(r.activity("other"), Activity::default());
    }

    #[test]
    fn input_is_recorded_at_most_once_a_second() {
        let (now, t) = clock();
        let r = Registry::new(now);
        let c = r.open("s");
        c.input();
        let first = r.activity("s").last_input.unwrap();
        *t.lock().unwrap() += chrono::Duration::seconds(5);
        c.input();
        assert_eq!(r.activity("s").last_input.unwrap(), first);
    }

    #[tokio::test]
    async fn closing_a_session_wakes_its_connections() {
        let (now, _) = clock();
        let r = Registry::new(now);
        let c = r.open("s");
        let waiter = tokio::spawn(async move { c.closed().await });
        tokio::task::yield_now().await;
        r.close_session("s", CloseReason::SessionDeleted);
        assert_eq!(waiter.await.unwrap(), CloseReason::SessionDeleted);
        // A connection opened after the close starts fresh.
        let d = r.open("s");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), d.closed())
                .await
                .is_err()
        );
    }
}
