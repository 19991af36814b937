//! Size limits (10012): the total size of the request headers and of the body. Bodies are
//! read up to the limit and no further, so a client cannot make hpcdesk buffer more.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn enforce(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &app.config.limits;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return ApiError::TooLarge(format!(
            "request headers are larger than {} bytes",
            limits.max_header_bytes
        ))
        .into_response();
    }
    let too_large = || {
        ApiError::TooLarge(format!(
            "request body is larger than {} bytes",
            limits.max_body_bytes
        ))
        .into_response()
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(_) => {
            return ApiError::InvalidParameter("the request body could not be read".into())
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
