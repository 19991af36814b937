//! Background lifecycle work (DESIGN §4).
//!
//! **Reconcile** (at start-up and every `lifecycle.reconcile_every`): ask the launcher which
//! desktops are really alive. A running session whose VNC server is gone becomes `failed`
//! with the reason and loses its grants; a session stuck in `starting` far beyond the start
//! timeout (hpcdesk died mid-start) becomes `failed` so its user can create again; a desktop
//! no session owns is reported, and stopped when `lifecycle.kill_orphans` is set.
//! Reconcile never holds up the API: it runs in its own task and a slow launcher only
//! delays the next round.

use std::time::Duration;

use hpcdesk_core::SessionState;
use hpcdesk_launcher::Liveness;

use crate::error::ApiError;
use crate::sessions;
use crate::state::AppState;

/// What one reconcile round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub checked: usize,
    pub failed: usize,
    pub orphans: usize,
    pub orphans_stopped: usize,
}

/// Parses `HH:MM` (24 h).
pub fn parse_time_of_day(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a time of day like 01:00");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// One reconcile round.
pub async fn reconcile(app: &AppState) -> Result<ReconcileReport, ApiError> {
    let mut report = ReconcileReport::default();
    let now = app.clock.now();

    // Starts interrupted by a crash: no request is waiting for them any more.
    let stale_after =
        chrono::Duration::from_std(app.config.launcher.start_timeout.0 + Duration::from_secs(60))
            .map_err(ApiError::internal)?;
    for rec in app.store.sessions_in(&[SessionState::Starting]).await? {
        if now - rec.updated_at > stale_after {
            app.store
                .transition(
                    &rec.key,
                    &[SessionState::Starting],
                    SessionState::Failed,
                    "the desktop start was interrupted (hpcdesk restarted while it was starting)",
                    now,
                )
                .await?;
            report.failed += 1;
        }
    }

    let running = app.store.sessions_in(&[SessionState::Running]).await?;
    let (recs, targets): (Vec<_>, Vec<_>) = running
        .iter()
        .filter(|r| r.launcher == app.launcher.kind())
        .filter_map(|r| Some((r, sessions::target(r)?)))
        .unzip();
    let survey = app
        .launcher
        .survey(&targets)
        .await
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    report.checked = targets.len();
    for (rec, liveness) in recs.iter().zip(&survey.targets) {
        match liveness {
            Liveness::Alive => {}
            Liveness::Unknown(why) => {
                tracing::warn!(key = %rec.key, "cannot check desktop: {why}");
            }
            Liveness::Gone(reason) => {
                let moved = app
                    .store
                    .transition(
                        &rec.key,
                        &[SessionState::Running],
                        SessionState::Failed,
                        reason,
                        app.clock.now(),
                    )
                    .await?;
                if moved {
                    app.store.revoke_grants(&rec.key).await?;
                    report.failed += 1;
                    tracing::warn!(
                        session = ?rec.session_id.as_ref().map(ToString::to_string),
                        reason = %reason,
                        "desktop is gone; session marked failed"
                    );
                }
            }
        }
    }
    report.orphans = survey.orphans.len();
    for orphan in &survey.orphans {
        if app.config.lifecycle.kill_orphans {
            match app.launcher.stop_orphan(orphan).await {
                Ok(()) => {
                    report.orphans_stopped += 1;
                    tracing::warn!(node = %orphan.node, user = %orphan.user, display = orphan.display, pid = orphan.pid, "stopped a desktop no session owns");
                }
                Err(e) => {
                    tracing::error!(node = %orphan.node, user = %orphan.user, display = orphan.display, error = %e, "could not stop an orphaned desktop");
                }
            }
        } else {
            tracing::warn!(node = %orphan.node, user = %orphan.user, display = orphan.display, pid = orphan.pid, "a desktop no session owns is running (lifecycle.kill_orphans is off)");
        }
    }
    let purged = app
        .store
        .purge_grants(now - chrono::Duration::hours(1))
        .await?;
    if purged > 0 {
        tracing::debug!(purged, "expired grants removed");
    }
    Ok(report)
}

/// Runs reconcile every `lifecycle.reconcile_every` until `shutdown` fires.
pub async fn reconcile_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = app
        .config
        .lifecycle
        .reconcile_every
        .0
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires at once; start-up already reconciled
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = reconcile(&app).await {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "reconcile failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(parse_time_of_day("01:00"), Ok((1, 0)));
        assert_eq!(parse_time_of_day("23:59"), Ok((23, 59)));
        assert!(parse_time_of_day("24:00").is_err());
        assert!(parse_time_of_day("1").is_err());
        assert!(parse_time_of_day("aa:bb").is_err());
    }
}
