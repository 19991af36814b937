//! Background lifecycle work (DESIGN §4).
//!
//! **Reconcile** (at start-up and every `lifecycle.reconcile_every`):
//! - a start whose instance died (a crash mid-start) is settled: the desktop or job it made
//!   is found by the session's marker and adopted (`running`, or `pending` for a job), or
//!   stopped and the session ended (`sessions::recover_start`);
//! - the launcher says which desktops are really alive: a running session whose VNC server
//!   is gone becomes `failed`, one whose job ended `stopped`, through `sessions::end`;
//! - a desktop or job no running session owns: if it carries the marker of a session of
//!   this store, it is hpcdesk's own and is stopped once that session has ended (a job
//!   after `launcher.slurm.orphan_grace`), whatever `lifecycle.kill_orphans` says; any other
//!   Xvnc in hpcdesk's desktop directories is reported, and stopped with `kill_orphans`.
//!
//! Reconcile never holds up the API: it runs in its own task and a slow launcher only
//! delays the next round. Each round also saves the gateway's last-input times to the store,
//! so idleness survives a restart.
//!
//! **Idle sweep** (daily at `lifecycle.idle_sweep_at`, server local time, and on demand):
//! deletes sessions with no open viewer whose last activity — creation, last client input,
//! last viewer disconnect — is older than `lifecycle.idle_after`. A session with an open
//! viewer is never swept. Failed sessions that old are cleared too.
//!
//! **Time limits** (every second): a `local` or `ssh` desktop past its `endTime` is stopped
//! and its session ended (`Ending::TimeLimit`); desktops near their end get a notification
//! inside at `lifecycle.warn_before` and at 5 minutes. Slurm ends its jobs itself.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveTime, TimeZone, Utc};
use hpcdesk_core::SessionState;
use hpcdesk_launcher::Liveness;

use crate::config::TimeOfDay;
use crate::error::TaskError;
use crate::sessions;
use crate::state::{AppState, span};

/// What one reconcile round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub checked: usize,
    /// Sessions that ended (their desktop died, their job ended, their start was lost).
    pub failed: usize,
    /// Interrupted starts whose desktop was adopted.
    pub adopted: usize,
    pub orphans: usize,
    pub orphans_stopped: usize,
}

/// One reconcile round.
pub async fn reconcile(app: &AppState) -> Result<ReconcileReport, TaskError> {
    let mut report = ReconcileReport::default();
    let now = app.clock.now();

    // Starts whose instance died: adopt what they made, or stop it.
    for rec in app.store.sessions_in(&[SessionState::Starting]).await? {
        if rec.launcher != app.launcher.kind()
            || !app.launcher.watches(&sessions::target(&rec))
            || !sessions::interrupted(app, &rec).await?
        {
            continue;
        }
        match sessions::recover_start(app, &rec).await? {
            sessions::Recovered::Adopted(_) => report.adopted += 1,
            sessions::Recovered::Ended => report.failed += 1,
            sessions::Recovered::NotYet => {}
        }
    }

    let running = app.store.sessions_in(&[SessionState::Running]).await?;
    let (recs, mut targets): (Vec<_>, Vec<_>) = running
        .iter()
        .filter(|r| r.launcher == app.launcher.kind())
        .map(|r| (r, sessions::target(r)))
        .filter(|(_, t)| app.launcher.watches(t))
        .unzip();
    report.checked = targets.len();
    // Sessions that ended lately are looked for too (a launcher that lists per account only
    // sees their desktops so): a start cut short may still bring up its desktop after the
    // session ended, and that desktop must go. They own nothing (no display, no job), so
    // whatever of theirs is found is reported as an orphan with their marker; their
    // liveness is not asked.
    let late = span(app.config.launcher.start_timeout.0 + Duration::from_secs(120));
    targets.extend(
        app.store
            .sessions_ended_since(now - late)
            .await?
            .iter()
            .filter(|r| r.launcher == app.launcher.kind())
            .map(|r| hpcdesk_launcher::Target {
                display: None,
                handle: String::new(),
                ..sessions::target(r)
            })
            .filter(|t| app.launcher.watches(t)),
    );

    let survey = app.launcher.survey(&targets).await?;
    for (rec, liveness) in recs.iter().zip(&survey.targets) {
        let (how, reason) = match liveness {
            Liveness::Alive => continue,
            Liveness::Unknown(why) => {
                tracing::warn!(key = %rec.key, "cannot check desktop: {why}");
                continue;
            }
            Liveness::Ended(reason) => (sessions::Ending::EndedOutside, reason),
            Liveness::TimeLimit(reason) => (sessions::Ending::TimeLimit, reason),
            Liveness::Gone(reason) => (sessions::Ending::Died, reason),
        };
        if sessions::end(app, rec, how, reason).await? {
            report.failed += 1;
        }
    }

    // Desktops (and jobs) no running session owns. One that carries the marker of a session
    // of this store, run by that session's account, is hpcdesk's: unless its session is
    // still live (being started, queued), it is stopped whatever `kill_orphans` says. Any
    // other is reported, and stopped only with `kill_orphans` (never a job).
    let grace = span(app.config.launcher.slurm.orphan_grace.0);
    for orphan in &survey.orphans {
        let owner = match &orphan.marker {
            Some(m) => app
                .store
                .session_by_marker(m)
                .await?
                .filter(|r| r.compute_user == orphan.user),
            None => None,
        };
        let ours = match &owner {
            Some(r) if r.state.is_live() => continue,
            Some(_) => true,
            None => false,
        };
        if let Some((_, age)) = orphan.job {
            let young = span(age) < grace;
            if !ours || young {
                continue;
            }
        }
        report.orphans += 1;
        if !ours && !app.config.lifecycle.kill_orphans {
            tracing::warn!(node = %orphan.node, user = %orphan.user, display = orphan.display, pid = orphan.pid, "a desktop no session owns is running (lifecycle.kill_orphans is off)");
            continue;
        }
        match app.launcher.stop_orphan(orphan).await {
            Ok(()) => {
                report.orphans_stopped += 1;
                tracing::warn!(node = %orphan.node, user = %orphan.user, display = orphan.display, pid = orphan.pid, job = ?orphan.job.map(|j| j.0), session = ?owner.as_ref().map(|r| r.key.clone()), "stopped a desktop whose session has ended");
            }
            Err(e) => {
                tracing::error!(node = %orphan.node, user = %orphan.user, display = orphan.display, error = %e, "could not stop an orphaned desktop");
            }
        }
    }
    for (key, act) in app.gateway.registry.all() {
        if let Some(t) = act.last_input {
            app.store.record_activity(&key, t).await?;
        }
    }
    app.limits.forget_old();
    Ok(report)
}

