//! Viewers seen by the other hpcdesk instances that share this store.
//!
//! Several instances may serve one site behind a load balancer, on one PostgreSQL. A viewer
//! is connected to one of them, but every instance must list its session with the right
//! `connections`, must not sweep it as idle, and must close it when the session is deleted
//! through another instance. Once a second, [`presence_loop`]:
//! - publishes this instance's open-viewer counts that changed (and a heartbeat every ten
//!   seconds) under an instance id chosen at start-up;
//! - reads the other instances' counts (heartbeat fresher than thirty seconds) into
//!   [`Presence`], which listing and the sweep add to the gateway's own counts;
//! - closes this instance's viewers of sessions that are no longer running (deleted, swept
//!   or failed elsewhere): within about a second, like a delete on this instance.
//!
//! It runs only on a shared store (PostgreSQL): a SQLite file belongs to one instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::AppState;

/// How often the loop runs.
const EVERY: Duration = Duration::from_secs(1);
/// A heartbeat is written at least this often, even with nothing changed.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Counts of an instance whose heartbeat is older than this are ignored (it died).
const FRESH: Duration = Duration::from_secs(30);

/// This instance's id and the last known viewer counts of the others.
#[derive(Debug)]
pub struct Presence {
    instance: String,
    /// Replaced by each heartbeat round, read by each viewer admission. A plain mutex:
    /// held to swap or sum the map, never across an await.
    elsewhere: Mutex<HashMap<String, u32>>,
}

impl Default for Presence {
    fn default() -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".into());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Presence {
            instance: format!("{host}-{}-{}", std::process::id(), &nonce[..8]),
            elsewhere: Mutex::new(HashMap::new()),
        }
    }
}

impl Presence {
    /// The id this instance publishes under.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Open viewers of a session on other instances, as of the last round.
    pub fn elsewhere(&self, session_key: &str) -> u32 {
        self.lock().get(session_key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.elsewhere.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What this instance last published.
#[derive(Debug, Default)]
struct Published {
    counts: HashMap<String, u32>,
    at: Option<Instant>,
}

/// One round: publish, read the others, close viewers of ended sessions.
async fn round(app: &AppState, published: &mut Published) -> Result<(), hpcdesk_store::StoreError> {
    let now = app.clock.now();
    let local: HashMap<String, u32> = app
        .gateway
        .registry
        .all()
        .into_iter()
        .filter(|(_, a)| a.connections > 0)
        .map(|(k, a)| (k, a.connections))
        .collect();
    let mut changed: Vec<(String, u32)> = local
        .iter()
        .filter(|(k, n)| published.counts.get(*k) != Some(n))
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    changed.extend(
        published
            .counts
            .keys()
            .filter(|k| !local.contains_key(*k))
            .map(|k| (k.clone(), 0)),
    );
    if !changed.is_empty() || published.at.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
        app.store
            .publish_viewers(app.presence.instance(), &changed, now)
            .await?;
        published.counts = local.clone();
        published.at = Some(Instant::now());
    }
    let fresh_after = now - crate::state::span(FRESH);
    let others = app
        .store
        .viewers_elsewhere(app.presence.instance(), fresh_after)
        .await?;
    *app.presence.lock() = others;
    if !local.is_empty() {
        let keys: Vec<String> = local.into_keys().collect();
        for key in app.store.not_running(&keys).await? {
            tracing::info!(key = %key, "session ended elsewhere; closing its viewers here");
            app.gateway
                .registry
                .close_session(&key, hpcdesk_gateway::CloseReason::SessionDeleted);
        }
    }
    Ok(())
}

/// Runs a round every second until `shutdown` fires, then withdraws this instance's counts.
pub async fn presence_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut published = Published::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = round(&app, &mut published).await {
                    tracing::warn!(error = %e, "sharing viewer counts with other instances failed");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    if let Err(e) = app.store.withdraw_instance(app.presence.instance()).await {
        tracing::warn!(error = %e, "could not withdraw this instance's viewer counts");
    }
}
