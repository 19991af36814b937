//! PostgreSQL backend of the [`Store`](crate::Store), for sites that run several hpcdesk
//! instances on one shared state (`store.url = "postgres://…"`). One pool serves reads and
//! writes; PostgreSQL's own locking orders concurrent writers, and the partial unique indexes
//! keep "one live session per user" true across instances. Migrations are embedded at build
//! time (`migrations/postgres`); concurrent start-ups wait on sqlx's migration lock.
//!
//! TLS: add `sslmode=require` (or `verify-full` with `sslrootcert=…`) to the URL; the system's
//! trusted roots are used.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Postgres};

use crate::sql::SqlStore;
use crate::{StoreError, StoreUrl};

/// The store on a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

/// How long a call waits for a connection. While PostgreSQL is down every call fails after
/// this long (as [`StoreError::Unavailable`]), so the API
/// answers within a couple of seconds instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections per hpcdesk instance: enough for the API's concurrent requests, few enough
/// that a handful of instances stay well under PostgreSQL's default `max_connections` (100).
const MAX_CONNECTIONS: u32 = 16;

impl SqlStore<Postgres> {
    /// Connects to `url` (`postgres://user:password@host:port/database?sslmode=…`) and brings
    /// the schema up to date. The database must exist; hpcdesk creates its tables.
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        let StoreUrl::Postgres { url } = url else {
            return Err(StoreError::UnsupportedUrl("sqlite".into()));
        };
        let options = PgConnectOptions::from_str(url)?.application_name("hpcdesk");
        // One connection first, so that a refused connection or a wrong password is reported
        // as such at once rather than as a pool that timed out.
        sqlx::PgConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // Shared by instances: nothing is cached.
        Ok(Self::with_pools(pool.clone(), pool, None))
    }
}
