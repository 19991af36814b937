//! The visible sessions held in memory, for a store that this process alone writes: the
//! SQLite file of one `hpcdesk serve`, whose lock on the file ([`SessionCache::new`]) the
//! cache holds, so that the snapshot and what makes it right live and die together.
//!
//! Launch URLs, lists and the gateway read sessions far more often than anything changes
//! them, and on SQLite each read is a round trip to a connection's worker thread. So reads are
//! answered from a snapshot of every visible (not dismissed) session. Every method that writes
//! sessions holds a [`Bump`] until it returns; dropping it advances the generation, and the
//! next read rebuilds the snapshot with one query. A snapshot is built from a query that
//! started after the generation it is tagged with was read, so it holds every write that had
//! returned by then: a read never misses a completed write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::SessionRecord;

/// Visible sessions, indexed the ways the store is asked.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    generation: u64,
    /// Shared, so that a lookup hands out the record without copying it.
    by_key: HashMap<String, Arc<SessionRecord>>,
    /// Session id → key (ids of visible sessions are unique).
    by_id: HashMap<String, String>,
    /// Keys of the sessions that have an id, oldest first (list order).
    listed: Vec<String>,
}

impl Snapshot {
    pub(crate) fn by_key(&self, key: &str) -> Option<&Arc<SessionRecord>> {
        self.by_key.get(key)
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Arc<SessionRecord>> {
        self.by_id.get(id).and_then(|k| self.by_key.get(k))
    }

    /// Listed sessions (with an id), oldest first; of `owner` only when given.
    pub(crate) fn listed(&self, owner: Option<&str>) -> Vec<SessionRecord> {
        self.listed
            .iter()
            .filter_map(|k| self.by_key.get(k))
            .filter(|r| owner.is_none_or(|o| r.owner == o))
            .map(|r| SessionRecord::clone(r))
            .collect()
    }
}

#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    /// This process's exclusive lock on the database file (`None` for a database in
    /// memory, which no one else can reach): released when the cache is dropped.
    _lock: Option<std::fs::File>,
    generation: AtomicU64,
    /// `None` until first built. A plain mutex: held only to clone or swap the `Arc`.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// One rebuild at a time; the others wait for it instead of querying too.
    rebuilding: tokio::sync::Mutex<()>,
}

impl SessionCache {
    /// A cache kept safe by `lock` (see the field).
    pub(crate) fn new(lock: Option<std::fs::File>) -> Self {
        SessionCache {
            _lock: lock,
            ..SessionCache::default()
        }
    }
}

/// Advances the cache's generation when dropped (at the end of a session write).
pub(crate) struct Bump<'a>(&'a SessionCache);

impl Drop for Bump<'_> {
    fn drop(&mut self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl SessionCache {
    pub(crate) fn bump(&self) -> Bump<'_> {
        Bump(self)
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::Acquire);
        let snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snap.as_ref()
            .filter(|s| s.generation == generation)
            .cloned()
    }

    /// The snapshot of the current generation, built with `load` if needed.
    pub(crate) async fn get<E, F, Fut>(&self, load: F) -> Result<Arc<Snapshot>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<SessionRecord>, E>>,
    {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _one = self.rebuilding.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let rows = load().await?;
        let mut snap = Snapshot {
            generation,
            ..Snapshot::default()
        };
        let mut listed: Vec<&SessionRecord> =
            rows.iter().filter(|r| r.session_id.is_some()).collect();
        listed.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        snap.listed = listed.into_iter().map(|r| r.key.clone()).collect();
        for r in rows {
            if let Some(id) = &r.session_id {
                snap.by_id.insert(id.as_str().to_owned(), r.key.clone());
            }
            snap.by_key.insert(r.key.clone(), Arc::new(r));
        }
        let snap = Arc::new(snap);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        Ok(snap)
    }
}
