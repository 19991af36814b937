//! The portal page (`/`), the viewer page and noVNC's modules: embedded at build time (see
//! `build.rs`), or taken from `server.web_dir` first when an operator customises them. Every
//! file is sent with the pages' Content-Security-Policy ([`content_security_policy`]).

use std::path::{Component, Path};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

pub use embedded::NOVNC_EMBEDDED;

fn content_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The Content-Security-Policy of the pages: everything from this origin only, the WebSocket
/// and the link check included (`connect-src 'self'`), and framing only by the origins in
/// `server.frame_ancestors` (portals embed the viewer in an iframe), else by this origin.
pub fn content_security_policy(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() {
        "'self'".to_owned()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors {ancestors}"
    )
}

fn respond(path: &str, bytes: Vec<u8>, method: &Method, csp: &str) -> Response {
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // The page carries grant tokens in its URL: never send it on as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// Looks a request path up in `web_dir` (without leaving it), then in the embedded files.
async fn find(app: &AppState, path: &str) -> Option<Vec<u8>> {
    if let Some(dir) = &app.config.server.web_dir {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel.components().all(|c| matches!(c, Component::Normal(_)))
            && let Ok(bytes) = tokio::fs::read(dir.join(rel)).await
        {
            return Some(bytes);
        }
    }
    embedded::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| b.to_vec())
}

/// Serves a static file, or the API's "no such path" envelope.
pub async fn file_or_404(State(app): State<AppState>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if method == Method::GET || method == Method::HEAD {
        let wanted = if path == "/" {
            "/index.html"
        } else {
            path.as_str()
        };
        if let Some(bytes) = find(&app, wanted).await {
            return respond(wanted, bytes, &method, &app.csp);
        }
        if wanted.starts_with("/novnc/") && !NOVNC_EMBEDDED {
            let mut r = (
                StatusCode::NOT_FOUND,
                "noVNC was not installed when hpcdesk was built: run `npm ci --prefix web` and rebuild",
            )
                .into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return r;
        }
    }
    ApiError::NoRoute(format!("no such API: {method} {path}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_keeps_everything_on_this_origin_and_names_the_allowed_frames() {
        let p = content_security_policy(&[]);
        assert!(p.contains("connect-src 'self'") && p.contains("default-src 'self'"));
        assert!(p.ends_with("frame-ancestors 'self'"), "{p}");
        let p = content_security_policy(&["https://portal.example.org".into()]);
        assert!(
            p.ends_with("frame-ancestors https://portal.example.org"),
            "{p}"
        );
    }
}
