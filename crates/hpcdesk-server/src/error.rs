//! The API's error type: each variant maps to exactly one SCNet code, in one place.
//!
//! Business errors travel as HTTP 200 with the code in the envelope, as the real service
//! does. An [`ApiError::Internal`] is logged once, with its cause, where it is turned into a
//! response; the client only ever sees "internal error".

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hpcdesk_core::{ApiCode, Envelope};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    UnsupportedVersion(String),
    #[error("{0}")]
    RoleMapping(String),
    #[error("{msg}")]
    TooFrequent { msg: String, retry_after: Duration },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NoCapacity(String),
    #[error("{0}")]
    Desktop(String),
    #[error("{0}")]
    NotFound(String),
    /// An unexpected failure inside hpcdesk. The cause is for the log only.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store cannot be used just now (database down, disk full): 815008 with a plain
    /// message, so a portal can tell its user to retry. The cause is for the log only.
    #[error("{}", STORE_UNAVAILABLE)]
    StoreUnavailable(#[source] hpcdesk_store::StoreError),
    /// No such route (HTTP 404 with an envelope).
    #[error("{0}")]
    NoRoute(String),
}

/// The `msg` while the store cannot be used.
pub const STORE_UNAVAILABLE: &str =
    "the desktop service's database is unavailable; please try again in a minute";

impl ApiError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    pub fn code(&self) -> ApiCode {
        match self {
            ApiError::MissingParameter(_) => ApiCode::MissingParameter,
            ApiError::InvalidParameter(_) | ApiError::NoRoute(_) => ApiCode::InvalidParameter,
            ApiError::Permission(_) => ApiCode::PermissionDenied,
            ApiError::UnsupportedVersion(_) => ApiCode::UnsupportedVersion,
            ApiError::RoleMapping(_) => ApiCode::RoleMapping,
            ApiError::TooFrequent { .. } => ApiCode::TooFrequent,
            ApiError::TooLarge(_) => ApiCode::TooLarge,
            ApiError::NoCapacity(_) => ApiCode::NoNodeAvailable,
            ApiError::Desktop(_) | ApiError::StoreUnavailable(_) => ApiCode::DesktopService,
            ApiError::NotFound(_) => ApiCode::SessionNotFound,
            ApiError::Internal(_) => ApiCode::Internal,
        }
    }
}

impl From<hpcdesk_store::StoreError> for ApiError {
    fn from(e: hpcdesk_store::StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::StoreUnavailable(e)
        } else {
            ApiError::internal(e)
        }
    }
}

/// The JSON content type the real service answers with.
pub const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// Serialises an envelope with the SCNet content type.
pub fn envelope_response<T: serde::Serialize>(status: StatusCode, env: &Envelope<T>) -> Response {
    let body = serde_json::to_vec(env).expect("envelopes serialise");
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    // For the metrics middleware, which counts answers by code.
    if let Some(code) = ApiCode::parse(&env.code) {
        resp.extensions_mut().insert(code);
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let msg = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "internal error");
                code.default_msg().to_owned()
            }
            ApiError::StoreUnavailable(cause) => {
                tracing::warn!(error = %cause, "request refused: the store is unavailable");
                STORE_UNAVAILABLE.to_owned()
            }
            other => other.to_string(),
        };
        let status = match self {
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        let mut resp = envelope_response(status, &Envelope::failure(code, msg));
        if let ApiError::TooFrequent { retry_after, .. } = &self {
            let secs = retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
