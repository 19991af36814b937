//! The [`Store`] over SQL, written once for every sqlx backend hpcdesk supports: [`SqlStore`]
//! and the [`Backend`] bound that SQLite ([`crate::sqlite`]) and PostgreSQL
//! ([`crate::postgres`]) meet. The backend modules only open their pools and run their own
//! migrations.
//!
//! Queries use `$N` placeholders and the SQL both dialects share; the schemas keep to types
//! both decode the same way (TEXT, BIGINT/INTEGER, BLOB/BYTEA). Timestamps are integer
//! milliseconds since the epoch; flags are integers 0/1.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId, SessionState, status_reason};
use macro_rules_attribute::apply;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
// Dynamic SQL here only ever splices our own column lists and `$N` placeholders, never values.
use sqlx::{AssertSqlSafe, Row, Transaction};

use crate::cache::{Bump, SessionCache, Snapshot};
use crate::{
    AccessKeyRecord, AuditEvent, AuditFilter, Claim, NewSession, OrgRecord, SessionRecord, Started,
    Store, StoreError, UserRecord,
};

/// A sqlx database that can hold hpcdesk's state. The rest of what [`SqlStore`] needs from it
/// (encoding our column types, executing on its connections) is spelled out once, in
/// `with_backend_bounds!`, since Rust does not carry such bounds along with a trait.
pub trait Backend: Database + sqlx::database::HasStatementCache {
    /// Rows changed by an `INSERT`, `UPDATE` or `DELETE`.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Placeholders for `n` values bound in order, the first being the `start`th of the
    /// statement, for statements with many of them.
    fn many_placeholders(start: usize, n: usize) -> String;

    /// Inserts audit lines given as one JSON text (`$1`): an array of
    /// `[at, kind, user_name, session_id, peer, detail]`, in order. One statement, prepared
    /// once, for a batch of any size; the database unpacks the array itself, which costs far
    /// less than binding six values per line.
    const INSERT_AUDIT_JSON: &'static str;
}

impl Backend for sqlx::Sqlite {
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    /// Anonymous `?`: SQLite finds a named parameter (`$7`) by a linear search, when the
    /// statement is parsed and again when each value is bound, which makes a statement with
    /// hundreds of them slow.
    fn many_placeholders(_start: usize, n: usize) -> String {
        vec!["?"; n].join(", ")
    }

    /// `jsonb_each` hands each line to `->>` as JSONB, which it reads in place, where
    /// `json_each` would hand it as text that each of the six `->>` parses again; and the
    /// table function yields its elements in `rowid` order, so that order costs no sort
    /// (ordering by `key` does: SQLite does not know that the two agree).
    const INSERT_AUDIT_JSON: &'static str = "INSERT INTO audit (at, kind, user_name, session_id, peer, detail) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
         FROM jsonb_each($1) ORDER BY rowid";
}

impl Backend for sqlx::Postgres {
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    fn many_placeholders(start: usize, n: usize) -> String {
        placeholders(start, n)
    }

    const INSERT_AUDIT_JSON: &'static str = "INSERT INTO audit (at, kind, user_name, session_id, peer, detail) \
         SELECT (e ->> 0)::bigint, e ->> 1, e ->> 2, e ->> 3, e ->> 4, e ->> 5 \
         FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n";
}

