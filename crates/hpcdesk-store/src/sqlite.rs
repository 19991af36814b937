//! SQLite backend of the [`Store`](crate::Store): one file under the data directory, WAL
//! journal, a pool of readers beside one writer connection, migrations embedded at build
//! time (`migrations/sqlite`). The zero-set-up default for a single hpcdesk instance.
//!
//! `hpcdesk serve` keeps the sessions in memory ([`crate::cache`]), which is right only while
//! no other `serve` writes them: it locks `<file>.lock` for as long as the store lives, and
//! the lock is held by the cache itself.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::cache::SessionCache;
use crate::sql::SqlStore;
use crate::{Access, StoreError, StoreUrl};

/// How long a call waits for a connection (writers queue for the one writer connection).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on a SQLite file (or in memory, for tests).
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the SQLite database `url` names and brings its schema up
    /// to date; for [`Access::Serve`], first locks its file to this process.
    pub async fn open(url: &StoreUrl, access: Access) -> Result<Self, StoreError> {
        let StoreUrl::Sqlite { url, file } = url else {
            return Err(StoreError::UnsupportedUrl("postgres".into()));
        };
        let cache = match (access, file) {
            (Access::Serve, Some(file)) => Some(SessionCache::new(Some(lock(file)?))),
            // In memory: no other process can reach it.
            (Access::Serve, None) => Some(SessionCache::new(None)),
            (Access::Admin, _) => None,
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if file.is_none() {
            // One connection holds the whole database: it reads and writes.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            return Ok(Self::with_pools(pool.clone(), pool, cache));
        }
        // A checkpoint copies the WAL into the database and syncs both: milliseconds that fall
        // on whichever commit crosses the threshold. Audit lines rewrite the same few pages with
        // every commit, so the WAL grows fast but holds few distinct pages: checkpoint at 64
        // MiB rather than SQLite's 4 MiB, 16 times less often for about the same work each.
        // After a checkpoint the WAL file is cut back to that size.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(600)))
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", "16384")
                    .pragma("journal_size_limit", "67108864"),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(options)
            .await?;
        Ok(Self::with_pools(pool, writer, cache))
    }
}

/// Takes the exclusive lock on `<file>.lock` (created if missing) without waiting.
fn lock(file: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let path = format!("{}.lock", file.display());
    let lock_err = |source| StoreError::Lock {
        path: path.clone(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: file.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}
