//! HTTP routes. Handlers only translate HTTP: extract and parse, call `sessions`, wrap the
//! result in an envelope. Modules are named by resource.
//!
//! - [`desktop`]: the four SCNet desktop endpoints under `/hpc/openapi/v2/desktop/vnc`, with
//!   hpcdesk's create options, `GET /hpcdesk/v1/desktops` and screenshots.
//! - [`tokens`]: the AC token and region endpoints (`/ac/openapi/v2/…`, `/api/user/v3/tokens`).
//! - [`health`]: `GET /healthz`, `GET /readyz`; `GET /metrics` is served by [`crate::metrics`].
//! - [`extract`]: the API-version check, the authenticated caller, the session id path part.
//! - [`limits`]: header and body size limits (10012).
//! - [`access`]: the access line logged for each answer, and the count of answers by code.
//! - [`vncws`]: the viewer's WebSocket (`/vncws`), handed to the gateway.
//! - [`admin`]: operator endpoints (`/hpcdesk/v1/sweep`, `/hpcdesk/v1/nodes`).
//! - [`jobs`]: a Slurm job saying its desktop is ready (`/hpcdesk/v1/jobs/ready`).
//! - [`web`]: the viewer page and noVNC's modules (everything else that is a file).

pub mod access;
pub mod admin;
pub mod desktop;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod tokens;
pub mod vncws;
pub mod web;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use crate::error::ApiError;
use crate::state::AppState;

/// The whole HTTP surface of hpcdesk.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/hpc/openapi/{version}/desktop/vnc",
            put(desktop::create).get(desktop::list),
        )
        .route(
            "/hpc/openapi/{version}/desktop/vnc/{session_id}",
            axum::routing::delete(desktop::delete),
        )
        .route(
            "/hpc/openapi/{version}/desktop/vnc/{session_id}/launchurl",
            get(desktop::launch_url),
        )
        .route(
            "/ac/openapi/{version}/tokens",
            axum::routing::post(tokens::password),
        )
        .route(
            "/api/user/v3/tokens",
            axum::routing::post(tokens::access_key),
        )
        .route(
            "/ac/openapi/{version}/tokens/next",
            axum::routing::post(tokens::renew),
        )
        .route("/ac/openapi/{version}/tokens/state", get(tokens::state))
        .route("/ac/openapi/{version}/center", get(tokens::center))
        .route("/healthz", get(health::health))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(health::openapi))
        .route("/vncws", get(vncws::connect))
        .route("/hpcdesk/v1/sweep", axum::routing::post(admin::sweep))
        .route("/hpcdesk/v1/nodes", get(admin::nodes))
        .route("/hpcdesk/v1/desktops", get(desktop::desktops))
        .route(
            "/hpcdesk/v1/desktop/vnc/{session_id}/screenshot",
            get(desktop::screenshot),
        )
        .route(
            "/hpcdesk/v1/desktop/vnc/{session_id}/extend",
            axum::routing::post(desktop::extend),
        )
        .route("/vncws/extend", axum::routing::post(vncws::extend))
        .route(crate::jobs::READY_PATH, axum::routing::post(jobs::ready))
        .fallback(web::file_or_404)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::log_and_count,
        ))
        .with_state(state)
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}
