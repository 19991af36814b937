//! hpcdesk's state: desktop sessions, accounts and the audit log (connection grants are
//! signed, not stored: hpcdesk-server's `grants`).
//!
//! - this file: the [`Store`] trait, named by use case, and the records it hands out.
//!   Callers hold an `Arc<dyn Store>` chosen once at start-up and never see SQL.
//! - [`sql`]: the store over SQL, once for both backends; [`sqlite`] (the zero-set-up
//!   default) and [`postgres`] open their pools and carry their migrations.
//! - [`bounded`]: a time limit on every call ([`open`] hands out bounded stores).
//! - `url`: [`StoreUrl`], the one reader of the `store.url` text.
//! - `cache`: the sessions in memory for the store one process alone writes, holding
//!   the lock that makes that so.
//!
//! Rules that must hold across several hpcdesk instances live in the database, not in
//! memory: one live session per user is a unique index, a session id names one desktop
//! until it is stopped, state changes are conditional on the state they leave.
#![forbid(unsafe_code)]

pub mod bounded;
mod cache;
pub mod postgres;
pub mod sql;
pub mod sqlite;
mod url;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId, SessionState};

pub use postgres::PostgresStore;
pub use sql::{Backend, SqlStore};
pub use sqlite::SqliteStore;
pub use url::{StoreUrl, redact_password};

/// How this process uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `hpcdesk serve`: this process runs the sessions. A SQLite file is locked to it (a
    /// second `serve` is refused with [`StoreError::InUse`]) and its sessions are kept in
    /// memory.
    Serve,
    /// An admin command beside a running `serve` (accounts, keys, the audit log): no lock,
    /// no session cache.
    Admin,
}

/// Errors of the store. Callers treat all of them as internal (10001) except where a
/// method documents otherwise; the cause goes to the log, never to the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot write just now (PostgreSQL down, a pool
    /// that timed out, SQLite's disk full or file read-only). Nothing was written; the call
    /// may be retried once the database is back. Callers tell their clients so plainly.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A group commit of audit lines could not be written (the database's own words).
    #[error("cannot write the audit log: {0}")]
    Audit(String),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// Holds only the URL's scheme: the rest may carry a password.
    #[error("unsupported store url scheme {0:?} (expected sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    /// Another `hpcdesk serve` holds the SQLite file.
    #[error(
        "another hpcdesk serve uses {path} (it holds {path}.lock); several instances need \
         PostgreSQL (store.url = \"postgres://…\")"
    )]
    InUse { path: String },
    /// The SQLite file's lock could not be taken.
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A row with that key exists already (shown to admins as is).
    #[error("{0} already exists")]
    Exists(String),
    /// No row with that key (shown to admins as is).
    #[error("{0} does not exist")]
    Missing(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether `e` says the database cannot be used at the moment (as opposed to a query that is
/// wrong): no connection, a connection lost, or storage that refuses writes.
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<i64>() {
                // SQLite result codes (extended codes keep the primary one in the low byte):
                // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                Ok(n) => matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14),
                // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient
                // resources (disk full, too many connections), 57P01-57P03 the server shuts
                // down or is starting, 25006 read-only transaction (a standby).
                Err(_) => {
                    code.starts_with("08")
                        || code.starts_with("53")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "25006")
                }
            }
        }
        _ => false,
    }
}

impl StoreError {
    /// Whether the database could not be used at all (see [`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Internal key, stable for the whole life of the row.
    pub key: String,
    /// Known once a display was picked.
    pub session_id: Option<SessionId>,
    /// Platform user (`user` claim) who owns the session.
    pub owner: String,
    pub user_id: String,
    pub invoker: String,
    pub compute_user: ComputeUser,
    pub node: Option<NodeName>,
    pub display: Option<DisplayNumber>,
    /// Address the gateway connects to.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub state: SessionState,
    pub status_reason: String,
    pub geometry: String,
    /// The desktop chosen at create (a name of `launcher.desktops`; empty: the agent's own).
    pub desktop: String,
    /// The VNC password, sealed with the server key (see `hpcdesk_core::seal`).
    pub vnc_password_sealed: Option<Vec<u8>>,
    /// Launcher kind that started it (`local`, `ssh`, `slurm`).
    pub launcher: String,
    /// Launcher-specific handle (JSON), e.g. the Xvnc pid or the Slurm job id.
    pub handle: String,
    /// The token on every process of the desktop (and in a Slurm job's name), chosen before
    /// the desktop is launched: what finds it after a crash. Empty for sessions older than it.
    pub marker: String,
    /// The hpcdesk instance that started (or is starting) the desktop.
    pub starter: String,
    /// A queued desktop (a Slurm job): followed in the background until it runs, rather than
    /// waited for by the request that created it.
    pub queued: bool,
    /// The SHA-256 of the desktop's TLS certificate, which the gateway pins; `None`: plain
    /// VNC authentication (loopback).
    pub tls_pin: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_input_at: Option<DateTime<Utc>>,
    /// When the desktop ends by its time limit (a Slurm job's end, or the lifetime the site
    /// allows and the extensions granted); `None`: no limit.
    pub ends_at: Option<DateTime<Utc>>,
}

