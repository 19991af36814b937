//! The one map from every failure to its SCNet code, HTTP status and log line.
//!
//! - [`ApiError`]: what a request answers. Each variant maps to exactly one SCNet code and
//!   one HTTP status, here and nowhere else: launcher errors ([`LaunchError`]), gateway
//!   refusals ([`Refusal`]), store errors and the work errors of [`TaskError`] all come in
//!   through `From`, so handlers and `sessions` only ever write `?`.
//! - [`TaskError`]: what the work behind a request, or a background task (reconcile, the
//!   sweep, following queued jobs), fails with. It has no code: a background task has no
//!   client to answer; a request turns it into an [`ApiError`].
//! - Every failure says where it came from ([`ErrorSource`]: the client, a node, Slurm, the
//!   store, or inside hpcdesk); its log line carries it as `source`.
//!
//! Business errors travel as HTTP 200 with the code in the envelope, as the real service
//! does. An internal failure is logged once, with its cause, where it is turned into a
//! response; the client only ever sees "internal error".

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hpcdesk_core::{ApiCode, Envelope, ErrorSource};
use hpcdesk_gateway::Refusal;
use hpcdesk_launcher::LaunchError;
use hpcdesk_store::StoreError;

/// A failure inside hpcdesk that should not happen (a running session without its password,
/// a row that vanished under its own transaction): the text says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invariant(pub &'static str);

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
    /// This instance has too many requests in progress (HTTP 503, code 10011).
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    TooLarge(String),
    /// The session is not in a state that allows this (starting, failed, stopped): 815008.
    #[error("{0}")]
    Desktop(String),
    #[error("{0}")]
    NotFound(String),
    /// The launcher could not do it: 815201 (no node has room), 815008 (the desktop or
    /// Slurm failed), 10008 (the account may not run desktops).
    #[error("{0}")]
    Launch(LaunchError),
    /// The gateway refuses a viewer before the upgrade (HTTP 403).
    #[error("{0}")]
    Viewer(Refusal),
    /// A `/vncws` request that is not a valid WebSocket upgrade (HTTP 400).
    #[error("{0}")]
    BadUpgrade(String),
    /// The request body did not arrive in time (HTTP 408; the connection is closed).
    #[error("{0}")]
    BodyTimeout(String),
    /// This instance cannot serve the API now (`/readyz`: HTTP 503).
    #[error("{0}")]
    NotReady(String),
    /// The store cannot be used just now (database down, disk full): 815008 with a plain
    /// message, so a portal can tell its user to retry. The cause is for the log only.
    #[error("{}", STORE_UNAVAILABLE)]
    StoreUnavailable(#[source] StoreError),
    /// An unexpected failure, and where it came from. The cause is for the log only.
    #[error("internal error")]
    Internal {
        from: ErrorSource,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No such route (HTTP 404 with an envelope).
    #[error("{0}")]
    NoRoute(String),
    /// The route exists, the method does not (HTTP 405 with an envelope).
    #[error("{0}")]
    MethodNotAllowed(String),
}

/// The `msg` while the store cannot be used.
pub const STORE_UNAVAILABLE: &str =
    "the desktop service's database is unavailable; please try again in a minute";

impl ApiError {
    /// An unexpected failure inside hpcdesk (a task that panicked, a value out of range).
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal {
            from: ErrorSource::Internal,
            cause: Box::new(e),
        }
    }

    /// A broken invariant: something hpcdesk itself guarantees did not hold.
    pub fn invariant(what: &'static str) -> Self {
        ApiError::internal(Invariant(what))
    }

    pub fn code(&self) -> ApiCode {
        match self {
            ApiError::MissingParameter(_) => ApiCode::MissingParameter,
            ApiError::InvalidParameter(_)
            | ApiError::NoRoute(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::BadUpgrade(_)
            | ApiError::BodyTimeout(_) => ApiCode::InvalidParameter,
            ApiError::Permission(_) => ApiCode::PermissionDenied,
            ApiError::UnsupportedVersion(_) => ApiCode::UnsupportedVersion,
            ApiError::RoleMapping(_) => ApiCode::RoleMapping,
            ApiError::TooFrequent { .. } | ApiError::Overloaded(_) => ApiCode::TooFrequent,
            ApiError::TooLarge(_) => ApiCode::TooLarge,
            ApiError::Desktop(_) | ApiError::StoreUnavailable(_) | ApiError::NotReady(_) => {
                ApiCode::DesktopService
            }
            ApiError::NotFound(_) => ApiCode::SessionNotFound,
            ApiError::Launch(e) => match e {
                LaunchError::NoCapacity(_) => ApiCode::NoNodeAvailable,
                LaunchError::Refused(_) => ApiCode::PermissionDenied,
                LaunchError::OverLimit(_) => ApiCode::InvalidParameter,
                LaunchError::Desktop(_)
                | LaunchError::Scheduler(_)
                | LaunchError::FailedAt { .. } => ApiCode::DesktopService,
            },
            ApiError::Viewer(r) => match r {
                Refusal::Missing => ApiCode::MissingParameter,
                Refusal::Internal => ApiCode::Internal,
                Refusal::UnknownGrant
                | Refusal::Expired
                | Refusal::Revoked
                | Refusal::TimeLimit
                | Refusal::NotRunning
                | Refusal::BadMm
                | Refusal::TooManyViewers(_) => ApiCode::PermissionDenied,
            },
            ApiError::Internal { .. } => ApiCode::Internal,
        }
    }

    /// The HTTP status: 200 for every business error, as the real service answers; the
    /// transport-level failures get theirs.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Viewer(_) => StatusCode::FORBIDDEN,
            ApiError::BadUpgrade(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        }
    }

    /// Where the failure came from.
    pub fn origin(&self) -> ErrorSource {
        match self {
            ApiError::Launch(e) => e.origin(),
            ApiError::Viewer(Refusal::Internal) => ErrorSource::Internal,
            ApiError::StoreUnavailable(_) | ApiError::NotReady(_) => ErrorSource::Store,
            ApiError::Internal { from, .. } => *from,
            ApiError::Desktop(_) => ErrorSource::Node,
            ApiError::Overloaded(_) => ErrorSource::Internal,
            _ => ErrorSource::Client,
        }
    }

    /// How long a client should wait before trying again, when it should.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::TooFrequent { retry_after, .. } => Some(*retry_after),
            ApiError::Overloaded(_) => Some(Duration::from_secs(1)),
            ApiError::NotReady(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::StoreUnavailable(e)
        } else {
            ApiError::Internal {
                from: ErrorSource::Store,
                cause: Box::new(e),
            }
        }
    }
}

