//! The access line: every answer is counted by its SCNet code for `/metrics` and logged once,
//! as `hpcdesk::access` at info (warn for 10001 and HTTP 5xx), with the method, the path, the
//! caller's platform user (once the token is verified; `-` before or without one), the SCNet
//! code, the HTTP status and the time to answer in microseconds.
//!
//! The path only, never the query: queries carry grant tokens and sealed VNC passwords. The
//! SCNet code is what matters, since business errors keep HTTP 200; answers that are not API
//! envelopes (files, the WebSocket upgrade) log `code="-"`. Fields are recorded as strings and
//! integers, not formatted through `Display`, and the request's span (and the handlers' spans)
//! are at debug, where the default filter makes them free: the line is written on every launch
//! URL, so its cost is part of the API's throughput (`bench/api.sh` runs with it). A failure's
//! own line (`internal error`, with its cause) comes just before the access line that names its
//! user and path. `HPCDESK_LOG=info,hpcdesk::access=off` turns the line off.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hpcdesk_core::{ApiCode, Claims};
use tracing::Instrument;

use crate::state::AppState;

/// The `tracing` target of the access line, for filters.
pub const TARGET: &str = "hpcdesk::access";

/// Where the token's extractor leaves the verified caller for the access line (a request
/// extension the middleware puts in and reads back once the answer is made).
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Arc<Claims>>>);

impl CallerSlot {
    /// Records the verified caller of this request (the first one wins).
    pub fn fill(&self, claims: &Arc<Claims>) {
        let _ = self.0.set(Arc::clone(claims));
    }
}

/// Middleware: runs the request, then counts and logs its answer.
pub async fn log_and_count(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let caller = CallerSlot::default();
    req.extensions_mut().insert(caller.clone());
    let span = tracing::debug_span!("http", method = method.as_str(), path = uri.path());
    let response = next.run(req).instrument(span).await;

    let code = response.extensions().get::<ApiCode>().copied();
    if let Some(code) = code {
        app.metrics.count_response(code);
    }
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = response.status().as_u16();
    let code_text = code.map_or("-", ApiCode::as_str);
    let user = caller.0.get().map_or("-", |c| c.user.as_str());
    if code == Some(ApiCode::Internal) || response.status().is_server_error() {
        tracing::warn!(target: TARGET, method = method.as_str(), path = uri.path(), user,
            code = code_text, status, micros, "answered");
    } else {
        tracing::info!(target: TARGET, method = method.as_str(), path = uri.path(), user,
            code = code_text, status, micros, "answered");
    }
    response
}
