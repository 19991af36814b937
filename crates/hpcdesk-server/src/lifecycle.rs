//! Background lifecycle work (DESIGN §4).
//!
//! **Reconcile** (at start-up and every `lifecycle.reconcile_every`): ask the launcher which
//! desktops are really alive. A running session whose VNC server is gone becomes `failed`
//! with the reason and loses its grants; a session stuck in `starting` far beyond the start
//! timeout (hpcdesk died mid-start) becomes `failed` so its user can create again; a desktop
//! no session owns is reported, and stopped when `lifecycle.kill_orphans` is set.
//! Reconcile never holds up the API: it runs in its own task and a slow launcher only
//! delays the next round. Each round also saves the gateway's last-input times to the store,
//! so idleness survives a restart.
//!
//! **Idle sweep** (daily at `lifecycle.idle_sweep_at`, server local time, and on demand):
//! deletes sessions with no open viewer whose last activity — creation, last client input,
//! last viewer disconnect — is older than `lifecycle.idle_after`. A session with an open
//! viewer is never swept. Failed sessions that old are cleared too.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveTime, TimeZone, Utc};
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
        // Queued desktops (with a handle) are followed by the pending watcher instead.
        if rec.handle.is_empty() && now - rec.updated_at > stale_after {
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
        .map(|r| (r, sessions::target(r)))
        .filter(|(_, t)| app.launcher.watches(t))
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
            Liveness::Ended(reason) => {
                let moved = app
                    .store
                    .transition(
                        &rec.key,
                        &[SessionState::Running],
                        SessionState::Stopped,
                        reason,
                        app.clock.now(),
                    )
                    .await?;
                if moved {
                    app.store.revoke_grants(&rec.key).await?;
                    app.gateway
                        .registry
                        .close_session(&rec.key, hpcdesk_gateway::CloseReason::SessionDeleted);
                    report.failed += 1;
                    tracing::info!(
                        session = ?rec.session_id.as_ref().map(ToString::to_string),
                        reason = %reason,
                        "desktop ended outside hpcdesk; session stopped"
                    );
                }
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
                    crate::audit::record(
                        app,
                        crate::audit::Kind::SessionFailed,
                        &rec.owner,
                        &rec.session_id
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        "",
                        reason.clone(),
                    )
                    .await;
                    tracing::warn!(
                        session = ?rec.session_id.as_ref().map(ToString::to_string),
                        reason = %reason,
                        "desktop is gone; session marked failed"
                    );
                }
            }
        }
    }
    // Sessions as they are now, after the survey: a desktop whose start finished meanwhile is
    // owned, and one being started (by this instance or another) is not an orphan yet, as
    // its session learns its display only when the start finishes.
    let live_now = app
        .store
        .sessions_in(&[
            SessionState::Pending,
            SessionState::Starting,
            SessionState::Running,
        ])
        .await?;
    let orphans: Vec<_> = survey
        .orphans
        .iter()
        .filter(|o| {
            !live_now.iter().any(|r| {
                r.compute_user.as_str() == o.user
                    && (r.state != SessionState::Running
                        || (r.node.as_ref() == Some(&o.node)
                            && r.display.map(|d| d.get()) == Some(o.display)))
            })
        })
        .collect();
    report.orphans = orphans.len();
    for orphan in orphans {
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
    for (key, act) in app.gateway.registry.all() {
        if let Some(t) = act.last_input {
            app.store.record_activity(&key, t).await?;
        }
    }
    app.limits.forget_old();
    let purged = app
        .store
        .purge_grants(now - chrono::Duration::hours(1))
        .await?;
    if purged > 0 {
        tracing::debug!(purged, "expired grants removed");
    }
    Ok(report)
}

/// Follows queued desktops (Slurm jobs) until they run, fail or end.
pub async fn follow_queued(app: &AppState) -> Result<usize, ApiError> {
    let recs = app
        .store
        .sessions_in(&[SessionState::Pending, SessionState::Starting])
        .await?;
    let mut n = 0;
    for rec in recs
        .iter()
        .filter(|r| !r.handle.is_empty() && r.launcher == app.launcher.kind())
    {
        sessions::advance(app, rec).await?;
        n += 1;
    }
    Ok(n)
}

