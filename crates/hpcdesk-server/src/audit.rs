//! Writing the audit log (DESIGN §4): who did what to which session, from where, when.
//! A failure to write is logged and never fails the request that caused it. [`record`]
//! returns once the line is committed; [`record_soon`], for the hottest call (launch URLs),
//! once it is queued for the next group commit.

use hpcdesk_store::AuditEvent;

use crate::state::AppState;

/// What happened (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TokenIssued,
    TokenRefused,
    SessionCreated,
    SessionFailed,
    SessionDeleted,
    SessionSwept,
    /// Ended outside hpcdesk in an orderly way (its Slurm job completed or was cancelled), or
    /// by its time limit.
    SessionEnded,
    /// A desktop whose start was interrupted by a crash, adopted by its session.
    SessionAdopted,
    /// A launch URL (connection grant) was issued.
    LaunchUrlIssued,
    /// A desktop's time limit was extended (detail: by how much, until when, or the refusal).
    SessionExtended,
    ExtendRefused,
    /// A desktop was refused for the account (`auth.min_uid`, `deny_users`, `allow_groups`).
    AccountRefused,
    ViewerConnected,
    ViewerDisconnected,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TokenIssued => "token_issued",
            Kind::TokenRefused => "token_refused",
            Kind::SessionCreated => "session_created",
            Kind::SessionFailed => "session_failed",
            Kind::SessionDeleted => "session_deleted",
            Kind::SessionSwept => "session_swept",
            Kind::SessionEnded => "session_ended",
            Kind::SessionAdopted => "session_adopted",
            Kind::LaunchUrlIssued => "launch_url_issued",
            Kind::SessionExtended => "session_extended",
            Kind::ExtendRefused => "extend_refused",
            Kind::AccountRefused => "account_refused",
            Kind::ViewerConnected => "viewer_connected",
            Kind::ViewerDisconnected => "viewer_disconnected",
        }
    }
}

/// Records one event, committed when this returns.
pub async fn record(
    app: &AppState,
    kind: Kind,
    user: &str,
    session_id: &str,
    peer: &str,
    detail: impl Into<String>,
) {
    write(app, kind, user, session_id, peer, detail.into(), true).await;
}

/// Records one event, queued for the store's next group commit when the queue has room
/// (else committed before this returns, so a writer that falls behind slows its callers
/// rather than piling lines up). A commit that fails is logged by the store.
pub async fn record_soon(
    app: &AppState,
    kind: Kind,
    user: &str,
    session_id: &str,
    peer: &str,
    detail: impl Into<String>,
) {
    write(app, kind, user, session_id, peer, detail.into(), false).await;
}

async fn write(
    app: &AppState,
    kind: Kind,
    user: &str,
    session_id: &str,
    peer: &str,
    detail: String,
    wait: bool,
) {
    let event = AuditEvent {
        at: app.clock.now(),
        kind: kind.as_str().to_owned(),
        user: user.to_owned(),
        session_id: session_id.to_owned(),
        peer: peer.to_owned(),
        detail,
    };
    let written = if wait {
        app.store.record_audit(event).await
    } else {
        app.store.queue_audit(event).await
    };
    if let Err(e) = written {
        tracing::error!(error = %e, kind = kind.as_str(), "cannot write the audit log");
    }
}