impl From<LaunchError> for ApiError {
    fn from(e: LaunchError) -> Self {
        ApiError::Launch(e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Viewer(r)
    }
}

impl From<Invariant> for ApiError {
    fn from(e: Invariant) -> Self {
        ApiError::internal(e)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}

/// What the work behind a request or a background task fails with. A request answers it
/// through `From<TaskError> for ApiError`; a background task logs it with its source.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Launch(#[from] LaunchError),
    /// The session ended or changed while the work was under way: the text says how, for
    /// the caller (815008).
    #[error("{0}")]
    Superseded(String),
    #[error("{0}")]
    Invariant(#[from] Invariant),
    #[error("a task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl TaskError {
    pub fn invariant(what: &'static str) -> Self {
        TaskError::Invariant(Invariant(what))
    }

    /// Where the failure came from.
    pub fn origin(&self) -> ErrorSource {
        match self {
            TaskError::Store(_) => ErrorSource::Store,
            TaskError::Launch(e) => e.origin(),
            TaskError::Superseded(_) => ErrorSource::Node,
            TaskError::Invariant(_) | TaskError::Join(_) => ErrorSource::Internal,
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Store(e) => e.into(),
            TaskError::Launch(e) => e.into(),
            TaskError::Superseded(why) => ApiError::Desktop(why),
            TaskError::Invariant(e) => ApiError::internal(e),
            TaskError::Join(e) => ApiError::internal(e),
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

/// A success envelope around `data` (HTTP 200).
pub fn ok<T: serde::Serialize>(data: T) -> Response {
    envelope_response(StatusCode::OK, &Envelope::success(data))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let origin = self.origin();
        let msg = match &self {
            ApiError::Internal { cause, .. } => {
                tracing::error!(source = %origin, error = %cause, cause = ?cause.source(), "internal error");
                code.default_msg().to_owned()
            }
            ApiError::StoreUnavailable(cause) => {
                tracing::warn!(source = %origin, error = %cause, "request refused: the store is unavailable");
                STORE_UNAVAILABLE.to_owned()
            }
            ApiError::Launch(e) if code != ApiCode::PermissionDenied => {
                tracing::info!(source = %origin, error = %e, "request failed in the launcher");
                e.to_string()
            }
            other => other.to_string(),
        };
        let mut resp = envelope_response(self.status(), &Envelope::failure(code, msg));
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_errors_map_to_their_codes_and_sources() {
        let node = hpcdesk_core::NodeName::parse("n1").unwrap();
        let display = hpcdesk_core::DisplayNumber::new(3).unwrap();
        for (e, code, from) in [
            (
                LaunchError::NoCapacity("full".into()),
                ApiCode::NoNodeAvailable,
                ErrorSource::Node,
            ),
            (
                LaunchError::Desktop("Xvnc died".into()),
                ApiCode::DesktopService,
                ErrorSource::Node,
            ),
            (
                LaunchError::Scheduler("sbatch: no partition".into()),
                ApiCode::DesktopService,
                ErrorSource::Slurm,
            ),
            (
                LaunchError::Refused("system account".into()),
                ApiCode::PermissionDenied,
                ErrorSource::Client,
            ),
            (
                LaunchError::OverLimit("at most 24:00:00".into()),
                ApiCode::InvalidParameter,
                ErrorSource::Client,
            ),
            (
                LaunchError::FailedAt {
                    reason: "(EE) no fonts".into(),
                    node,
                    display,
                },
                ApiCode::DesktopService,
                ErrorSource::Node,
            ),
        ] {
            let text = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.code(), api.origin()), (code, from), "{text}");
            assert_eq!(api.status(), StatusCode::OK);
            assert_eq!(
                api.to_string(),
                text,
                "the launcher's words reach the caller"
            );
        }
    }

    #[test]
    fn refusals_are_403_with_their_codes() {
        for (r, code) in [
            (Refusal::Missing, ApiCode::MissingParameter),
            (Refusal::Internal, ApiCode::Internal),
            (Refusal::Expired, ApiCode::PermissionDenied),
            (Refusal::TooManyViewers(8), ApiCode::PermissionDenied),
        ] {
            let api = ApiError::from(r);
            assert_eq!(api.code(), code);
            assert_eq!(api.status(), StatusCode::FORBIDDEN);
        }
    }

    #[test]
    fn work_errors_keep_their_meaning_as_answers() {
        let e = ApiError::from(TaskError::Superseded("stopped meanwhile".into()));
        assert_eq!(e.code(), ApiCode::DesktopService);
        assert_eq!(e.to_string(), "stopped meanwhile");
        let e = ApiError::from(TaskError::invariant("a session without its password"));
        assert_eq!(
            (e.code(), e.origin()),
            (ApiCode::Internal, ErrorSource::Internal)
        );
        assert_eq!(
            e.to_string(),
            "internal error",
            "the cause is for the log only"
        );
        let e = ApiError::from(TaskError::Launch(LaunchError::NoCapacity("full".into())));
        assert_eq!(e.code(), ApiCode::NoNodeAvailable);
    }
}
