//! Size limits (10012): the total size of the request headers and of the body.
//!
//! A body is buffered only up to the limit. Past it, hpcdesk keeps reading and discarding up
//! to [`DRAIN_CAP`] bytes (for at most [`DRAIN_TIME`]) before answering, so an ordinary client
//! that is still sending gets to read the 10012 envelope instead of a reset connection;
//! anything bigger is cut off. The connection is closed after a 10012.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::state::AppState;

/// Most bytes read and thrown away after a body went over the limit.
const DRAIN_CAP: usize = 1 << 20;
/// Longest time spent throwing them away.
const DRAIN_TIME: Duration = Duration::from_secs(2);

fn too_large(what: &str, limit: usize) -> Response {
    let mut r =
        ApiError::TooLarge(format!("request {what} is larger than {limit} bytes")).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads the body up to `limit` bytes; `None` if it is longer (the excess is drained).
async fn read_limited(body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > limit {
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while seen <= DRAIN_CAP {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            })
            .await;
            return Ok(None);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Some(buf))
}

pub async fn enforce(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &app.config.limits;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return too_large("headers are", limits.max_header_bytes);
    }
    let (parts, body) = req.into_parts();
    match read_limited(body, limits.max_body_bytes).await {
        Ok(Some(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(None) => too_large("body is", limits.max_body_bytes),
        Err(_) => {
            ApiError::InvalidParameter("the request body could not be read".into()).into_response()
        }
    }
}