/// What a create request asks the store to reserve.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub owner: String,
    pub user_id: String,
    pub invoker: String,
    pub compute_user: ComputeUser,
    pub geometry: String,
    /// See [`SessionRecord::desktop`].
    pub desktop: String,
    pub launcher: String,
    /// `starting`, or `pending` for launchers that queue.
    pub state: SessionState,
    /// Where the desktop will run, when the launcher knows before it starts (`local`).
    pub node: Option<NodeName>,
    /// See [`SessionRecord::marker`]; written before anything is launched.
    pub marker: String,
    /// This instance (see [`SessionRecord::starter`]).
    pub starter: String,
    /// The desktop's VNC password, sealed, chosen before it is launched.
    pub vnc_password_sealed: Vec<u8>,
    /// See [`SessionRecord::ends_at`] (a lifetime known at create).
    pub ends_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Outcome of [`Store::claim_session`].
#[derive(Debug, Clone)]
pub enum Claim {
    /// A new row was reserved; the caller now starts the desktop.
    Claimed(SessionRecord),
    /// The owner already has a live session; nothing was written.
    Existing(SessionRecord),
}

/// Where a started desktop lives.
#[derive(Debug, Clone)]
pub struct Started {
    pub session_id: SessionId,
    pub node: NodeName,
    pub display: DisplayNumber,
    pub host: String,
    pub port: u16,
    pub vnc_password_sealed: Vec<u8>,
    pub handle: String,
    pub state: SessionState,
    /// See [`SessionRecord::tls_pin`].
    pub tls_pin: Option<String>,
    /// The end the launcher reports (a Slurm job's); `None` keeps the one stored.
    pub ends_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// A platform account.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub name: String,
    pub user_id: String,
    pub password_hash: String,
    pub compute_user: ComputeUser,
    pub role: String,
    pub account_status: String,
    pub home_path: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Tokens hpcdesk issued for the account before this are void (set by a password change,
    /// a disable or a revoked access key).
    pub tokens_valid_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrgRecord {
    pub org_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessKeyRecord {
    pub access_key: String,
    pub user_name: String,
    pub secret_sealed: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// e.g. `token_issued`, `session_created`, `viewer_connected`.
    pub kind: String,
    pub user: String,
    pub session_id: String,
    pub peer: String,
    pub detail: String,
}

/// Which audit lines to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: usize,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reserves a live session for `new.owner`, or returns the one they already have.
    /// Earlier failed or stopped sessions of that owner are dismissed when a new one is
    /// reserved, so a list shows the current desktop or the last failure, not a history.
    async fn claim_session(&self, new: NewSession) -> Result<Claim, StoreError>;

    /// Records where a reserved session's desktop runs. Any other visible session with the
    /// same id (a dead desktop whose display was reused) is stopped in the same transaction.
    /// Returns `None` if the row left the states a start may finish from meanwhile.
    async fn session_started(
        &self,
        key: &str,
        started: Started,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Records that a reserved session's desktop was queued (a Slurm job): it gets its id,
    /// the launcher's handle, its sealed VNC password and the reason it waits, and becomes
    /// `pending`. `None` if the
    /// row is no longer being started.
    async fn session_queued(
        &self,
        key: &str,
        session_id: &SessionId,
        handle: &str,
        vnc_password_sealed: &[u8],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Updates a queued session that is still pending or starting: its state (`pending` or
    /// `starting`) and the reason shown. Returns whether the row was updated.
    async fn session_progress(
        &self,
        key: &str,
        state: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records that starting a reserved session failed, and where (so the failure is listed
    /// under its id with `reason`), if the row is still being started; returns whether it was.
    async fn start_failed(
        &self,
        key: &str,
        at: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Moves a session to `to` if it is currently in one of `from`; returns whether it moved.
    async fn transition(
        &self,
        key: &str,
        from: &[SessionState],
        to: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Hides a stopped session from lists (it was deleted or swept). A session that ended
    /// outside hpcdesk stays listed as `stopped` until this.
    async fn dismiss(&self, key: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// The session with this key, shared (a store that keeps sessions in memory hands out its
    /// own copy).
    async fn session_by_key(
        &self,
        key: &str,
    ) -> Result<Option<std::sync::Arc<SessionRecord>>, StoreError>;

    /// The visible (not dismissed) session with this id, shared like
    /// [`Store::session_by_key`]'s.
    async fn visible_session(
        &self,
        id: &SessionId,
    ) -> Result<Option<std::sync::Arc<SessionRecord>>, StoreError>;

    /// Visible (not dismissed) sessions that have an id, oldest first; all owners when
    /// `owner` is `None`.
    async fn list_sessions(&self, owner: Option<&str>) -> Result<Vec<SessionRecord>, StoreError>;

    /// Sessions in any of `states` (for reconcile and sweep).
    async fn sessions_in(&self, states: &[SessionState]) -> Result<Vec<SessionRecord>, StoreError>;

    /// Sessions that ended (`failed` or `stopped`) since `since` and carry a marker: their
    /// desktop may still be finishing its start somewhere, to be found and stopped.
    async fn sessions_ended_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// The session (in any state, dismissed or not) whose desktop carries `marker`.
    async fn session_by_marker(&self, marker: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Instances whose heartbeat ([`Store::publish_viewers`]) is newer than `fresh_after`.
    async fn fresh_instances(&self, fresh_after: DateTime<Utc>) -> Result<Vec<String>, StoreError>;

    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Sets when a live session ends by its time limit (an extension, a job's new end).
    /// `None` if the session is no longer live.
    async fn set_ends_at(
        &self,
        key: &str,
        ends_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Records the last client input seen for a session (kept if an earlier time is given).
    async fn record_activity(&self, key: &str, last_input: DateTime<Utc>)
    -> Result<(), StoreError>;

    /// Adds an account; [`StoreError::Exists`] if the name is taken.
    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError>;

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Sets `accountStatus` (`Disable` also voids the tokens issued so far);
    /// [`StoreError::Missing`] for an unknown name.
    async fn set_user_status(
        &self,
        name: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Replaces the password hash and voids the tokens issued so far;
    /// [`StoreError::Missing`] for an unknown name.
    async fn set_user_password(
        &self,
        name: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    async fn add_org(&self, org: OrgRecord) -> Result<(), StoreError>;

    async fn org(&self, org_id: &str) -> Result<Option<OrgRecord>, StoreError>;

    async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError>;

    async fn add_access_key(&self, key: AccessKeyRecord) -> Result<(), StoreError>;

    async fn access_key(&self, access_key: &str) -> Result<Option<AccessKeyRecord>, StoreError>;

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError>;

    /// Revokes a key, and voids the tokens issued so far for its user; [`StoreError::Missing`]
    /// if it does not exist or is already revoked.
    async fn revoke_access_key(
        &self,
        access_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a signature as used; `false` if it was used before (a replay). Forgets
    /// signatures whose `expires_at` is before `now`.
    async fn use_signature(
        &self,
        signature: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Heartbeat of hpcdesk instance `instance` at `now`, with the sessions whose number of
    /// open viewers on that instance changed (`0`: none any more). Forgets instances silent
    /// for a day.
    async fn publish_viewers(
        &self,
        instance: &str,
        changed: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Open viewers per session on every instance but `instance` whose heartbeat is newer
    /// than `fresh_after`.
    async fn viewers_elsewhere(
        &self,
        instance: &str,
        fresh_after: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, u32>, StoreError>;

    /// Forgets an instance's viewers (it shuts down).
    async fn withdraw_instance(&self, instance: &str) -> Result<(), StoreError>;

    /// Those of `keys` whose session is not running any more (or does not exist).
    async fn not_running(&self, keys: &[String]) -> Result<Vec<String>, StoreError>;

    /// Writes an audit line; returns once it is committed (group-committed with the lines
    /// other callers write meanwhile).
    async fn record_audit(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// Queues an audit line for a group commit soon (within a few tens of milliseconds: the
    /// writer waits a little for more lines nobody waits for) and returns without waiting for
    /// it, when the queue has room; otherwise as [`Store::record_audit`]. A commit nobody
    /// waits for that fails is logged by the store.
    async fn queue_audit(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// Returns once every audit line queued before the call is committed (at shutdown, so
    /// that no queued line is left behind).
    async fn flush_audit(&self) -> Result<(), StoreError>;

    /// Audit lines matching `filter`, oldest first (the newest `filter.limit` of them).
    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Opens the store `url` names: `sqlite://…` (or `sqlite::memory:`) or `postgres://…`.
/// Every call of the store returned is bounded by [`bounded::CALL_LIMIT`].
pub async fn open(url: &StoreUrl, access: Access) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let store: std::sync::Arc<dyn Store> = match url {
        StoreUrl::Sqlite { .. } => std::sync::Arc::new(SqliteStore::open(url, access).await?),
        StoreUrl::Postgres { .. } => std::sync::Arc::new(PostgresStore::open(url).await?),
    };
    Ok(std::sync::Arc::new(bounded::Bounded::new(
        store,
        bounded::CALL_LIMIT,
    )))
}
