//! The hpcdesk service.
//!
//! - [`config`]: the TOML + environment configuration, its defaults (DESIGN §5) and the
//!   typed [`config::Settings`] validation makes of it.
//! - [`auth`]: SCNet token verification and minting (DESIGN §2.2).
//! - [`accounts`]: issuing tokens (password, access key, renewal) and region info.
//! - [`passwords`]: argon2id hashing of account passwords; [`pam_auth`]: password logins
//!   through PAM.
//! - [`throttle`]: request-rate limits and failed-login lock-outs (10011).
//! - [`audit`]: writing the audit log.
//! - [`logging`]: the service's log output (filter, colours only on a terminal).
//! - [`metrics`]: counters and gauges for Prometheus (`GET /metrics`).
//! - [`error`]: [`ApiError`], the one map from failures to SCNet codes and HTTP statuses,
//!   and [`error::TaskError`], what the work behind requests and background tasks fails with.
//! - [`conn`]: the accept loop; caps and time limits on incomplete requests.
//! - [`tls`]: TLS on the listener (`server.tls_cert`), reloaded on SIGHUP.
//! - [`routes`]: the axum router; handlers only translate HTTP.
//! - [`grants`]: connection grants whole: minting (signed, not stored), the launch URL,
//!   resolving them for the gateway (`hpcdesk-gateway`).
//! - [`jobs`]: Slurm jobs telling hpcdesk their desktop is ready (token, check, wake-ups).
//! - [`sessions`]: orchestration of create / list / delete / launchurl (no HTTP types).
//! - [`lifecycle`]: reconcile and the idle sweep, run in the background.
//! - [`presence`]: viewer counts shared with other instances on the same store.
//! - [`state`]: [`AppState`] shared by all of the above, and the [`Clock`].
//! - [`startup`]: building the state from a config and serving on a given listener.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod grants;
pub mod jobs;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod pam_auth;
pub mod passwords;
pub mod presence;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod tls;

pub use config::Config;
pub use error::ApiError;
pub use routes::router;
pub use startup::{StartupError, build, build_with, reload, serve};
pub use state::{AppState, Clock, SystemClock};