/// Adds to an `impl<DB> … SqlStore<DB>` block what the SQL in it needs of the backend
/// (encoding and decoding our column types, executing on its connections): written once
/// here, since Rust does not carry bounds on other types along with a trait such as
/// [`Backend`]. Used as `#[apply(with_backend_bounds!)]`.
macro_rules! with_backend_bounds {
    ($(#[$attr:meta])* impl<DB> $(Store $for:tt)? SqlStore<DB> { $($body:tt)* }) => {
        $(#[$attr])*
        impl<DB> $(Store $for)? SqlStore<DB>
        where
            DB: Backend,
            for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
            DB::Arguments: IntoArguments<DB>,
            for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
            for<'q> Option<i64>: Encode<'q, DB>,
            for<'q> Option<String>: Encode<'q, DB>,
            for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
            for<'q> &'q str: Encode<'q, DB> + Type<DB>,
            for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
            for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
            &'static str: ColumnIndex<DB::Row>,
        {
            $($body)*
        }
    };
}
/// How a group commit fared: `Err((unavailable, what))` if it was not written. One `oneshot`
/// per caller, so each waiting caller answers only once its own line is durable.
type AuditReply = tokio::sync::oneshot::Sender<Result<(), (bool, String)>>;

/// An audit line on its way to the writer.
#[derive(Debug)]
struct QueuedAudit {
    /// `None`: a barrier ([`Store::flush_audit`]), answered with the batch it ends.
    line: Option<AuditEvent>,
    /// Whoever waits for the line to be durable; with one, its batch is written without
    /// lingering. `None` for a line nobody waits for.
    reply: Option<AuditReply>,
}

/// The store on one SQL database. Cheap to clone (pool handles).
///
/// Reads go through `pool`; writes through `writer`, which is the same pool on PostgreSQL and
/// a single connection on SQLite (so writers queue in hpcdesk instead of meeting SQLite's
/// lock, whose busy handler would put them to sleep for milliseconds at a time).
///
/// Audit lines, written on every launch URL and viewer connection, are group-committed:
/// inserts that arrive while one transaction commits go together in the next, and each caller
/// that waits returns once its line is durable. Lines nobody waits for (launch URLs) wait up
/// to [`AUDIT_LINGER`] for company, so that a stream of them is a few large commits.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    writer: Pool<DB>,
    /// The queue of the group-committing audit writer task. Bounded ([`AUDIT_QUEUE`] lines),
    /// so that a slow database holds its callers back instead of letting the queue grow
    /// without end.
    audits: tokio::sync::mpsc::Sender<QueuedAudit>,
    /// Told by a caller that has queued a line and waits for it, or that has queued a line
    /// making a full batch: the writer stops lingering.
    audit_waiting: Arc<tokio::sync::Notify>,
    /// Visible sessions in memory, when this process is the database's only writer.
    cache: Option<Arc<SessionCache>>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
            audits: self.audits.clone(),
            audit_waiting: self.audit_waiting.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// Most audit lines committed in one transaction.
const AUDIT_BATCH: usize = 256;

/// How long a batch of audit lines nobody waits for may wait for more before it is written:
/// at most this long (and a commit) between a launch URL's answer and its line being durable.
const AUDIT_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Most audit lines queued. Room for the lines of a linger and a few commits at tens of
/// thousands of launch URLs a second (a few MB at most), so that none of them finds the
/// queue full and has to wait for a commit after all.
const AUDIT_QUEUE: usize = 32 * AUDIT_BATCH;

const SESSION_COLUMNS: &str = "key, session_id, owner, user_id, invoker, compute_user, node, \
     display, host, port, state, status_reason, geometry, vnc_password, launcher, handle, \
     marker, starter, queued, tls_pin, desktop, created_at, updated_at, last_input_at, ends_at";

const USER_COLUMNS: &str = "name, user_id, password_hash, compute_user, role, account_status, \
     home_path, created_at, updated_at, tokens_valid_after";

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64, table: &'static str) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt {
            table,
            detail: format!("timestamp {ms} out of range"),
        })
}

/// `$start, $start+1, …` for `n` values.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table: "sessions",
        detail: detail.into(),
    }
}

