//! `POST /hpcdesk/v1/jobs/ready?marker=…&token=…`: a Slurm job saying its desktop is ready
//! ([`crate::jobs`]). Not a user's call: no SCNet token, the job's own token instead. It only
//! makes whatever waits for a queued desktop look now.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;

use crate::error::{ApiError, ok};
use crate::routes::extract::QueryOf;
use crate::state::AppState;

pub async fn ready(
    State(app): State<AppState>,
    QueryOf(q): QueryOf<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (Some(marker), Some(token)) = (q.get("marker"), q.get("token")) else {
        return Err(ApiError::InvalidParameter(
            "marker and token are required".into(),
        ));
    };
    use std::sync::atomic::Ordering::Relaxed;
    if !crate::jobs::check(&app.server_key, marker, token) {
        app.metrics.job_ready_refused.fetch_add(1, Relaxed);
        return Err(ApiError::Permission(
            "not the readiness token of this job".into(),
        ));
    }
    app.metrics.job_ready_calls.fetch_add(1, Relaxed);
    app.job_wakes.wake();
    Ok(ok(serde_json::json!({})))
}