/// Follows queued desktops (Slurm jobs) until they run, fail or end.
pub async fn follow_queued(app: &AppState) -> Result<usize, TaskError> {
    let recs = app
        .store
        .sessions_in(&[SessionState::Pending, SessionState::Starting])
        .await?;
    let mut n = 0;
    // A queued desktop whose create is still waiting here is followed by that create (which
    // a job's "ready" call wakes too): asking Slurm twice for it would be work done twice.
    for rec in recs.iter().filter(|r| {
        r.queued && r.launcher == app.launcher.kind() && !app.in_flight.contains(&r.marker)
    }) {
        sessions::advance(app, rec).await?;
        n += 1;
    }
    Ok(n)
}

/// Runs [`follow_queued`] every two seconds (or every reconcile interval, if shorter), and
/// at once when a job says its desktop is ready (`crate::jobs`).
pub async fn queued_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = app
        .config
        .lifecycle
        .reconcile_every
        .0
        .clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut woken = app.job_wakes.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = woken.changed() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = follow_queued(&app).await {
            tracing::error!(source = %e.origin(), error = %e, "following queued desktops failed");
        }
    }
}

/// Time limits, once: a running desktop of this instance's launcher whose end has passed is
/// stopped and its session ended ([`sessions::Ending::TimeLimit`], viewers closed 4001);
/// one within `lifecycle.warn_before`, or 5 minutes, of its end gets a notification inside
/// the desktop, once each (`warned` remembers which were sent). A Slurm job is ended by
/// Slurm itself; reconcile then records it. Returns how many sessions ended.
pub async fn enforce_time_limits(
    app: &AppState,
    warned: &mut std::collections::HashSet<(String, u64)>,
) -> Result<usize, TaskError> {
    // Only Slurm jobs and a configured lifetime give desktops an end: otherwise no query.
    if app.launcher.kind() != "slurm" && app.config.lifecycle.max_lifetime.is_none() {
        return Ok(0);
    }
    let now = app.clock.now();
    let recs = app.store.sessions_in(&[SessionState::Running]).await?;
    let mut ended = 0;
    warned.retain(|(key, _)| recs.iter().any(|r| &r.key == key));
    for rec in &recs {
        let Some(end) = rec.ends_at else { continue };
        if rec.launcher != app.launcher.kind() || !app.launcher.watches(&sessions::target(rec)) {
            continue;
        }
        let left = (end - now).to_std().unwrap_or_default();
        if end <= now {
            if rec.launcher == "slurm" {
                continue;
            }
            // The session ends first, then its desktop stops: so reconcile, seeing the desktop
            // go, cannot take it for one that died. A desktop that fails to stop carries the
            // marker of an ended session, which reconcile always stops.
            let reason = sessions::TIME_LIMIT_REACHED;
            if sessions::end(app, rec, sessions::Ending::TimeLimit, reason).await? {
                ended += 1;
                if let Err(e) = app.launcher.stop(&sessions::target(rec)).await {
                    tracing::warn!(key = %rec.key, error = %e, "a desktop past its time limit did not stop; reconcile will");
                }
            }
            continue;
        }
        // One notification per threshold crossed; a desktop that starts inside both gets one.
        let due: Vec<(String, u64)> =
            [app.config.lifecycle.warn_before.0, Duration::from_secs(300)]
                .into_iter()
                .filter(|w| left <= *w)
                .map(|w| (rec.key.clone(), w.as_secs()))
                .collect();
        if due.iter().any(|m| !warned.contains(m)) {
            warned.extend(due);
            let minutes = left.as_secs().div_ceil(60);
            let message = format!(
                "This desktop ends in {minutes} min (its time limit). Save your work, or \
                 extend it from the viewer or the portal."
            );
            let (app, target) = (app.clone(), sessions::target(rec));
            // Best effort and never in the way of the next round.
            tokio::spawn(async move { app.launcher.notify(&target, &message).await });
        }
    }
    Ok(ended)
}