/// The outcome of an `INSERT` of a row named `what`: [`StoreError::Exists`] if its key is
/// taken.
fn inserted<T>(
    done: Result<T, sqlx::Error>,
    what: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    match done {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Exists(what())),
        Err(e) => Err(e.into()),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[apply(with_backend_bounds!)]
impl<DB> SqlStore<DB> {
    /// A store on `pool` (reads) and `writer` (writes), whose schema is up to date; with a
    /// `cache`, sessions are read from memory (only for a database no other process writes
    /// sessions to, which the cache's lock ensures). Starts the audit writer, so it must be
    /// called inside a Tokio runtime.
    pub(crate) fn with_pools(
        pool: Pool<DB>,
        writer: Pool<DB>,
        cache: Option<SessionCache>,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let audit_waiting = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(Self::audit_writer(
            writer.clone(),
            rx,
            audit_waiting.clone(),
        ));
        SqlStore {
            pool,
            writer,
            audits: tx,
            audit_waiting,
            cache: cache.map(Arc::new),
        }
    }

    /// Held by every method that writes sessions: the cache moves on when it returns.
    fn bump(&self) -> Option<Bump<'_>> {
        self.cache.as_deref().map(SessionCache::bump)
    }

    /// The cached visible sessions, if this store caches them.
    async fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let snap = cache
            .get(|| async {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE dismissed = 0");
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::session_from_row).collect()
            })
            .await?;
        Ok(Some(snap))
    }

    /// Writes queued audit lines, as many per transaction as are waiting (to
    /// [`AUDIT_BATCH`]). A batch nobody waits for first lingers up to [`AUDIT_LINGER`] for
    /// more, without being woken by each line that arrives meanwhile: under a stream of launch
    /// URLs that makes one commit of hundreds of lines instead of many of a few, whose fixed
    /// cost (waking this task and the database thread, a transaction, the WAL write) was most
    /// of each line's. A caller that waits for its line ends the lingering (`waiting`); so
    /// does a full batch in the queue. A batch that fails is logged here too: lines queued by
    /// [`Store::queue_audit`] have nobody waiting.
    async fn audit_writer(
        writer: Pool<DB>,
        mut rx: tokio::sync::mpsc::Receiver<QueuedAudit>,
        waiting: Arc<tokio::sync::Notify>,
    ) {
        let drain = |rx: &mut tokio::sync::mpsc::Receiver<QueuedAudit>, batch: &mut Vec<_>| {
            while batch.len() < AUDIT_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        };
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            drain(&mut rx, &mut batch);
            if batch.len() < AUDIT_BATCH && batch.iter().all(|q| q.reply.is_none()) {
                tokio::select! {
                    _ = tokio::time::sleep(AUDIT_LINGER) => {}
                    _ = waiting.notified() => {}
                }
                drain(&mut rx, &mut batch);
            }
            let lines: Vec<&AuditEvent> = batch.iter().filter_map(|q| q.line.as_ref()).collect();
            let result = Self::insert_audit(&writer, &lines).await.map_err(|e| {
                let e = StoreError::from(e);
                (e.is_unavailable(), e.to_string())
            });
            if let Err((_, what)) = &result {
                tracing::error!(lines = lines.len(), error = %what, "cannot write the audit log");
            }
            for reply in batch.into_iter().filter_map(|q| q.reply) {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// Inserts audit lines durably, the whole batch (at most [`AUDIT_BATCH`]) in one
    /// statement and one commit ([`Backend::INSERT_AUDIT_JSON`]).
    async fn insert_audit(writer: &Pool<DB>, lines: &[&AuditEvent]) -> Result<(), sqlx::Error> {
        if lines.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = lines
            .iter()
            .map(|e| {
                (
                    millis(e.at),
                    &e.kind,
                    &e.user,
                    &e.session_id,
                    &e.peer,
                    &e.detail,
                )
            })
            .collect();
        let json = serde_json::to_string(&rows).expect("audit lines serialize to JSON");
        sqlx::query(DB::INSERT_AUDIT_JSON)
            .bind(json)
            .execute(writer)
            .await?;
        Ok(())
    }

    /// Hands `line` to the audit writer; with `wait`, returns once it is durable.
    async fn group_commit(&self, line: Option<AuditEvent>, wait: bool) -> Result<(), StoreError> {
        let gone = || StoreError::Unavailable("the audit writer stopped".into());
        use tokio::sync::mpsc::error::TrySendError;
        let mut line = line;
        if !wait {
            match self.audits.try_send(QueuedAudit { line, reply: None }) {
                Ok(()) => {
                    // A full batch is waiting: no reason to linger for more.
                    if self.audits.max_capacity() - self.audits.capacity() >= AUDIT_BATCH {
                        self.audit_waiting.notify_one();
                    }
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => return Err(gone()),
                // The writer is behind: this caller waits for its line like the others.
                Err(TrySendError::Full(item)) => line = item.line,
            }
        }
        let (reply, done) = tokio::sync::oneshot::channel();
        let item = QueuedAudit {
            line,
            reply: Some(reply),
        };
        self.audits.send(item).await.map_err(|_| gone())?;
        self.audit_waiting.notify_one();
        done.await
            .map_err(|_| gone())?
            .map_err(|(unavailable, what)| {
                if unavailable {
                    StoreError::Unavailable(what)
                } else {
                    StoreError::Audit(what)
                }
            })
    }

    /// Sets one text column of a user, and with `revoke` ends the tokens issued so far;
    /// [`StoreError::Missing`] for an unknown name.
    async fn set_user_field(
        &self,
        name: &str,
        column: &'static str,
        value: &str,
        revoke: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let also = if revoke {
            ", tokens_valid_after = $3"
        } else {
            ""
        };
        let sql = format!("UPDATE users SET {column} = $2, updated_at = $3{also} WHERE name = $1");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .bind(value)
            .bind(millis(now))
            .execute(&self.writer)
            .await?;
        Self::changed(done, format!("user {name}"))
    }

    async fn live_session_of(&self, owner: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE owner = $1 \
             AND state IN ('pending', 'starting', 'running')"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::session_from_row).transpose()
    }

    fn session_from_row(row: &DB::Row) -> Result<SessionRecord, StoreError> {
        let session_id: Option<String> = row.try_get("session_id")?;
        let node: Option<String> = row.try_get("node")?;
        let display: Option<i64> = row.try_get("display")?;
        let port: Option<i64> = row.try_get("port")?;
        let state: String = row.try_get("state")?;
        let compute_user: String = row.try_get("compute_user")?;
        let last_input: Option<i64> = row.try_get("last_input_at")?;
        let ends_at: Option<i64> = row.try_get("ends_at")?;
        Ok(SessionRecord {
            key: row.try_get("key")?,
            session_id: session_id
                .map(|s| SessionId::parse(&s))
                .transpose()
                .map_err(|e| corrupt(format!("session_id: {e}")))?,
            owner: row.try_get("owner")?,
            user_id: row.try_get("user_id")?,
            invoker: row.try_get("invoker")?,
            compute_user: ComputeUser::parse(&compute_user)
                .map_err(|e| corrupt(format!("compute_user: {e}")))?,
            node: node
                .map(|n| NodeName::parse(&n))
                .transpose()
                .map_err(|e| corrupt(format!("node: {e}")))?,
            display: display
                .map(|d| {
                    u32::try_from(d)
                        .ok()
                        .and_then(|d| DisplayNumber::new(d).ok())
                        .ok_or_else(|| corrupt(format!("display {d}")))
                })
                .transpose()?,
            host: row.try_get("host")?,
            port: port
                .map(|p| u16::try_from(p).map_err(|_| corrupt(format!("port {p}"))))
                .transpose()?,
            state: SessionState::parse(&state)
                .ok_or_else(|| corrupt(format!("state {state:?}")))?,
            status_reason: row.try_get("status_reason")?,
            geometry: row.try_get("geometry")?,
            desktop: row.try_get("desktop")?,
            vnc_password_sealed: row.try_get("vnc_password")?,
            launcher: row.try_get("launcher")?,
            handle: row.try_get("handle")?,
            marker: row.try_get("marker")?,
            starter: row.try_get("starter")?,
            queued: row.try_get::<i64, _>("queued")? != 0,
            tls_pin: Some(row.try_get::<String, _>("tls_pin")?).filter(|p| !p.is_empty()),
            created_at: from_millis(row.try_get("created_at")?, "sessions")?,
            updated_at: from_millis(row.try_get("updated_at")?, "sessions")?,
            last_input_at: last_input.map(|t| from_millis(t, "sessions")).transpose()?,
            ends_at: ends_at.map(|t| from_millis(t, "sessions")).transpose()?,
        })
    }

    fn user_from_row(row: &DB::Row) -> Result<UserRecord, StoreError> {
        let compute_user: String = row.try_get("compute_user")?;
        Ok(UserRecord {
            name: row.try_get("name")?,
            user_id: row.try_get("user_id")?,
            password_hash: row.try_get("password_hash")?,
            compute_user: ComputeUser::parse(&compute_user).map_err(|e| StoreError::Corrupt {
                table: "users",
                detail: e.to_string(),
            })?,
            role: row.try_get("role")?,
            account_status: row.try_get("account_status")?,
            home_path: row.try_get("home_path")?,
            created_at: from_millis(row.try_get("created_at")?, "users")?,
            updated_at: from_millis(row.try_get("updated_at")?, "users")?,
            tokens_valid_after: match row.try_get::<i64, _>("tokens_valid_after")? {
                0 => None,
                ms => Some(from_millis(ms, "users")?),
            },
        })
    }

    fn org_from_row(row: &DB::Row) -> Result<OrgRecord, StoreError> {
        Ok(OrgRecord {
            org_id: row.try_get("org_id")?,
            name: row.try_get("name")?,
            created_at: from_millis(row.try_get("created_at")?, "orgs")?,
        })
    }

    fn key_from_row(row: &DB::Row) -> Result<AccessKeyRecord, StoreError> {
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        Ok(AccessKeyRecord {
            access_key: row.try_get("access_key")?,
            user_name: row.try_get("user_name")?,
            secret_sealed: row.try_get("secret_sealed")?,
            created_at: from_millis(row.try_get("created_at")?, "access_keys")?,
            revoked_at: revoked.map(|t| from_millis(t, "access_keys")).transpose()?,
        })
    }

    fn audit_from_row(row: &DB::Row) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            at: from_millis(row.try_get("at")?, "audit")?,
            kind: row.try_get("kind")?,
            user: row.try_get("user_name")?,
            session_id: row.try_get("session_id")?,
            peer: row.try_get("peer")?,
            detail: row.try_get("detail")?,
        })
    }

    /// Maps "no row changed" to [`StoreError::Missing`].
    fn changed(done: DB::QueryResult, what: String) -> Result<(), StoreError> {
        if DB::rows_affected(&done) == 0 {
            Err(StoreError::Missing(what))
        } else {
            Ok(())
        }
    }

    /// Dismisses any other visible session that carries `id`: the desktop now holding that
    /// node's display (or that id) makes the older one certainly gone.
    async fn supersede(
        tx: &mut Transaction<'_, DB>,
        id: &str,
        key: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET state = 'stopped', dismissed = 1, updated_at = $3, \
             status_reason = 'its id was reused by a newer session' \
             WHERE session_id = $1 AND key <> $2 AND dismissed = 0",
        )
        .bind(id)
        .bind(key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Commits a transaction whose update of the row `key` changed `done` rows, returning the
    /// row as it is now; rolls back and returns `None` if the update changed nothing.
    async fn commit_updated(
        mut tx: Transaction<'_, DB>,
        done: DB::QueryResult,
        key: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if DB::rows_affected(&done) == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let rec = Self::session_in_tx(&mut tx, key).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn session_in_tx(
        tx: &mut Transaction<'_, DB>,
        key: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(Self::session_from_row).transpose()
    }
}

#[apply(with_backend_bounds!)]
#[async_trait]
impl<DB> Store for SqlStore<DB> {
    #[tracing::instrument(level = "debug", skip_all, fields(owner = %new.owner))]
    async fn claim_session(&self, new: NewSession) -> Result<Claim, StoreError> {
        let _bump = self.bump();
        // The unique index on live sessions per owner decides races between concurrent
        // creates. A loser reads the winner's row; if that row stopped being live in between,
        // try again (bounded: each round means another request finished meanwhile).
        for _ in 0..5 {
            let key = uuid::Uuid::new_v4().to_string();
            let mut tx = self.writer.begin().await?;
            let now = millis(new.now);
            let inserted = sqlx::query(
                "INSERT INTO sessions (key, owner, user_id, invoker, compute_user, state, \
                 geometry, launcher, created_at, updated_at, marker, starter, vnc_password, node, \
                 desktop, ends_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&key)
            .bind(&new.owner)
            .bind(&new.user_id)
            .bind(&new.invoker)
            .bind(new.compute_user.as_str())
            .bind(new.state.as_str())
            .bind(&new.geometry)
            .bind(&new.launcher)
            .bind(now)
            .bind(&new.marker)
            .bind(&new.starter)
            .bind(&new.vnc_password_sealed)
            .bind(new.node.as_ref().map(ToString::to_string))
            .bind(&new.desktop)
            .bind(new.ends_at.map(millis))
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    sqlx::query(
                        "UPDATE sessions SET state = 'stopped', dismissed = 1, updated_at = $2 \
                         WHERE owner = $1 AND state IN ('failed', 'stopped') AND dismissed = 0",
                    )
                    .bind(&new.owner)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let rec = Self::session_in_tx(&mut tx, &key)
                        .await?
                        .ok_or_else(|| corrupt("claimed row vanished"))?;
                    tx.commit().await?;
                    return Ok(Claim::Claimed(rec));
                }
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    if let Some(existing) = self.live_session_of(&new.owner).await? {
                        return Ok(Claim::Existing(existing));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(corrupt("could not claim a session after 5 attempts"))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key, session_id = %started.session_id))]
    async fn session_started(
        &self,
        key: &str,
        started: Started,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let _bump = self.bump();
        let id = started.session_id.as_str();
        let now = millis(started.now);
        let mut tx = self.writer.begin().await?;
        Self::supersede(&mut tx, id, key, now).await?;
        let done = sqlx::query(
            "UPDATE sessions SET session_id = $2, node = $3, display = $4, host = $5, port = $6, \
             vnc_password = $7, handle = $8, state = $9, status_reason = '', updated_at = $10, \
             tls_pin = $11, ends_at = COALESCE($12, ends_at) \
             WHERE key = $1 AND state IN ('pending', 'starting')",
        )
        .bind(key)
        .bind(id)
        .bind(started.node.as_str())
        .bind(i64::from(started.display.get()))
        .bind(&started.host)
        .bind(i64::from(started.port))
        .bind(&started.vnc_password_sealed)
        .bind(&started.handle)
        .bind(started.state.as_str())
        .bind(now)
        .bind(started.tls_pin.as_deref().unwrap_or_default())
        .bind(started.ends_at.map(millis))
        .execute(&mut *tx)
        .await?;
        Self::commit_updated(tx, done, key).await
    }

    async fn session_queued(
        &self,
        key: &str,
        session_id: &SessionId,
        handle: &str,
        vnc_password_sealed: &[u8],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let _bump = self.bump();
        let id = session_id.as_str();
        let now = millis(now);
        let mut tx = self.writer.begin().await?;
        Self::supersede(&mut tx, id, key, now).await?;
        let done = sqlx::query(
            "UPDATE sessions SET session_id = $2, handle = $3, state = 'pending', \
             status_reason = $4, updated_at = $5, vnc_password = $6, queued = 1 \
             WHERE key = $1 AND state IN ('pending', 'starting')",
        )
        .bind(key)
        .bind(id)
        .bind(handle)
        .bind(status_reason(reason))
        .bind(now)
        .bind(vnc_password_sealed)
        .execute(&mut *tx)
        .await?;
        Self::commit_updated(tx, done, key).await
    }

    async fn session_progress(
        &self,
        key: &str,
        state: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _bump = self.bump();
        if !matches!(state, SessionState::Pending | SessionState::Starting) {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE sessions SET state = $2, status_reason = $3, updated_at = $4 \
             WHERE key = $1 AND state IN ('pending', 'starting') \
             AND (state <> $2 OR status_reason <> $3)",
        )
        .bind(key)
        .bind(state.as_str())
        .bind(status_reason(reason))
        .bind(millis(now))
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    #[tracing::instrument(level = "debug", skip(self, reason))]
    async fn start_failed(
        &self,
        key: &str,
        at: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _bump = self.bump();
        let now = millis(now);
        let reason = status_reason(reason);
        let reason = reason.as_str();
        let mut tx = self.writer.begin().await?;
        let moved = if let Some(id) = &at {
            Self::supersede(&mut tx, id.as_str(), key, now).await?;
            let done = sqlx::query(
                "UPDATE sessions SET session_id = $2, node = $3, display = $4, state = 'failed', \
                 status_reason = $5, updated_at = $6 \
                 WHERE key = $1 AND state IN ('pending', 'starting')",
            )
            .bind(key)
            .bind(id.as_str())
            .bind(id.node().as_str())
            .bind(i64::from(id.display().get()))
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            DB::rows_affected(&done)
        } else {
            let done = sqlx::query(
                "UPDATE sessions SET state = 'failed', status_reason = $2, updated_at = $3 \
                 WHERE key = $1 AND state IN ('pending', 'starting')",
            )
            .bind(key)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            DB::rows_affected(&done)
        };
        tx.commit().await?;
        Ok(moved > 0)
    }

    #[tracing::instrument(level = "debug", skip(self, from, reason))]
    async fn transition(
        &self,
        key: &str,
        from: &[SessionState],
        to: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _bump = self.bump();
        let allowed: Vec<SessionState> =
            from.iter().copied().filter(|s| s.can_become(to)).collect();
        if allowed.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE sessions SET state = $2, status_reason = $3, updated_at = $4 \
             WHERE key = $1 AND state IN ({})",
            placeholders(5, allowed.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .bind(to.as_str())
            .bind(status_reason(reason))
            .bind(millis(now));
        for s in &allowed {
            q = q.bind(s.as_str());
        }
        let done = q.execute(&self.writer).await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn dismiss(&self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _bump = self.bump();
        sqlx::query(
            "UPDATE sessions SET dismissed = 1, updated_at = $2 WHERE key = $1 AND state = 'stopped'",
        )
        .bind(key)
        .bind(millis(now))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session_by_key(&self, key: &str) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(snap) = self.snapshot().await?
            && let Some(rec) = snap.by_key(key)
        {
            return Ok(Some(rec.clone()));
        }
        // Not visible any more (dismissed), or no cache: ask the database.
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .as_ref()
            .map(Self::session_from_row)
            .transpose()?
            .map(Arc::new))
    }

    async fn visible_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(snap) = self.snapshot().await? {
            return Ok(snap.by_id(id.as_str()).cloned());
        }
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1 AND dismissed = 0"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .as_ref()
            .map(Self::session_from_row)
            .transpose()?
            .map(Arc::new))
    }

    async fn list_sessions(&self, owner: Option<&str>) -> Result<Vec<SessionRecord>, StoreError> {
        if let Some(snap) = self.snapshot().await? {
            return Ok(snap.listed(owner));
        }
        let rows = match owner {
            Some(owner) => {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE owner = $1 \
                     AND dismissed = 0 AND session_id IS NOT NULL ORDER BY created_at, key"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE dismissed = 0 \
                     AND session_id IS NOT NULL ORDER BY created_at, key"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(Self::session_from_row).collect()
    }

    async fn sessions_in(&self, states: &[SessionState]) -> Result<Vec<SessionRecord>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE state IN ({}) ORDER BY created_at, key",
            placeholders(1, states.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(Self::session_from_row).collect()
    }

    async fn sessions_ended_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE state IN ('failed', 'stopped') \
             AND updated_at > $1 AND marker <> '' ORDER BY updated_at"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(millis(since))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::session_from_row).collect()
    }

    async fn session_by_marker(&self, marker: &str) -> Result<Option<SessionRecord>, StoreError> {
        if marker.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE marker = $1 ORDER BY created_at DESC"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(marker)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::session_from_row).transpose()
    }

    async fn fresh_instances(&self, fresh_after: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT instance FROM instances WHERE seen_at > $1")
            .bind(millis(fresh_after))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("instance").map_err(StoreError::from))
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn set_ends_at(
        &self,
        key: &str,
        ends_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let _bump = self.bump();
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE sessions SET ends_at = $2, updated_at = $3 \
             WHERE key = $1 AND state IN ('pending', 'starting', 'running')",
        )
        .bind(key)
        .bind(ends_at.map(millis))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        Self::commit_updated(tx, done, key).await
    }

    async fn record_activity(
        &self,
        key: &str,
        last_input: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _bump = self.bump();
        sqlx::query(
            "UPDATE sessions SET last_input_at = $2 \
             WHERE key = $1 AND (last_input_at IS NULL OR last_input_at < $2)",
        )
        .bind(key)
        .bind(millis(last_input))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn add_user(&self, u: UserRecord) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (name, user_id, password_hash, compute_user, role, \
             account_status, home_path, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&u.name)
        .bind(&u.user_id)
        .bind(&u.password_hash)
        .bind(u.compute_user.as_str())
        .bind(&u.role)
        .bind(&u.account_status)
        .bind(&u.home_path)
        .bind(millis(u.created_at))
        .bind(millis(u.updated_at))
        .execute(&self.writer)
        .await;
        inserted(done, || format!("user {}", u.name))
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::user_from_row).collect()
    }

    async fn set_user_status(
        &self,
        name: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Disabling ends every session the account had; other changes keep them.
        let revoke = status == "Disable";
        self.set_user_field(name, "account_status", status, revoke, now)
            .await
    }

    async fn set_user_password(
        &self,
        name: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.set_user_field(name, "password_hash", password_hash, true, now)
            .await
    }

    async fn add_org(&self, org: OrgRecord) -> Result<(), StoreError> {
        let done = sqlx::query("INSERT INTO orgs (org_id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&org.org_id)
            .bind(&org.name)
            .bind(millis(org.created_at))
            .execute(&self.writer)
            .await;
        inserted(done, || format!("org {}", org.org_id))
    }

    async fn org(&self, org_id: &str) -> Result<Option<OrgRecord>, StoreError> {
        let row = sqlx::query("SELECT org_id, name, created_at FROM orgs WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::org_from_row).transpose()
    }

    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let rows = sqlx::query("SELECT org_id, name, created_at FROM orgs ORDER BY org_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::org_from_row).collect()
    }

    async fn add_access_key(&self, k: AccessKeyRecord) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO access_keys (access_key, user_name, secret_sealed, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.access_key)
        .bind(&k.user_name)
        .bind(&k.secret_sealed)
        .bind(millis(k.created_at))
        .bind(k.revoked_at.map(millis))
        .execute(&self.writer)
        .await;
        match done {
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                Err(StoreError::Missing(format!("user {}", k.user_name)))
            }
            done => inserted(done, || format!("access key {}", k.access_key)),
        }
    }

    async fn access_key(&self, access_key: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT access_key, user_name, secret_sealed, created_at, revoked_at \
             FROM access_keys WHERE access_key = $1",
        )
        .bind(access_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::key_from_row).transpose()
    }

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT access_key, user_name, secret_sealed, created_at, revoked_at \
             FROM access_keys ORDER BY user_name, created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::key_from_row).collect()
    }

    async fn revoke_access_key(
        &self,
        access_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE access_keys SET revoked_at = $2 WHERE access_key = $1 AND revoked_at IS NULL",
        )
        .bind(access_key)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        Self::changed(done, format!("active access key {access_key}"))?;
        // The tokens it may have issued end with it.
        sqlx::query(
            "UPDATE users SET tokens_valid_after = $2 \
             WHERE name = (SELECT user_name FROM access_keys WHERE access_key = $1)",
        )
        .bind(access_key)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_signature(
        &self,
        signature: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM used_signatures WHERE expires_at < $1")
            .bind(millis(now))
            .execute(&self.writer)
            .await?;
        let done = sqlx::query(
            "INSERT INTO used_signatures (signature, expires_at) VALUES ($1, $2) \
             ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(millis(expires_at))
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn publish_viewers(
        &self,
        instance: &str,
        changed: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = millis(now);
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO instances (instance, seen_at) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(instance)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (key, open) in changed {
            if *open == 0 {
                sqlx::query("DELETE FROM viewers WHERE instance = $1 AND session_key = $2")
                    .bind(instance)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO viewers (instance, session_key, connections) VALUES ($1, $2, $3) \
                     ON CONFLICT (instance, session_key) \
                     DO UPDATE SET connections = excluded.connections",
                )
                .bind(instance)
                .bind(key)
                .bind(i64::from(*open))
                .execute(&mut *tx)
                .await?;
            }
        }
        let day_ago = now - 86_400_000;
        sqlx::query(
            "DELETE FROM viewers WHERE instance IN \
             (SELECT instance FROM instances WHERE seen_at < $1)",
        )
        .bind(day_ago)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM instances WHERE seen_at < $1")
            .bind(day_ago)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn viewers_elsewhere(
        &self,
        instance: &str,
        fresh_after: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.session_key, v.connections FROM viewers v \
             JOIN instances i ON i.instance = v.instance \
             WHERE v.instance <> $1 AND i.seen_at > $2",
        )
        .bind(instance)
        .bind(millis(fresh_after))
        .fetch_all(&self.pool)
        .await?;
        let mut out = std::collections::HashMap::new();
        for row in &rows {
            let key: String = row.try_get("session_key")?;
            let open: i64 = row.try_get("connections")?;
            *out.entry(key).or_insert(0) += u32::try_from(open).unwrap_or(0);
        }
        Ok(out)
    }

    async fn withdraw_instance(&self, instance: &str) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM viewers WHERE instance = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM instances WHERE instance = $1")
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn not_running(&self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let mut running = std::collections::HashSet::new();
        // Bounded statements: both backends cap the number of parameters.
        for chunk in keys.chunks(500) {
            let sql = format!(
                "SELECT key FROM sessions WHERE state = 'running' AND key IN ({})",
                DB::many_placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k);
            }
            for row in q.fetch_all(&self.pool).await? {
                running.insert(row.try_get::<String, _>("key")?);
            }
        }
        Ok(keys
            .iter()
            .filter(|k| !running.contains(*k))
            .cloned()
            .collect())
    }

    async fn record_audit(&self, e: AuditEvent) -> Result<(), StoreError> {
        self.group_commit(Some(e), true).await
    }

    async fn queue_audit(&self, e: AuditEvent) -> Result<(), StoreError> {
        self.group_commit(Some(e), false).await
    }

    async fn flush_audit(&self) -> Result<(), StoreError> {
        self.group_commit(None, true).await
    }

    async fn audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = if f.limit == 0 { 1000 } else { f.limit } as i64;
        let since = f.since.map(millis).unwrap_or(i64::MIN);
        let rows = match &f.user {
            Some(user) => {
                sqlx::query(
                    "SELECT at, kind, user_name, session_id, peer, detail FROM audit \
                     WHERE user_name = $1 AND at >= $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(user)
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT at, kind, user_name, session_id, peer, detail FROM audit \
                     WHERE at >= $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out: Vec<AuditEvent> = rows
            .iter()
            .map(Self::audit_from_row)
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite writes a batch of audit lines in the order given without sorting them: the
    /// `ORDER BY` of the statement is one the table function itself provides.
    #[tokio::test]
    async fn sqlite_inserts_a_batch_of_audit_lines_without_a_sort() {
        let store =
            crate::SqliteStore::open(&"sqlite::memory:".parse().unwrap(), crate::Access::Serve)
                .await
                .unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            <sqlx::Sqlite as Backend>::INSERT_AUDIT_JSON
        );
        let plan: Vec<String> = sqlx::query(AssertSqlSafe(sql))
            .bind("[]")
            .fetch_all(&store.writer)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        assert!(plan.iter().any(|d| d.contains("jsonb_each")), "{plan:?}");
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
    }
}
