//! Orchestration of desktop sessions: store → launcher → store. No HTTP types here; the
//! handlers in `routes` translate requests into these calls and their results into envelopes.
//!
//! Rules owned here:
//! - one live session per user: a create while one exists returns it unchanged; a create
//!   while another request is still starting it waits for that start to finish;
//! - **nothing is launched that the store has not recorded**: the session row, with the
//!   marker its desktop will carry, the instance starting it and its sealed VNC password, is
//!   written first. After a crash at any moment the desktop is found by that marker and
//!   adopted, or stopped ([`recover_start`]); a create never answers with an interrupted
//!   start, and never leaves one user two desktops;
//! - a start runs in its own task, so a client that hangs up cannot leave a half-started
//!   desktop behind (the start finishes and is recorded either way);
//! - a failed start is recorded as `failed` with the reason, under its id when a display was
//!   already picked, and reported as 815008 (or 815201 when no node had room);
//! - delete stops the desktop first and only then ends the session, so a failed stop loses
//!   nothing;
//! - **one place ends a session**, [`end`]: whatever the cause (delete, sweep, a dead VNC
//!   server, an ended job, a failed or interrupted start) it changes the state (which voids
//!   the grants: they resolve only while their session runs), closes the viewers (4001),
//!   writes the audit line and counts it.

use std::sync::Arc;
use std::time::Duration;

use hpcdesk_core::claims::Action;
use hpcdesk_core::wire::{LaunchUrl, SessionItem, local_time};
use hpcdesk_core::{SessionId, SessionState};
use hpcdesk_launcher::desktops::Geometry;
use hpcdesk_launcher::{
    Launch, LaunchError, Launched, Progress, Queued, Recovery, StartRequest, Target,
};
use hpcdesk_store::{Claim, NewSession, SessionRecord, Started};

use crate::audit::{self, Kind};
use crate::auth::AuthUser;
use crate::error::{ApiError, TaskError};
use crate::grants;
use crate::state::{AppState, span};

/// VNC passwords are drawn from this alphabet (8 characters: the RFB limit).
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn new_vnc_password() -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let limit = 256 - 256 % PASSWORD_ALPHABET.len();
    while out.len() < 8 {
        let mut b = [0u8; 16];
        rand::fill(&mut b);
        for x in b {
            // Rejection sampling keeps every character equally likely.
            if usize::from(x) < limit && out.len() < 8 {
                out.push(PASSWORD_ALPHABET[usize::from(x) % PASSWORD_ALPHABET.len()]);
            }
        }
    }
    out
}

/// The API view of a stored session, with the gateway's live view of its viewers.
pub fn view(app: &AppState, rec: &SessionRecord) -> SessionItem {
    let act = app.gateway.registry.activity(&rec.key);
    let mut it = item(rec, act.connections + app.presence.elsewhere(&rec.key));
    let last_input = [rec.last_input_at, act.last_input]
        .into_iter()
        .flatten()
        .max();
    if let Some(t) = last_input {
        it.last_active_time = local_time(t.max(rec.created_at));
    }
    it
}

/// The API view of a stored session.
pub fn item(rec: &SessionRecord, connections: u32) -> SessionItem {
    SessionItem {
        session_id: rec
            .session_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        host_name: rec
            .node
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        user_name: rec.compute_user.to_string(),
        display_number: rec.display.map(|d| d.get()).unwrap_or(0),
        status: rec.state.as_str().to_owned(),
        status_reason: rec.status_reason.clone(),
        create_time: local_time(rec.created_at),
        last_active_time: local_time(rec.last_input_at.unwrap_or(rec.created_at)),
        connections,
        geometry: rec.geometry.clone(),
        desktop: rec.desktop.clone(),
        end_time: rec.ends_at.map(local_time).unwrap_or_default(),
    }
}

pub fn target(rec: &SessionRecord) -> Target {
    Target {
        key: rec.key.clone(),
        compute_user: rec.compute_user.clone(),
        node: rec.node.clone(),
        display: rec.display,
        host: rec.host.clone(),
        port: rec.port,
        handle: rec.handle.clone(),
        marker: rec.marker.clone(),
    }
}

/// A session's marker: 128 random bits as hex (see `SessionRecord::marker`).
fn new_marker() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The starts this instance is carrying out right now, by session marker. A session
/// `starting` under this instance's name whose marker is not in here was left by a start
/// that went wrong. A start is entered before its session is claimed, so no reconcile
/// round can take it for an interrupted one in between. A plain mutex: held for an
/// insert, a remove or a lookup, never across an await.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, marker: &str) -> bool {
        self.lock().contains(marker)
    }

    /// Marks the start of `marker` as in progress until the guard is dropped.
    fn enter(&self, marker: &str) -> InFlightGuard {
        self.lock().insert(marker.to_owned());
        InFlightGuard(InFlight(self.0.clone()), marker.to_owned())
    }
}

