//! Extractors that run, in handler-argument order, the checks every desktop call shares:
//! API version (10009), then the `token` header (10003 / 10008 / 10010), then the session
//! id in the path (10004); and [`QueryOf`], the one reader of query strings (10004).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use hpcdesk_core::{AccountStatus, SessionId};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

/// The (percent-decoded) path part `name` of the route, if the path has it and it is text.
async fn path_param(parts: &mut Parts, state: &AppState, name: &str) -> Option<String> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .ok()?
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The query string read as `T`. One that does not fit (a parameter given twice, say) is
/// 10004 with the reason, like any other bad input, never axum's plain-text 400.
#[derive(Debug)]
pub struct QueryOf<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryOf(q))
            .map_err(|e| ApiError::InvalidParameter(e.body_text()))
    }
}

/// Proof that the path names API version 2 (`/hpc/openapi/v2/…`).
#[derive(Debug)]
pub struct V2;

impl FromRequestParts<AppState> for V2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let version = path_param(parts, state, "version").await;
        match version.as_deref().unwrap_or("") {
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

/// The client's address: the TCP peer, or behind a trusted proxy the last entry of
/// `X-Forwarded-For` (the one the proxy itself added).
pub fn client_addr(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    state: &AppState,
) -> String {
    if state.config.server.trust_forwarded_for
        && let Some(last) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|a| !a.is_empty())
    {
        return last.to_owned();
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default()
}

/// Reads a required text header: missing → 10003, not text → 10004.
pub fn header<'a>(parts: &'a Parts, name: &str) -> Result<&'a str, ApiError> {
    parts
        .headers
        .get(name)
        .ok_or_else(|| ApiError::MissingParameter(format!("missing header: {name}")))?
        .to_str()
        .map_err(|_| ApiError::InvalidParameter(format!("header {name} is not valid text")))
}

/// The verified caller, within its request-rate limits.
impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = header(parts, "token")?;
        let mut user = state
            .verifier
            .verify(token, state.clock.now().timestamp_millis())?;
        state
            .limits
            .check_caller(user.name(), &user.claims.invoker)?;
        // For accounts hpcdesk manages, the stored status wins over the one in the token, so
        // `hpcdesk user disable` takes effect within a second, not when tokens expire.
        if let Some(stored) = state
            .account_status
            .status(state.store.as_ref(), user.name())
            .await?
        {
            let status = AccountStatus::parse(&stored.status).ok_or_else(|| {
                ApiError::Permission(format!("unknown accountStatus {:?}", stored.status))
            })?;
            if status == AccountStatus::Disable {
                return Err(ApiError::Permission("account is disabled".into()));
            }
            if crate::auth::voided(&user.claims, stored.tokens_valid_after) {
                return Err(ApiError::Permission(crate::accounts::VOIDED.into()));
            }
            user.status = status;
        }
        user.peer = client_addr(&parts.headers, &parts.extensions, state);
        if let Some(slot) = parts.extensions.get::<super::access::CallerSlot>() {
            slot.fill(&user.claims);
        }
        Ok(user)
    }
}

/// Proof that the path names API version 2 of the AC token/center endpoints
/// (`/ac/openapi/v2/…`).
#[derive(Debug)]
pub struct AcV2;

impl FromRequestParts<AppState> for AcV2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        V2::from_request_parts(parts, state).await.map(|_| AcV2)
    }
}

/// The `{session_id}` path part, parsed.
#[derive(Debug)]
pub struct SessionPath(pub SessionId);

impl FromRequestParts<AppState> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let raw = path_param(parts, state, "session_id")
            .await
            .ok_or_else(|| ApiError::MissingParameter("missing path part: sessionId".into()))?;
        SessionId::parse(&raw)
            .map(SessionPath)
            .map_err(|e| ApiError::InvalidParameter(format!("invalid sessionId: {e}")))
    }
}
