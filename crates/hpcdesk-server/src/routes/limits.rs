//! Size and time limits on requests: the total size of the headers and of the body (10012),
//! and the time the body may take to arrive (`limits.request_timeout`).
//!
//! A body is buffered only up to the limit. Past it, hpcdesk keeps reading and throwing away
//! what the client sends, up to [`DRAIN_CAP`] bytes and within the request's time limit,
//! before it answers: a client that sends its whole body before it reads (Python's urllib,
//! curl without `Expect`) then reads the 10012 envelope instead of a broken pipe. The
//! connection is closed after the answer. A body that does not arrive in time is answered
//! (HTTP 408, 10004) and its connection closed.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::conn::RequestSlot;
use crate::error::ApiError;
use crate::state::AppState;

/// Most bytes read and thrown away after a body went over the limit; a client sending more
/// is cut off.
const DRAIN_CAP: usize = 64 << 20;

fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn too_large(what: &str, limit: usize) -> Response {
    closing(ApiError::TooLarge(format!("request {what} larger than {limit} bytes")).into_response())
}

/// How reading a body ended.
enum BodyRead {
    Whole(Vec<u8>),
    /// Over the limit (the rest was drained as far as allowed).
    TooLarge,
    /// Not complete within the time limit.
    TooSlow,
    Broken,
}

/// Reads the body up to `limit` bytes within `within`, draining any excess.
async fn read_limited(body: Body, limit: usize, within: Duration) -> BodyRead {
    // Most API calls have no body at all (a GET, a PUT without one): nothing to wait for.
    if axum::body::HttpBody::is_end_stream(&body) {
        return BodyRead::Whole(Vec::new());
    }
    let mut body = body;
    let mut buf = Vec::new();
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return BodyRead::Broken;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen > limit {
                while seen <= DRAIN_CAP {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
                return BodyRead::TooLarge;
            }
            buf.extend_from_slice(&data);
        }
        BodyRead::Whole(Vec::new())
    };
    match tokio::time::timeout(within, read).await {
        Ok(BodyRead::Whole(_)) => BodyRead::Whole(buf),
        Ok(other) => other,
        Err(_) => BodyRead::TooSlow,
    }
}

pub async fn enforce(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &app.config.limits;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let slot = req.extensions().get::<RequestSlot>().cloned();
    let done = || {
        if let Some(s) = &slot {
            s.done();
        }
    };
    if header_bytes > limits.max_header_bytes {
        done();
        return too_large("headers are", limits.max_header_bytes);
    }
    let (parts, body) = req.into_parts();
    let within = limits.request_timeout.0;
    let read = read_limited(body, limits.max_body_bytes, within).await;
    done();
    match read {
        BodyRead::Whole(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        BodyRead::TooLarge => too_large("body is", limits.max_body_bytes),
        BodyRead::TooSlow => {
            tracing::info!(path = %parts.uri.path(), "request body not received in time; closing");
            closing(
                ApiError::BodyTimeout(format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(within)
                ))
                .into_response(),
            )
        }
        BodyRead::Broken => closing(
            ApiError::InvalidParameter("the request body could not be read".into()).into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_body_is_whole_at_once_and_a_body_is_still_read() {
        let within = Duration::from_secs(5);
        assert!(matches!(
            read_limited(Body::empty(), 10, within).await,
            BodyRead::Whole(b) if b.is_empty()
        ));
        assert!(matches!(
            read_limited(Body::from("{\"a\":1}"), 10, within).await,
            BodyRead::Whole(b) if b == b"{\"a\":1}"
        ));
        assert!(matches!(
            read_limited(Body::from("x".repeat(11)), 10, within).await,
            BodyRead::TooLarge
        ));
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_is_too_slow() {
        /// A body whose first byte never comes (a client that stalls after its headers).
        struct Stalled;
        impl axum::body::HttpBody for Stalled {
            type Data = axum::body::Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>>
            {
                std::task::Poll::Pending
            }
        }
        let body = Body::new(Stalled);
        assert!(matches!(
            read_limited(body, 10, Duration::from_millis(50)).await,
            BodyRead::TooSlow
        ));
    }
}
