//! The SCNet desktop endpoints (DESIGN §2.3). Bodies are ignored: clients send none, `{}`
//! or text.

use axum::extract::{Query, State};
use axum::response::Response;

use super::extract::{SessionPath, V2};
use crate::auth::AuthUser;
use crate::error::{ApiError, ok};
use crate::sessions;
use crate::state::AppState;

/// `PUT /hpc/openapi/v2/desktop/vnc`
#[tracing::instrument(skip_all, fields(user = %user.name()))]
pub async fn create(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
) -> Result<Response, ApiError> {
    Ok(ok(sessions::create(&app, &user).await?))
}

/// `GET /hpc/openapi/v2/desktop/vnc`
#[tracing::instrument(skip_all, fields(user = %user.name()))]
pub async fn list(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
) -> Result<Response, ApiError> {
    Ok(ok(sessions::list(&app, &user).await?))
}

/// `DELETE /hpc/openapi/v2/desktop/vnc/{sessionId}`
#[tracing::instrument(skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn delete(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
    id: SessionPath,
) -> Result<Response, ApiError> {
    sessions::delete(&app, &user, &id.0).await?;
    Ok(ok(serde_json::json!({})))
}

/// Options of launchurl beyond the SCNet API (clients that do not know them send none).
#[derive(Debug, serde::Deserialize)]
pub struct LaunchOptions {
    #[serde(rename = "viewOnly")]
    view_only: Option<String>,
}

/// `GET /hpc/openapi/v2/desktop/vnc/{sessionId}/launchurl[?viewOnly=true]`
#[tracing::instrument(skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn launch_url(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
    id: SessionPath,
    Query(opts): Query<LaunchOptions>,
) -> Result<Response, ApiError> {
    let view_only = match opts.view_only.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "viewOnly must be true or false, not {other:?}"
            )));
        }
    };
    Ok(ok(
        sessions::launch_url(&app, &user, &id.0, view_only).await?
    ))
}
