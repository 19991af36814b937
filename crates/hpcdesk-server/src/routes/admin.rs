//! Operator endpoints under `/hpcdesk/v1/` (admin role only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hpcdesk_core::Envelope;

use crate::auth::AuthUser;
use crate::error::{ApiError, envelope_response};
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
    Ok(envelope_response(
        StatusCode::OK,
        &Envelope::success(report),
    ))
}
