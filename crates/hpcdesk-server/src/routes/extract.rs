//! Extractors that run, in handler-argument order, the checks every desktop call shares:
//! API version (10009), then the `token` header (10003 / 10008 / 10010), then the session
//! id in the path (10004).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use hpcdesk_core::SessionId;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

async fn path_params(parts: &mut Parts, state: &AppState) -> HashMap<String, String> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .unwrap_or_default()
}

/// Proof that the path names API version 2 (`/hpc/openapi/v2/…`).
#[derive(Debug)]
pub struct V2;

impl FromRequestParts<AppState> for V2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await;
        let version = params.get("version").map(String::as_str).unwrap_or("");
        match version {
            "v2" => Ok(V2),
            v if v.len() > 1
                && v.starts_with('v')
                && v[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                Err(ApiError::UnsupportedVersion(format!(
                    "API version {v} is not supported; use v2"
                )))
            }
            _ => Err(ApiError::NoRoute(format!(
                "no such API: {}",
                parts.uri.path()
            ))),
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get("token")
            .ok_or_else(|| ApiError::MissingParameter("missing header: token".into()))?;
        let token = header
            .to_str()
            .map_err(|_| ApiError::InvalidParameter("header token is not valid text".into()))?;
        state
            .verifier
            .verify(token, state.clock.now().timestamp_millis())
    }
}

/// The `{session_id}` path part, parsed.
#[derive(Debug)]
pub struct SessionPath(pub SessionId);

impl FromRequestParts<AppState> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await;
        let raw = params
            .get("session_id")
            .ok_or_else(|| ApiError::MissingParameter("missing path part: sessionId".into()))?;
        SessionId::parse(raw)
            .map(SessionPath)
            .map_err(|e| ApiError::InvalidParameter(format!("invalid sessionId: {e}")))
    }
}