/// Takes a start out of [`InFlight`] when it ends, whichever way: a start that returns an
/// error, panics or is cancelled with its request must not stay "in flight" forever, or
/// reconcile would never settle its session.
struct InFlightGuard(InFlight, String);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

// ---------------------------------------------------------------------------------------
// Ending sessions: the one place.

/// How a session ends. Each way decides what the session becomes, whether it stays listed,
/// and what the audit log says.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Deleted through the API (by its owner or an admin, from `peer`): stopped, not listed.
    Deleted { by: String, peer: String },
    /// Removed by the idle sweep: stopped, not listed.
    Swept,
    /// Its desktop died or its job failed: failed, listed with the reason.
    Died,
    /// It ended outside hpcdesk in an orderly way (its Slurm job completed or was
    /// cancelled): stopped, listed with the reason until deleted or replaced.
    EndedOutside,
    /// Its start failed (at this place, when one was picked): failed, listed.
    StartFailed {
        at: Option<SessionId>,
        by: String,
        peer: String,
    },
    /// Its start was interrupted by a crash and nothing of it could be adopted: stopped, not
    /// listed (no create ever answered with it).
    Interrupted,
    /// It reached its time limit (`lifecycle.max_lifetime`, or its Slurm job's): stopped,
    /// listed with the reason ([`TIME_LIMIT_REACHED`]) until deleted or replaced.
    TimeLimit,
}

/// The reason of a session that ended by its time limit (its `statusReason` starts with it).
pub const TIME_LIMIT_REACHED: &str = "time limit reached";

impl Ending {
    fn label(&self) -> &'static str {
        match self {
            Ending::Deleted { .. } => "deleted",
            Ending::Swept => "swept",
            Ending::Died => "died",
            Ending::EndedOutside => "ended_outside",
            Ending::StartFailed { .. } => "start_failed",
            Ending::Interrupted => "interrupted",
            Ending::TimeLimit => "time_limit",
        }
    }

    /// What its viewers are told as they are closed.
    fn close_reason(&self) -> hpcdesk_gateway::CloseReason {
        match self {
            Ending::TimeLimit => hpcdesk_gateway::CloseReason::TimeLimit,
            _ => hpcdesk_gateway::CloseReason::SessionDeleted,
        }
    }
}

/// When a desktop created at `now` ends by `lifecycle.max_lifetime` (`None`: no limit, or a
/// launcher with a limit of its own, like Slurm's).
fn lifetime_end(
    app: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if app.launcher.kind() == "slurm" {
        return None;
    }
    let l = app.config.lifecycle.max_lifetime?;
    Some(now + chrono::Duration::from_std(l.0).ok()?)
}

/// Ends a session: its state (from whatever live or failed state it is in, which voids its
/// grants), its viewers (closed with 4001), the audit line and the metrics. The desktop
/// itself must be gone or stopped already (see [`stop_and_end`]). Returns whether this call
/// ended it (`false`: it had ended already, e.g. through another instance).
pub async fn end(
    app: &AppState,
    rec: &SessionRecord,
    how: Ending,
    reason: &str,
) -> Result<bool, TaskError> {
    use SessionState::{Failed, Pending, Running, Starting, Stopped};
    let now = app.clock.now();
    let live = [Pending, Starting, Running];
    let moved = match &how {
        Ending::StartFailed { at, .. } => {
            app.store
                .start_failed(&rec.key, at.clone(), reason, now)
                .await?
        }
        Ending::Died => {
            app.store
                .transition(&rec.key, &live, Failed, reason, now)
                .await?
        }
        Ending::EndedOutside | Ending::Interrupted => {
            app.store
                .transition(&rec.key, &live, Stopped, reason, now)
                .await?
        }
        // Like a delete, from `failed` too: reconcile may have seen the desktop gone between
        // its stop and this.
        Ending::Deleted { .. } | Ending::Swept | Ending::TimeLimit => {
            app.store
                .transition(
                    &rec.key,
                    &[Pending, Starting, Running, Failed],
                    Stopped,
                    reason,
                    now,
                )
                .await?
        }
    };
    let dismissed = matches!(
        how,
        Ending::Deleted { .. } | Ending::Swept | Ending::Interrupted
    );
    if dismissed {
        app.store.dismiss(&rec.key, now).await?;
    }
    // A delete of a session that had ended already still happened, as far as its caller and
    // the audit log are concerned.
    let happened = moved || matches!(how, Ending::Deleted { .. });
    if !happened {
        return Ok(false);
    }
    app.gateway
        .registry
        .close_session(&rec.key, how.close_reason());
    app.metrics.session_ended(how.label());
    let id = rec
        .session_id
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| match &how {
            Ending::StartFailed { at, .. } => at.as_ref().map(ToString::to_string),
            _ => None,
        })
        .unwrap_or_default();
    let (kind, user, peer, detail) = match &how {
        Ending::Deleted { by, peer } => {
            let detail = if *by == rec.owner {
                String::new()
            } else {
                format!("owner {}", rec.owner)
            };
            (Kind::SessionDeleted, by.clone(), peer.clone(), detail)
        }
        Ending::Swept => (
            Kind::SessionSwept,
            rec.owner.clone(),
            String::new(),
            reason.to_owned(),
        ),
        Ending::EndedOutside | Ending::TimeLimit => (
            Kind::SessionEnded,
            rec.owner.clone(),
            String::new(),
            reason.to_owned(),
        ),
        Ending::StartFailed { by, peer, .. } => (
            Kind::SessionFailed,
            by.clone(),
            peer.clone(),
            reason.to_owned(),
        ),
        Ending::Died | Ending::Interrupted => (
            Kind::SessionFailed,
            rec.owner.clone(),
            String::new(),
            reason.to_owned(),
        ),
    };
    audit::record(app, kind, &user, &id, &peer, detail).await;
    tracing::info!(key = %rec.key, session = %id, how = how.label(), reason, "session ended");
    Ok(true)
}

