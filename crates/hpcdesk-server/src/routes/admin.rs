//! Operator endpoints under `/hpcdesk/v1/` (admin role only).

use axum::extract::State;
use axum::response::Response;

use crate::auth::AuthUser;
use crate::error::{ApiError, ok};
use crate::lifecycle;
use crate::state::AppState;

/// `POST /hpcdesk/v1/sweep`: runs the idle sweep now (what `hpcdesk sweep` calls).
pub async fn sweep(State(app): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    if !user.is_admin() {
        return Err(ApiError::Permission(
            "only an admin may run the idle sweep".into(),
        ));
    }
    let report = lifecycle::sweep(&app).await?;
    Ok(ok(report))
}

/// `GET /hpcdesk/v1/nodes`: every node's probe and sessions (what `hpcdesk nodes` shows).
pub async fn nodes(State(app): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    if !user.is_admin() {
        return Err(ApiError::Permission("only an admin may list nodes".into()));
    }
    // The ssh launcher probes as its own service account, whoever asks.
    let reports = app.launcher.nodes(&user.compute_user).await;
    let sessions = app.store.list_sessions(None).await?;
    let data: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mine: Vec<&hpcdesk_store::SessionRecord> = sessions
                .iter()
                .filter(|s| s.node.as_ref().is_some_and(|n| n.as_str() == r.name))
                .collect();
            let running = mine
                .iter()
                .filter(|s| s.state == hpcdesk_core::SessionState::Running)
                .count();
            let mut v = serde_json::json!({
                "name": r.name,
                "address": r.address,
                "reachable": r.probe.is_ok(),
                "accepting": r.accepting.is_ok(),
                "reason": r.accepting.as_ref().err().cloned().unwrap_or_default(),
                "sessions": running,
                "sessionIds": mine.iter().filter_map(|s| s.session_id.as_ref().map(ToString::to_string)).collect::<Vec<_>>(),
            });
            if let Ok(p) = &r.probe {
                v["cores"] = p.cores.into();
                v["load1"] = p.load1.into();
                v["memTotalMiB"] = (p.mem_total_kib / 1024).into();
                v["memAvailableMiB"] = (p.mem_available_kib / 1024).into();
                v["desktops"] = p.desktops.into();
            }
            v
        })
        .collect();
    Ok(ok(data))
}
