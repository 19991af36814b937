//! In-process test support: the whole service (router, sessions, store on an in-memory
//! SQLite, gateway) over a [`FakeLauncher`], with no process, port or account involved.

#![allow(dead_code)] // each test file uses part of it

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hpcdesk_launcher::fake::FakeLauncher;
use hpcdesk_server::config::{Config, Secret};
use hpcdesk_server::{AppState, SystemClock};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const SECRET: &str = "in-process-test-secret";

/// The service on `fake`, with `env` over the test defaults (`HPCDESK_…` pairs).
pub async fn service(fake: Arc<FakeLauncher>, env: &[(&str, &str)]) -> AppState {
    let mut vars: Vec<(String, String)> = [
        ("HPCDESK_STORE__URL", "sqlite::memory:"),
        ("HPCDESK_AUTH__JWT_SECRET", SECRET),
        ("HPCDESK_SERVER__SECRET", "in-process-server-secret"),
        ("HPCDESK_AUTH__ROLES", r#"{"1" = "user", "9" = "admin"}"#),
        ("HPCDESK_LIFECYCLE__RECONCILE_EVERY", "1h"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Config::load(None, vars).expect("the test configuration is valid");
    hpcdesk_server::build_with(settings, fake, Arc::new(SystemClock))
        .await
        .expect("the service builds")
}

/// A day-long token of `user` (also its compute user) with `role` ("1" user, "9" admin).
pub fn token_with_role(user: &str, role: &str) -> String {
    let claims = hpcdesk_server::auth::claims_for(
        user,
        user,
        "11112",
        role,
        "Normal",
        chrono::Utc::now().timestamp_millis(),
        Duration::from_secs(86400),
    );
    hpcdesk_server::auth::mint(&Secret::new(SECRET), &claims)
}

pub fn token(user: &str) -> String {
    token_with_role(user, "1")
}

/// An answer: the HTTP status, its headers, the JSON envelope (`Null` if not JSON) and the
/// body as text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: serde_json::Value,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

/// One request through the router (`oneshot`), as a portal would send it.
pub async fn call(
    app: &AppState,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: impl Into<Body>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("token", t);
    }
    let resp = hpcdesk_server::router(app.clone())
        .oneshot(req.body(body.into()).expect("a valid request"))
        .await
        .expect("the router always answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub const DESKTOPS: &str = "/hpc/openapi/v2/desktop/vnc";
