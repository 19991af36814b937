//! The shared application state handed to every handler and background task.

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hpcdesk_core::seal::ServerKey;
use hpcdesk_gateway::Gateway;
use hpcdesk_launcher::Launcher;
use hpcdesk_store::Store;

use crate::auth::TokenVerifier;
use crate::config::Settings;

/// Where "now" comes from; tests substitute a clock they control.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A configured span of time as the clock's arithmetic takes it, saturating (configuration
/// validation keeps them far below the limit).
pub fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Everything the service shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The validated configuration (`app.config.launcher…` reads the file's values).
    pub config: Settings,
    pub store: Arc<dyn Store>,
    pub launcher: Arc<dyn Launcher>,
    pub verifier: TokenVerifier,
    pub server_key: ServerKey,
    pub clock: Arc<dyn Clock>,
    pub gateway: Arc<Gateway>,
    pub limits: crate::throttle::Limits,
    pub account_status: crate::accounts::StatusCache,
    pub metrics: crate::metrics::Metrics,
    /// Viewers on other instances sharing the store.
    pub presence: crate::presence::Presence,
    /// The Content-Security-Policy of the pages (from `server.frame_ancestors`).
    pub csp: String,
    /// The desktop starts this instance is carrying out right now.
    pub in_flight: crate::sessions::InFlight,
    /// Slurm jobs saying their desktop is ready: waiters for queued desktops look at once.
    pub job_wakes: crate::jobs::JobWakes,
    /// TLS on the listener, when `server.tls_cert` is set.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