/// Runs [`enforce_time_limits`] every second until `shutdown` fires.
pub async fn time_limit_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = enforce_time_limits(&app, &mut warned).await {
                    tracing::error!(source = %e.origin(), error = %e, "enforcing time limits failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the launcher's background upkeep ([`hpcdesk_launcher::Launcher::maintain`], e.g.
/// the ssh launcher's node probes) every second until `shutdown` fires.
pub async fn maintain_loop(app: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // start-up already did one round
    loop {
        tokio::select! {
            _ = tick.tick() => app.launcher.maintain().await,
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
                    tracing::error!(source = %e.origin(), error = %e, cause = ?std::error::Error::source(&e), "reconcile failed");
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
pub async fn sweep(app: &AppState) -> Result<SweepReport, TaskError> {
    let now = app.clock.now();
    let idle_after = span(app.config.lifecycle.idle_after.0);
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
        let reason = format!("swept: idle since {}", hpcdesk_core::wire::local_time(last));
        match sessions::stop_and_end(app, &rec, sessions::Ending::Swept, &reason).await {
            Ok(_) => {
                let id = rec
                    .session_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| rec.key.clone());
                tracing::info!(session = %id, owner = %rec.owner, %reason, "idle session swept");
                report.swept.push(id);
            }
            Err(e) => {
                tracing::error!(key = %rec.key, source = %e.origin(), error = %e, "could not sweep an idle session")
            }
        }
    }
    Ok(report)
}

/// The next time (after `now`) the local clock shows `at`.
pub fn next_sweep(now: DateTime<Utc>, at: TimeOfDay) -> DateTime<Utc> {
    let local = now.with_timezone(&Local);
    let at = NaiveTime::from_hms_opt(at.hour, at.minute, 0).unwrap_or(NaiveTime::MIN);
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
    let at = app.config.idle_sweep_at;
    loop {
        let now = app.clock.now();
        let wait = (next_sweep(now, at) - now)
            .to_std()
            .unwrap_or(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                match sweep(&app).await {
                    Ok(r) => tracing::info!(checked = r.checked, swept = r.swept.len(), in_use = r.in_use, "daily idle sweep done"),
                    Err(e) => tracing::error!(source = %e.origin(), error = %e, "daily idle sweep failed"),
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
        let at = |t: chrono::DateTime<Local>| TimeOfDay {
            hour: t.hour(),
            minute: t.minute(),
        };
        let next = next_sweep(now, at(soon));
        assert!(
            next > now && next - now <= chrono::Duration::minutes(2),
            "{next} vs {now}"
        );
        let past = local - chrono::Duration::minutes(2);
        let next = next_sweep(now, at(past));
        assert!(next - now > chrono::Duration::hours(23), "{next} vs {now}");
        assert!(next - now <= chrono::Duration::hours(25));
    }
}