/// Stops a session's desktop, then ends the session. A desktop that cannot be stopped leaves
/// the session as it is (815008): nothing is lost.
pub async fn stop_and_end(
    app: &AppState,
    rec: &SessionRecord,
    how: Ending,
    reason: &str,
) -> Result<bool, TaskError> {
    // Viewers learn first that the session is going (close code 4001: do not reconnect),
    // before its desktop disappears under them.
    app.gateway
        .registry
        .close_session(&rec.key, how.close_reason());
    let has_desktop = rec.node.is_some() && rec.display.is_some() || !rec.handle.is_empty();
    if has_desktop {
        match app.launcher.stop(&target(rec)).await {
            Ok(()) => {}
            // A failed or ended session's desktop is already gone; leftovers are best effort.
            Err(e) if matches!(rec.state, SessionState::Failed | SessionState::Stopped) => {
                tracing::warn!(key = %rec.key, error = %e, "cleanup of an ended desktop failed");
            }
            Err(e) => return Err(e.into()),
        }
    }
    end(app, rec, how, reason).await
}

// ---------------------------------------------------------------------------------------
// Creating sessions.

/// The account policy (`hpcdesk_launcher::policy`), before anything is written or run:
/// 10008 for an account it refuses (audited), 815008 for one this host does not know.
async fn account_allowed(app: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    let launcher = app.launcher.clone();
    let account = user.compute_user.clone();
    let admitted = tokio::task::spawn_blocking(move || launcher.admit(&account)).await?;
    if let Err(LaunchError::Refused(why)) = &admitted {
        audit::record(
            app,
            Kind::AccountRefused,
            user.name(),
            "",
            &user.peer,
            why.clone(),
        )
        .await;
        tracing::warn!(user = user.name(), account = %user.compute_user, "{why}");
    }
    Ok(admitted?)
}

/// How many times a create claims again after finding an interrupted start in its way.
const CLAIM_ROUNDS: usize = 3;

/// What a create may ask for beyond the SCNet API; a portal that sends nothing (as SCNet
/// portals do) gets the defaults. Checked before anything is written or started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// A name of `launcher.desktops`.
    pub desktop: Option<String>,
    /// `WIDTHxHEIGHT`.
    pub geometry: Option<String>,
}