/// Runs [`follow_queued`] every two seconds (or every reconcile interval, if shorter).
pub async fn queued_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = app
        .config
        .lifecycle
        .reconcile_every
        .0
        .clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = follow_queued(&app).await {
                    tracing::error!(error = %e, "following queued desktops failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
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

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub checked: usize,
    /// Ids of the sessions deleted.
    pub swept: Vec<String>,
    /// Sessions kept because a viewer is connected (to any instance).
    pub in_use: usize,
}

/// One idle sweep at the clock's current time.
pub async fn sweep(app: &AppState) -> Result<SweepReport, ApiError> {
    let now = app.clock.now();
    let idle_after = chrono::Duration::from_std(app.config.lifecycle.idle_after.0)
        .map_err(ApiError::internal)?;
    let mut report = SweepReport::default();
    for rec in app
        .store
        .sessions_in(&[SessionState::Running, SessionState::Failed])
        .await?
    {
        report.checked += 1;
        let act = app.gateway.registry.activity(&rec.key);
        if act.connections + app.presence.elsewhere(&rec.key) > 0 {
            report.in_use += 1;
            continue;
        }
        let last = [
            Some(rec.created_at),
            rec.last_input_at,
            act.last_input,
            act.last_disconnect,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(rec.created_at);
        if now - last < idle_after {
            continue;
        }
        let reason = format!(
            "swept: idle since {}",
            last.with_timezone(&Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        );
        match sessions::stop(app, &rec, &reason).await {
            Ok(()) => {
                let id = rec
                    .session_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| rec.key.clone());
                tracing::info!(session = %id, owner = %rec.owner, %reason, "idle session swept");
                crate::audit::record(
                    app,
                    crate::audit::Kind::SessionSwept,
                    &rec.owner,
                    &id,
                    "",
                    reason.clone(),
                )
                .await;
                report.swept.push(id);
            }
            Err(e) => {
                tracing::error!(key = %rec.key, error = %e, "could not sweep an idle session")
            }
        }
    }
    Ok(report)
}

/// The next time (after `now`) the local clock shows `hh:mm`.
pub fn next_sweep(now: DateTime<Utc>, (h, m): (u32, u32)) -> DateTime<Utc> {
    let local = now.with_timezone(&Local);
    let at = NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
    let mut day = local.date_naive();
    loop {
        // A time skipped by a DST change resolves to the next valid instant.
        let candidate = Local
            .from_local_datetime(&day.and_time(at))
            .earliest()
            .map(|t| t.with_timezone(&Utc));
        if let Some(t) = candidate
            && t > now
        {
            return t;
        }
        day = day.succ_opt().unwrap_or(day);
    }
}

/// Runs the sweep daily at `lifecycle.idle_sweep_at` until `shutdown` fires.
pub async fn sweep_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Ok(at) = parse_time_of_day(&app.config.lifecycle.idle_sweep_at) else {
        return; // validated at start-up
    };
    loop {
        let now = app.clock.now();
        let wait = (next_sweep(now, at) - now)
            .to_std()
            .unwrap_or(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                match sweep(&app).await {
                    Ok(r) => tracing::info!(checked = r.checked, swept = r.swept.len(), in_use = r.in_use, "daily idle sweep done"),
                    Err(e) => tracing::error!(error = %e, "daily idle sweep failed"),
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
    fn the_next_sweep_is_later_today_or_tomorrow() {
        let now = Utc::now();
        let local = now.with_timezone(&Local);
        let soon = local + chrono::Duration::minutes(2);
        use chrono::Timelike;
        let next = next_sweep(now, (soon.hour(), soon.minute()));
        assert!(
            next > now && next - now <= chrono::Duration::minutes(2),
            "{next} vs {now}"
        );
        let past = local - chrono::Duration::minutes(2);
        let next = next_sweep(now, (past.hour(), past.minute()));
        assert!(next - now > chrono::Duration::hours(23), "{next} vs {now}");
        assert!(next - now <= chrono::Duration::hours(25));
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(parse_time_of_day("01:00"), Ok((1, 0)));
        assert_eq!(parse_time_of_day("23:59"), Ok((23, 59)));
        assert!(parse_time_of_day("24:00").is_err());
        assert!(parse_time_of_day("1").is_err());
        assert!(parse_time_of_day("aa:bb").is_err());
    }
}
