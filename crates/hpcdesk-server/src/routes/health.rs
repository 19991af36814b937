//! `GET /healthz`: liveness for load balancers and operators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hpcdesk_core::Envelope;

use crate::error::envelope_response;
use crate::state::AppState;

pub async fn health(State(app): State<AppState>) -> Response {
    envelope_response(
        StatusCode::OK,
        &Envelope::success(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "launcher": app.launcher.kind(),
            "clusterId": app.config.auth.cluster_id,
        })),
    )
}
