//! Orchestration of desktop sessions: store → launcher → store. No HTTP types here; the
//! handlers in `routes` translate requests into these calls and their results into envelopes.
//!
//! Rules owned here:
//! - one live session per user: a create while one exists returns it unchanged; a create
//!   while another request is still starting it waits for that start to finish;
//! - a start runs in its own task, so a client that hangs up cannot leave a half-started
//!   desktop behind (the start finishes and is recorded either way);
//! - a failed start is recorded as `failed` with the reason, under its id when a display was
//!   already picked, and reported as 815008 (or 815201 when no node had room);
//! - delete stops the desktop first and only then marks the session stopped and revokes its
//!   grants, so a failed stop loses nothing.

use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use hpcdesk_core::claims::Action;
use hpcdesk_core::wire::{LaunchUrl, SessionItem};
use hpcdesk_core::{SessionId, SessionState};
use hpcdesk_launcher::{Launch, LaunchError, Launched, Progress, Queued, StartRequest, Target};
use hpcdesk_store::{Claim, GrantRecord, NewSession, SessionRecord, Started};
use sha2::{Digest, Sha256};

use crate::audit::{self, Kind};
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

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

/// A new grant token: a version-7 UUID, whose first 48 bits are the time in milliseconds and
/// whose other 74 bits are random. Unguessable all the same (and useless without its `mm`),
/// while the grants it keys are stored in time order: an insert touches the end of the index
/// rather than a random page of it, which keeps launch URLs cheap on SQLite.
fn new_grant_token(now: DateTime<Utc>) -> String {
    let mut random = [0u8; 10];
    rand::fill(&mut random);
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// Key under which a grant token is stored: for a version-7 token, its time (the first 6
/// bytes, not secret) then the SHA-256 of the whole token; otherwise the SHA-256 alone. The
/// token itself is never stored.
pub fn grant_hash(token: &str) -> Vec<u8> {
    let digest = Sha256::digest(token.as_bytes());
    match uuid::Uuid::try_parse(token) {
        Ok(u) if u.get_version_num() == 7 => {
            let mut key = u.as_bytes()[..6].to_vec();
            key.extend_from_slice(&digest);
            key
        }
        _ => digest.to_vec(),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
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
        it.last_active_time = iso(t.max(rec.created_at));
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
        create_time: iso(rec.created_at),
        last_active_time: iso(rec.last_input_at.unwrap_or(rec.created_at)),
        connections,
        geometry: rec.geometry.clone(),
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
    }
}

fn launch_error(e: LaunchError) -> ApiError {
    match e {
        LaunchError::NoCapacity(m) => ApiError::NoCapacity(m),
        LaunchError::Desktop(m) => ApiError::Desktop(m),
        LaunchError::FailedAt { reason, .. } => ApiError::Desktop(reason),
    }
}

/// `PUT …/desktop/vnc`: the caller's session, started if they have none.
pub async fn create(app: &AppState, user: &AuthUser) -> Result<SessionItem, ApiError> {
    user.require(Action::CreateDesktop)?;
    let claim = app
        .store
        .claim_session(NewSession {
            owner: user.name().to_owned(),
            user_id: user.claims.user_id.clone(),
            invoker: user.claims.invoker.clone(),
            compute_user: user.compute_user.clone(),
            geometry: app.config.launcher.geometry.clone(),
            launcher: app.launcher.kind().to_owned(),
            state: SessionState::Starting,
            now: app.clock.now(),
        })
        .await?;
    let rec = match claim {
        Claim::Existing(rec) => return existing(app, rec).await,
        Claim::Claimed(rec) => rec,
    };
    // Detached from the request: finishing the start and recording its outcome must not
    // depend on the client staying connected.
    let task_app = app.clone();
    let caller = user.clone();
    tokio::spawn(async move {
        let result = start(&task_app, rec, caller.compute_user.clone()).await;
        let counter = match &result {
            Ok(_) => &task_app.metrics.desktops_started,
            Err(_) => &task_app.metrics.desktop_start_failures,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &result {
            Ok(item) => {
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
            Err(e) => {
                audit::record(
                    &task_app,
                    Kind::SessionFailed,
                    caller.name(),
                    "",
                    &caller.peer,
                    e.to_string(),
                )
                .await;
            }
        }
        result
    })
    .await
    .map_err(ApiError::internal)?
}

async fn start(
    app: &AppState,
    rec: SessionRecord,
    compute_user: hpcdesk_core::ComputeUser,
) -> Result<SessionItem, ApiError> {
    let password = new_vnc_password();
    let launched = app
        .launcher
        .start(StartRequest {
            compute_user: compute_user.clone(),
            password: password.clone(),
            geometry: rec.geometry.clone(),
        })
        .await;
    let launched = match launched {
        Ok(Launch::Ready(l)) => l,
        Ok(Launch::Queued(q)) => return queued(app, rec, q, &password).await,
        Err(e) => {
            let at = match &e {
                LaunchError::FailedAt { node, display, .. } => {
                    Some(SessionId::new(node.clone(), compute_user.clone(), *display))
                }
                _ => None,
            };
            tracing::warn!(user = %compute_user, error = %e, "desktop start failed");
            app.store
                .start_failed(&rec.key, at, &e.to_string(), app.clock.now())
                .await?;
            return Err(launch_error(e));
        }
    };
    for w in &launched.warnings {
        tracing::warn!(user = %compute_user, "desktop started with a warning: {w}");
    }
    let id = SessionId::new(launched.node.clone(), compute_user, launched.display);
    let sealed = app.server_key.seal_at_rest(&password);
    let rec = ready(app, &rec, id, launched, sealed).await?;
    Ok(item(&rec, 0))
}

/// Records a desktop that is ready. If its row was stopped meanwhile (or the store fails),
/// the desktop is stopped: it must not outlive the record that lets anyone find it.
async fn ready(
    app: &AppState,
    rec: &SessionRecord,
    id: SessionId,
    launched: Launched,
    vnc_password_sealed: Vec<u8>,
) -> Result<SessionRecord, ApiError> {
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
                vnc_password_sealed,
                handle: launched.handle.clone(),
                state: SessionState::Running,
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
                .ok_or_else(|| ApiError::internal(std::io::Error::other("session vanished")))
        }
        other => {
            let mut t = target(rec);
            t.node = Some(launched.node);
            t.display = Some(launched.display);
            t.host = Some(launched.host);
            t.port = Some(launched.port);
            t.handle = launched.handle;
            if let Err(e) = app.launcher.stop(&t).await {
                tracing::error!(session = %id, error = %e, "could not stop an unrecorded desktop");
            }
            match other {
                Err(e) => Err(e.into()),
                _ => Err(ApiError::Desktop(
                    "the session was stopped while its desktop was starting".into(),
                )),
            }
        }
    }
}

/// A queued desktop (Slurm): recorded `pending` under its id, then followed for up to
/// `launcher.start_timeout`; if it is not ready by then the create answers `pending` and the
/// background watcher carries on.
async fn queued(
    app: &AppState,
    rec: SessionRecord,
    q: Queued,
    password: &[u8],
) -> Result<SessionItem, ApiError> {
    let sealed = app.server_key.seal_at_rest(password);
    let Some(mut rec) = app
        .store
        .session_queued(
            &rec.key,
            &q.session_id,
            &q.handle,
            &sealed,
            &q.reason,
            app.clock.now(),
        )
        .await?
    else {
        let _ = app.launcher.stop(&target(&rec)).await;
        return Err(ApiError::Desktop(
            "the session was stopped while its desktop was being queued".into(),
        ));
    };
    tracing::info!(session = %q.session_id, reason = %q.reason, "desktop queued");
    let deadline = tokio::time::Instant::now() + app.config.launcher.start_timeout.0;
    loop {
        match rec.state {
            SessionState::Running => return Ok(view(app, &rec)),
            SessionState::Failed | SessionState::Stopped => {
                return Err(ApiError::Desktop(rec.status_reason));
            }
            _ if tokio::time::Instant::now() >= deadline => return Ok(view(app, &rec)),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        rec = advance(app, &rec).await?;
    }
}

/// One step of a queued desktop: asks the launcher where it is and records the answer.
/// Returns the session as it is now.
pub async fn advance(app: &AppState, rec: &SessionRecord) -> Result<SessionRecord, ApiError> {
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
            let (Some(id), Some(sealed)) =
                (rec.session_id.clone(), rec.vnc_password_sealed.clone())
            else {
                return Err(ApiError::internal(std::io::Error::other(
                    "a queued session without id or password",
                )));
            };
            ready(app, rec, id, launched, sealed).await?;
        }
        Ok(Progress::Failed(reason)) => {
            let moved = app
                .store
                .transition(
                    &rec.key,
                    &[SessionState::Pending, SessionState::Starting],
                    SessionState::Failed,
                    &reason,
                    now,
                )
                .await?;
            if moved {
                tracing::warn!(key = %rec.key, %reason, "queued desktop failed");
                audit::record(
                    app,
                    Kind::SessionFailed,
                    &rec.owner,
                    &id_text(rec),
                    "",
                    reason,
                )
                .await;
                let _ = app.launcher.stop(&t).await;
            }
        }
        Ok(Progress::Ended(reason)) => {
            if app
                .store
                .transition(
                    &rec.key,
                    &[SessionState::Pending, SessionState::Starting],
                    SessionState::Stopped,
                    &reason,
                    now,
                )
                .await?
            {
                app.store.revoke_grants(&rec.key).await?;
            }
        }
        Err(e) => tracing::warn!(key = %rec.key, error = %e, "cannot follow a queued desktop"),
    }
    app.store
        .session_by_key(&rec.key)
        .await?
        .ok_or_else(|| ApiError::internal(std::io::Error::other("session vanished")))
}