/// `PUT …/desktop/vnc`: the caller's session, started if they have none. A caller who has
/// one gets it unchanged, whatever `opts` asks.
pub async fn create(
    app: &AppState,
    user: &AuthUser,
    opts: &CreateOptions,
) -> Result<SessionItem, ApiError> {
    user.require(Action::CreateDesktop)?;
    let choice = app
        .config
        .desktops
        .choose(opts.desktop.as_deref())
        .map_err(ApiError::InvalidParameter)?;
    let geometry = match &opts.geometry {
        Some(g) => g.parse::<Geometry>().map_err(ApiError::InvalidParameter)?,
        None => app.config.launcher.geometry,
    };
    let desktop = choice.map(|c| c.name.to_string()).unwrap_or_default();
    account_allowed(app, user).await?;
    for _ in 0..CLAIM_ROUNDS {
        // The full-access password, then the view-only one (view-only launch URLs carry it,
        // and Xvnc itself then refuses that viewer input and the clipboard).
        let mut password = new_vnc_password();
        password.extend(new_vnc_password());
        let marker = new_marker();
        let in_flight = app.in_flight.enter(&marker);
        let claim = app
            .store
            .claim_session(NewSession {
                owner: user.name().to_owned(),
                user_id: user.claims.user_id.clone(),
                invoker: user.claims.invoker.clone(),
                compute_user: user.compute_user.clone(),
                geometry: geometry.to_string(),
                desktop: desktop.clone(),
                launcher: app.launcher.kind().to_owned(),
                state: SessionState::Starting,
                node: app.launcher.home_node(),
                marker,
                starter: app.presence.instance().to_owned(),
                vnc_password_sealed: app.server_key.seal_at_rest(&password),
                ends_at: lifetime_end(app, app.clock.now()),
                now: app.clock.now(),
            })
            .await?;
        let rec = match claim {
            Claim::Existing(rec) => match existing(app, rec).await? {
                Some(item) => return Ok(item),
                // It was an interrupted start, now ended: claim again.
                None => continue,
            },
            Claim::Claimed(rec) => rec,
        };
        // Detached from the request: finishing the start and recording its outcome must not
        // depend on the client staying connected.
        let task_app = app.clone();
        let caller = user.clone();
        return tokio::spawn(async move {
            let result = start(&task_app, rec, password, &caller).await;
            drop(in_flight);
            let counter = match &result {
                Ok(_) => &task_app.metrics.desktops_started,
                Err(_) => &task_app.metrics.desktop_start_failures,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Ok(item) = &result {
                audit::record(
                    &task_app,
                    Kind::SessionCreated,
                    caller.name(),
                    &item.session_id,
                    &caller.peer,
                    "",
                )
                .await;
            }
            result
        })
        .await?;
    }
    Err(ApiError::Desktop(
        "your desktop is being recovered after a restart of the desktop service; try again \
         shortly"
            .into(),
    ))
}

async fn start(
    app: &AppState,
    rec: SessionRecord,
    password: Vec<u8>,
    caller: &AuthUser,
) -> Result<SessionItem, ApiError> {
    let compute_user = rec.compute_user.clone();
    let (full, view) = password.split_at(8.min(password.len()));
    let launched = app
        .launcher
        .start(StartRequest {
            compute_user: compute_user.clone(),
            password: full.to_vec(),
            view_password: (!view.is_empty()).then(|| view.to_vec()),
            geometry: rec.geometry.clone(),
            desktop: app
                .config
                .desktops
                .find(&rec.desktop)
                .map(|d| d.command.clone())
                .unwrap_or_default(),
            marker: rec.marker.clone(),
            ready: crate::jobs::ready_call(
                app.config.job_ready_url.as_ref(),
                &app.server_key,
                &rec.marker,
            ),
        })
        .await;
    let launched = match launched {
        Ok(Launch::Ready(l)) => l,
        Ok(Launch::Queued(q)) => return queued(app, rec, q).await,
        Err(e) => {
            let at = match &e {
                LaunchError::FailedAt { node, display, .. } => {
                    Some(SessionId::new(node.clone(), compute_user.clone(), *display))
                }
                _ => None,
            };
            tracing::warn!(user = %compute_user, error = %e, "desktop start failed");
            let how = Ending::StartFailed {
                at,
                by: caller.name().to_owned(),
                peer: caller.peer.clone(),
            };
            end(app, &rec, how, &e.to_string()).await?;
            return Err(e.into());
        }
    };
    for w in &launched.warnings {
        tracing::warn!(user = %compute_user, "desktop started with a warning: {w}");
    }
    let id = SessionId::new(launched.node.clone(), compute_user, launched.display);
    let rec = ready(app, &rec, id, launched).await?;
    Ok(item(&rec, 0))
}

/// Records a desktop that is ready (under the password stored when its session was
/// claimed). If its row was ended meanwhile (or the store fails), the desktop is stopped: it
/// must not outlive the record that lets anyone find it.
async fn ready(
    app: &AppState,
    rec: &SessionRecord,
    id: SessionId,
    launched: Launched,
) -> Result<SessionRecord, TaskError> {
    let sealed = rec
        .vnc_password_sealed
        .clone()
        .ok_or_else(|| TaskError::invariant("a session without its VNC password"))?;
    let stored = app
        .store
        .session_started(
            &rec.key,
            Started {
                session_id: id.clone(),
                node: launched.node.clone(),
                display: launched.display,
                host: launched.host.clone(),
                port: launched.port,
                vnc_password_sealed: sealed,
                handle: launched.handle.clone(),
                state: SessionState::Running,
                tls_pin: launched.tls_pin.clone(),
                ends_at: launched.ends_at,
                now: app.clock.now(),
            },
        )
        .await;
    match stored {
        Ok(Some(rec)) => {
            tracing::info!(session = %id, host = %launched.host, port = launched.port, "desktop running");
            Ok(rec)
        }
        // A queued desktop is followed by both its create and the watcher: whichever came
        // second finds it already recorded, and that is not a failure.
        Ok(None)
            if app.store.session_by_key(&rec.key).await?.is_some_and(|r| {
                r.state == SessionState::Running
                    && r.node.as_ref() == Some(&launched.node)
                    && r.display == Some(launched.display)
            }) =>
        {
            app.store
                .session_by_key(&rec.key)
                .await?
                .map(Arc::unwrap_or_clone)
                .ok_or_else(|| TaskError::invariant("a session vanished as it started"))
        }
        other => {
            let mut t = target(rec);
            t.node = Some(launched.node);
            t.display = Some(launched.display);
            t.host = Some(launched.host);
            t.port = Some(launched.port);
            t.handle = launched.handle;
            if let Err(e) = app.launcher.stop(&t).await {
                // Its marker is stored: reconcile stops it once the store answers again.
                tracing::error!(session = %id, error = %e, "could not stop an unrecorded desktop");
            }
            match other {
                Err(e) => Err(e.into()),
                _ => Err(TaskError::Superseded(
                    "the session was stopped while its desktop was starting".into(),
                )),
            }
        }
    }
}

/// A queued desktop (Slurm): recorded `pending` under its id, then followed for up to
/// `launcher.start_timeout`; if it is not ready by then the create answers `pending` and the
/// background watcher carries on.
async fn queued(app: &AppState, rec: SessionRecord, q: Queued) -> Result<SessionItem, ApiError> {
    let Some(mut rec) = record_queued(app, &rec, &q).await? else {
        return Err(ApiError::Desktop(
            "the session was stopped while its desktop was being queued".into(),
        ));
    };
    let deadline = tokio::time::Instant::now() + app.config.launcher.start_timeout.0;
    // A job that says it is ready (crate::jobs) wakes this at once; the timer is for jobs
    // that cannot reach hpcdesk.
    let mut woken = app.job_wakes.subscribe();
    loop {
        match rec.state {
            SessionState::Running => return Ok(view(app, &rec)),
            SessionState::Failed | SessionState::Stopped => {
                return Err(ApiError::Desktop(rec.status_reason));
            }
            _ if tokio::time::Instant::now() >= deadline => return Ok(view(app, &rec)),
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = woken.changed() => {}
        }
        rec = advance(app, &rec).await?;
    }
}

/// Records that `rec`'s desktop was queued; if the row was ended meanwhile, the job is
/// stopped and `None` returned.
async fn record_queued(
    app: &AppState,
    rec: &SessionRecord,
    q: &Queued,
) -> Result<Option<SessionRecord>, TaskError> {
    let sealed = rec.vnc_password_sealed.clone().unwrap_or_default();
    let stored = app
        .store
        .session_queued(
            &rec.key,
            &q.session_id,
            &q.handle,
            &sealed,
            &q.reason,
            app.clock.now(),
        )
        .await?;
    if stored.is_none() {
        let mut t = target(rec);
        t.handle = q.handle.clone();
        let _ = app.launcher.stop(&t).await;
    } else {
        tracing::info!(session = %q.session_id, reason = %q.reason, "desktop queued");
    }
    Ok(stored)
}

/// One step of a queued desktop: asks the launcher where it is and records the answer.
/// Returns the session as it is now.
pub async fn advance(app: &AppState, rec: &SessionRecord) -> Result<SessionRecord, TaskError> {
    let t = target(rec);
    let now = app.clock.now();
    match app.launcher.progress(&t).await {
        Ok(Progress::Pending(reason)) => {
            app.store
                .session_progress(&rec.key, SessionState::Pending, &reason, now)
                .await?;
        }
        Ok(Progress::Starting(reason)) => {
            app.store
                .session_progress(&rec.key, SessionState::Starting, &reason, now)
                .await?;
        }
        Ok(Progress::Ready(launched)) => {
            let Some(id) = rec.session_id.clone() else {
                return Err(TaskError::invariant("a queued session without id"));
            };
            ready(app, rec, id, launched).await?;
        }
        Ok(Progress::Failed(reason)) => {
            if end(app, rec, Ending::Died, &reason).await? {
                tracing::warn!(key = %rec.key, %reason, "queued desktop failed");
                let _ = app.launcher.stop(&t).await;
            }
        }
        Ok(Progress::Ended(reason)) => {
            end(app, rec, Ending::EndedOutside, &reason).await?;
        }
        Err(e) => tracing::warn!(key = %rec.key, error = %e, "cannot follow a queued desktop"),
    }
    app.store
        .session_by_key(&rec.key)
        .await?
        .map(Arc::unwrap_or_clone)
        .ok_or_else(|| TaskError::invariant("a queued session vanished"))
}

/// The answer to a create when the user already has a live session: that session, once any
/// start of it in progress has finished (`None`: it was an interrupted start, which is now
/// over, and the caller claims again).
async fn existing(app: &AppState, mut rec: SessionRecord) -> Result<Option<SessionItem>, ApiError> {
    // Bounded by the start's own timeout, plus the time to find out about an interrupted one.
    let give_up = app.config.launcher.start_timeout.0 + Duration::from_secs(15);
    let deadline = tokio::time::Instant::now() + give_up;
    while rec.state == SessionState::Starting
        && !rec.queued
        && tokio::time::Instant::now() < deadline
    {
        if interrupted(app, &rec).await? {
            match recover_start(app, &rec).await? {
                Recovered::Adopted(r) => return Ok(Some(view(app, &r))),
                Recovered::Ended => return Ok(None),
                Recovered::NotYet => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rec = match app.store.session_by_key(&rec.key).await? {
            Some(r) => Arc::unwrap_or_clone(r),
            None => {
                return Err(ApiError::invariant("a claimed session vanished"));
            }
        };
    }
    match rec.state {
        SessionState::Running | SessionState::Pending => Ok(Some(view(app, &rec))),
        SessionState::Starting if rec.queued => Ok(Some(view(app, &rec))),
        SessionState::Starting => Err(ApiError::Desktop(
            "your desktop is still starting; try again shortly".into(),
        )),
        SessionState::Failed => Err(ApiError::Desktop(rec.status_reason)),
        SessionState::Stopped => Err(ApiError::Desktop(
            "your desktop was stopped while it was starting".into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Recovering starts interrupted by a crash.

/// A start older than this (since its last update) is over, whatever its instance says.
fn start_lifetime(app: &AppState) -> chrono::Duration {
    span(app.config.launcher.start_timeout.0 + Duration::from_secs(60))
}

/// Whether `rec` is a start that nobody is carrying out any more: it is `starting` (not a
/// queued job) and the instance that began it has died (or is this one in an earlier life).
/// On a store shared by several instances, another instance's start counts as interrupted
/// once its heartbeat is stale; on SQLite this instance is the only one.
pub async fn interrupted(app: &AppState, rec: &SessionRecord) -> Result<bool, TaskError> {
    if rec.state != SessionState::Starting || rec.queued {
        return Ok(false);
    }
    if rec.starter == app.presence.instance() {
        return Ok(!app.in_flight.contains(&rec.marker));
    }
    let now = app.clock.now();
    if now - rec.updated_at > start_lifetime(app) {
        return Ok(true);
    }
    if !app.config.store_url.is_shared() {
        return Ok(true);
    }
    // A live instance beats every ten seconds; give a young start the benefit of the doubt
    // until its instance has been silent for the presence window.
    let window = chrono::Duration::seconds(30);
    if now - rec.updated_at < window {
        return Ok(false);
    }
    let fresh = app.store.fresh_instances(now - window).await?;
    Ok(!fresh.contains(&rec.starter))
}

/// What [`recover_start`] did.
#[derive(Debug)]
pub enum Recovered {
    /// The session adopted the desktop (or job) the interrupted start had made.
    Adopted(Box<SessionRecord>),
    /// Nothing of the start was left running (or it was stopped): the session ended.
    Ended,
    /// Its agent is still at work, or the launcher could not look: try again later.
    NotYet,
}

/// Settles an interrupted start (see [`interrupted`]): adopts what it made, or stops it and
/// ends the session.
pub async fn recover_start(app: &AppState, rec: &SessionRecord) -> Result<Recovered, TaskError> {
    let t = target(rec);
    let found = match app.launcher.recover(&t).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(key = %rec.key, error = %e, "cannot look for an interrupted start yet");
            return Ok(Recovered::NotYet);
        }
    };
    let too_old = app.clock.now() - rec.updated_at > start_lifetime(app);
    match found {
        Recovery::Ready(launched) if rec.vnc_password_sealed.is_some() => {
            let id = SessionId::new(
                launched.node.clone(),
                rec.compute_user.clone(),
                launched.display,
            );
            let adopted = ready(app, rec, id.clone(), launched).await?;
            app.metrics
                .desktops_started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            audit::record(
                app,
                Kind::SessionAdopted,
                &rec.owner,
                id.as_str(),
                "",
                "its start was interrupted by a restart of hpcdesk",
            )
            .await;
            tracing::info!(session = %id, "adopted the desktop of an interrupted start");
            Ok(Recovered::Adopted(Box::new(adopted)))
        }
        Recovery::Ready(launched) => {
            // From before passwords were stored at creation: it cannot be reached. Stop it.
            let mut t = t;
            t.node = Some(launched.node);
            t.display = Some(launched.display);
            app.launcher.stop(&t).await?;
            end(
                app,
                rec,
                Ending::Interrupted,
                "the desktop start was interrupted",
            )
            .await?;
            Ok(Recovered::Ended)
        }
        Recovery::Queued(q) => match record_queued(app, rec, &q).await? {
            Some(adopted) => {
                audit::record(
                    app,
                    Kind::SessionAdopted,
                    &rec.owner,
                    q.session_id.as_str(),
                    "",
                    "its submission was interrupted by a restart of hpcdesk",
                )
                .await;
                Ok(Recovered::Adopted(Box::new(adopted)))
            }
            None => Ok(Recovered::Ended),
        },
        Recovery::InProgress if !too_old => Ok(Recovered::NotYet),
        Recovery::InProgress => {
            end(
                app,
                rec,
                Ending::Interrupted,
                "the desktop start was interrupted and did not finish in time",
            )
            .await?;
            Ok(Recovered::Ended)
        }
        Recovery::Gone(reason) => {
            end(app, rec, Ending::Interrupted, &reason).await?;
            Ok(Recovered::Ended)
        }
    }
}

/// `GET …/desktop/vnc`: the caller's sessions, or every session for an admin.
pub async fn list(app: &AppState, user: &AuthUser) -> Result<Vec<SessionItem>, ApiError> {
    user.require(Action::UseDesktop)?;
    let owner = (!user.is_admin()).then(|| user.name());
    let recs = app.store.list_sessions(owner).await?;
    Ok(recs.iter().map(|r| view(app, r)).collect())
}

/// Finds a visible session the caller may act on: unknown → 815010, another user's → 10008.
/// Refuses a session that is not running (815008, with its state and reason).
fn require_running(rec: &SessionRecord, id: &SessionId) -> Result<(), ApiError> {
    if rec.state == SessionState::Running {
        return Ok(());
    }
    let why = if rec.status_reason.is_empty() {
        String::new()
    } else {
        format!(": {}", rec.status_reason)
    };
    Err(ApiError::Desktop(format!(
        "desktop session {id} is {}{why}",
        rec.state
    )))
}

/// `GET /hpcdesk/v1/desktop/vnc/{id}/screenshot`: a PNG of the desktop, `width` pixels
/// wide, for its owner or an admin. hpcdesk takes it through its own VNC connection (no
/// viewer, so it is not activity); rate-limited per desktop.
pub async fn screenshot(
    app: &AppState,
    user: &AuthUser,
    id: &SessionId,
    width: u16,
) -> Result<Vec<u8>, ApiError> {
    user.require(Action::UseDesktop)?;
    let rec = owned_session(app, user, id).await?;
    require_running(&rec, id)?;
    app.limits.check_screenshot(&rec.key)?;
    let stored = rec
        .vnc_password_sealed
        .as_deref()
        .and_then(|s| app.server_key.open_at_rest(s).ok())
        .ok_or_else(|| ApiError::invariant("a running session whose password cannot be opened"))?;
    let (Some(host), Some(port)) = (rec.host.as_deref(), rec.port) else {
        return Err(ApiError::invariant("a running session without an address"));
    };
    let addr = hpcdesk_gateway::DesktopAddr {
        host,
        port,
        password: grants::password_for(&stored, false),
        tls_pin: rec.tls_pin.as_deref(),
    };
    let timeout = app.config.gateway.connect_timeout.0 + Duration::from_secs(5);
    hpcdesk_gateway::screenshot::png(addr, width, timeout)
        .await
        .map_err(|e| {
            tracing::warn!(session = %id, source = "node", error = %e, "screenshot failed");
            ApiError::Desktop(format!(
                "cannot take a screenshot of desktop session {id}: {e}"
            ))
        })
}

/// The session's id as text (empty before a display was picked).
fn id_text(rec: &SessionRecord) -> String {
    rec.session_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Longest extension asked for at once.
const MAX_EXTENSION: Duration = Duration::from_secs(7 * 24 * 3600);

/// An extension's `by` (`1h`, `30m`…), from a minute to a week.
pub fn parse_extension(by: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::InvalidParameter(format!(
            "by must be a duration from 1m to 7d, such as 30m or 1h, not {:?}",
            by.chars().take(40).collect::<String>()
        ))
    };
    let d = humantime::parse_duration(by.trim()).map_err(|_| bad())?;
    if d < Duration::from_secs(60) || d > MAX_EXTENSION {
        return Err(bad());
    }
    Ok(d)
}

/// `POST /hpcdesk/v1/desktop/vnc/{id}/extend`: moves the desktop's time limit by `by`, for
/// its owner or an admin, within the site's limits (10004 past them, with the most allowed).
pub async fn extend(
    app: &AppState,
    user: &AuthUser,
    id: &SessionId,
    by: Duration,
) -> Result<SessionItem, ApiError> {
    user.require(Action::UseDesktop)?;
    let rec = owned_session(app, user, id).await?;
    extend_session(app, &rec, by, user.name(), &user.peer).await
}

/// Extends `rec`'s time limit by `by` for `who` (from `peer`), counting and auditing the
/// outcome either way.
pub async fn extend_session(
    app: &AppState,
    rec: &SessionRecord,
    by: Duration,
    who: &str,
    peer: &str,
) -> Result<SessionItem, ApiError> {
    let id = id_text(rec);
    let result = extended(app, rec, by).await;
    let by_text = humantime::format_duration(by).to_string();
    match &result {
        Ok(r) => {
            app.metrics
                .extends_granted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let until = r.ends_at.map(local_time).unwrap_or_default();
            audit::record(
                app,
                Kind::SessionExtended,
                who,
                &id,
                peer,
                format!("by {by_text}, until {until}"),
            )
            .await;
            tracing::info!(session = %id, by = %by_text, %until, "desktop extended");
        }
        Err(e) => {
            app.metrics
                .extends_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            audit::record(
                app,
                Kind::ExtendRefused,
                who,
                &id,
                peer,
                format!("by {by_text}: {e}"),
            )
            .await;
        }
    }
    let rec = result?;
    Ok(item(
        &rec,
        app.gateway.registry.activity(&rec.key).connections,
    ))
}

async fn extended(
    app: &AppState,
    rec: &SessionRecord,
    by: Duration,
) -> Result<SessionRecord, ApiError> {
    let id = id_text(rec);
    if rec.state != SessionState::Running {
        return Err(ApiError::Desktop(format!(
            "desktop session {id} is {}; only a running desktop can be extended",
            rec.state
        )));
    }
    let end = match app.launcher.extend(&target(rec), by).await? {
        Some(end) => end,
        None => {
            let no_limit = || {
                ApiError::InvalidParameter(format!(
                    "desktop session {id} has no time limit, so there is nothing to extend"
                ))
            };
            let (Some(end), Some(life)) = (rec.ends_at, app.config.lifecycle.max_lifetime) else {
                return Err(no_limit());
            };
            let std = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            let extra = app.config.lifecycle.max_extend.0;
            let most = rec.created_at + std(life.0) + std(extra);
            let wanted = end + std(by);
            if wanted > most {
                let left = (most - end).to_std().unwrap_or_default();
                return Err(ApiError::InvalidParameter(format!(
                    "desktop session {id} may run until {} at most (lifecycle.max_lifetime {} \
                     plus lifecycle.max_extend {}); it can be extended by at most {}",
                    local_time(most),
                    humantime::format_duration(life.0),
                    humantime::format_duration(extra),
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                )));
            }
            wanted
        }
    };
    app.store
        .set_ends_at(&rec.key, Some(end), app.clock.now())
        .await?
        .ok_or_else(|| ApiError::Desktop(format!("desktop session {id} ended meanwhile")))
}

async fn owned_session(
    app: &AppState,
    user: &AuthUser,
    id: &SessionId,
) -> Result<Arc<SessionRecord>, ApiError> {
    let rec = app
        .store
        .visible_session(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("desktop session {id} does not exist")))?;
    if rec.owner != user.name() && !user.is_admin() {
        return Err(ApiError::Permission(format!(
            "desktop session {id} belongs to another user"
        )));
    }
    Ok(rec)
}

/// `DELETE …/desktop/vnc/{id}`: stops the desktop and ends the session.
pub async fn delete(app: &AppState, user: &AuthUser, id: &SessionId) -> Result<(), ApiError> {
    user.require(Action::UseDesktop)?;
    let rec = owned_session(app, user, id).await?;
    let task_app = app.clone();
    let caller = user.clone();
    // Detached, like a start: a client that hangs up does not leave it half done.
    tokio::spawn(async move {
        let how = Ending::Deleted {
            by: caller.name().to_owned(),
            peer: caller.peer.clone(),
        };
        let reason = format!("deleted by {}", caller.name());
        stop_and_end(&task_app, &rec, how, &reason)
            .await
            .map(|_| ())
    })
    .await?
    .map_err(ApiError::from)
}

/// `GET …/desktop/vnc/{id}/launchurl`: a fresh connection grant for the viewer. A
/// view-only grant (an hpcdesk extension, `?viewOnly=true`) lets its viewers watch only.
pub async fn launch_url(
    app: &AppState,
    user: &AuthUser,
    id: &SessionId,
    view_only: bool,
) -> Result<LaunchUrl, ApiError> {
    user.require(Action::UseDesktop)?;
    let rec = owned_session(app, user, id).await?;
    require_running(&rec, id)?;
    let url = grants::issue(app, &rec, view_only)?;
    // Who asked, not whose desktop it is: an admin's link to someone's desktop says so.
    let detail = match (view_only, rec.owner == user.name()) {
        (false, true) => String::new(),
        (true, true) => "view only".to_owned(),
        (false, false) => format!("owner {}", rec.owner),
        (true, false) => format!("view only; owner {}", rec.owner),
    };
    // The line is queued, not waited for: the answer waits for no commit (a crash in the
    // 20 ms the writer lingers for more lines, and its commit, can lose it; a shutdown writes
    // it; each use of the link is audited when the viewer connects).
    audit::record_soon(
        app,
        Kind::LaunchUrlIssued,
        user.name(),
        id.as_str(),
        &user.peer,
        detail,
    )
    .await;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_passwords_are_eight_alphanumerics_and_differ() {
        let a = new_vnc_password();
        let b = new_vnc_password();
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