fn id_text(rec: &SessionRecord) -> String {
    rec.session_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The answer to a create when the user already has a live session.
async fn existing(app: &AppState, mut rec: SessionRecord) -> Result<SessionItem, ApiError> {
    // Another request is starting it here and now (not a queued desktop, which has a
    // handle): wait for that start to finish (it is bounded by the launcher's own timeout).
    let give_up = app.config.launcher.start_timeout.0 + Duration::from_secs(15);
    let deadline = tokio::time::Instant::now() + give_up;
    while rec.state == SessionState::Starting
        && rec.handle.is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rec = match app.store.session_by_key(&rec.key).await? {
            Some(r) => r,
            None => {
                return Err(ApiError::internal(std::io::Error::other(
                    "claimed session vanished",
                )));
            }
        };
    }
    match rec.state {
        SessionState::Running | SessionState::Pending => Ok(view(app, &rec)),
        SessionState::Starting if !rec.handle.is_empty() => Ok(view(app, &rec)),
        SessionState::Starting => Err(ApiError::Desktop(
            "your desktop is still starting; try again shortly".into(),
        )),
        SessionState::Failed => Err(ApiError::Desktop(rec.status_reason)),
        SessionState::Stopped => Err(ApiError::Desktop(
            "your desktop was stopped while it was starting".into(),
        )),
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
async fn owned_session(
    app: &AppState,
    user: &AuthUser,
    id: &SessionId,
) -> Result<SessionRecord, ApiError> {
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

/// `DELETE …/desktop/vnc/{id}`: stops the desktop and revokes its grants.
pub async fn delete(app: &AppState, user: &AuthUser, id: &SessionId) -> Result<(), ApiError> {
    user.require(Action::UseDesktop)?;
    let rec = owned_session(app, user, id).await?;
    let task_app = app.clone();
    let caller = user.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        stop(&task_app, &rec, &format!("deleted by {}", caller.name())).await?;
        let detail = if rec.owner == caller.name() {
            String::new()
        } else {
            format!("owner {}", rec.owner)
        };
        audit::record(
            &task_app,
            Kind::SessionDeleted,
            caller.name(),
            &id,
            &caller.peer,
            detail,
        )
        .await;
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?
}

/// Stops a session's desktop, then records it stopped and revokes its grants.
pub async fn stop(app: &AppState, rec: &SessionRecord, reason: &str) -> Result<(), ApiError> {
    // Viewers learn first that the session is going (close code 4001: do not reconnect),
    // before its desktop disappears under them.
    app.gateway
        .registry
        .close_session(&rec.key, hpcdesk_gateway::CloseReason::SessionDeleted);
    match app.launcher.stop(&target(rec)).await {
        Ok(()) => {}
        // A failed or ended session's desktop is already gone; leftovers are best effort.
        Err(e) if matches!(rec.state, SessionState::Failed | SessionState::Stopped) => {
            tracing::warn!(key = %rec.key, error = %e, "cleanup of an ended desktop failed");
        }
        Err(e) => return Err(launch_error(e)),
    }
    app.store
        .transition(
            &rec.key,
            &[
                SessionState::Pending,
                SessionState::Starting,
                SessionState::Running,
                SessionState::Failed,
            ],
            SessionState::Stopped,
            reason,
            app.clock.now(),
        )
        .await?;
    app.store.dismiss(&rec.key, app.clock.now()).await?;
    app.store.revoke_grants(&rec.key).await?;
    tracing::info!(key = %rec.key, session = ?rec.session_id.as_ref().map(ToString::to_string), reason, "desktop stopped");
    Ok(())
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
    if rec.state != SessionState::Running {
        let why = if rec.status_reason.is_empty() {
            String::new()
        } else {
            format!(": {}", rec.status_reason)
        };
        return Err(ApiError::Desktop(format!(
            "desktop session {id} is {}{why}",
            rec.state
        )));
    }
    let sealed = rec.vnc_password_sealed.as_deref().ok_or_else(|| {
        ApiError::internal(std::io::Error::other("running session without a password"))
    })?;
    let password = app
        .server_key
        .open_at_rest(sealed)
        .map_err(ApiError::internal)?;
    let now = app.clock.now();
    let token = new_grant_token(now);
    let ttl =
        chrono::Duration::from_std(app.config.gateway.grant_ttl.0).map_err(ApiError::internal)?;
    app.store
        .insert_grant(GrantRecord {
            token_hash: grant_hash(&token),
            session_key: rec.key.clone(),
            owner: rec.owner.clone(),
            view_only,
            created_at: now,
            expires_at: now + ttl,
            revoked: false,
        })
        .await?;
    let mm = app.server_key.seal_for_grant(&token, &password);
    let mut path = format!(
        "/vnc.html?path={}/vncws?token={token}&mm={mm}&resize=remote",
        app.path_prefix
    );
    if view_only {
        path.push_str("&view_only=true");
    }
    Ok(match &app.public_base {
        Some(base) => LaunchUrl {
            novnc_url: format!("{base}{path}"),
            with_domain: true,
        },
        None => LaunchUrl {
            novnc_url: path,
            with_domain: false,
        },
    })
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

    #[test]
    fn grant_hashes_are_sha256() {
        assert_eq!(grant_hash("x").len(), 32);
        assert_ne!(grant_hash("x"), grant_hash("y"));
    }

    #[test]
    fn grant_tokens_are_time_ordered_uuids_stored_by_time_then_hash() {
        let t = Utc::now();
        let (a, b) = (new_grant_token(t), new_grant_token(t));
        assert_ne!(a, b, "random part");
        let u = uuid::Uuid::try_parse(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        let later = new_grant_token(t + chrono::Duration::milliseconds(5));
        let (ka, kl) = (grant_hash(&a), grant_hash(&later));
        assert_eq!(ka.len(), 38);
        assert!(ka < kl, "stored in time order");
        assert_eq!(&ka[6..], Sha256::digest(a.as_bytes()).as_slice());
        // Tokens of earlier versions (UUID v4) still resolve by their plain hash.
        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(grant_hash(&v4), Sha256::digest(v4.as_bytes()).to_vec());
    }
}
