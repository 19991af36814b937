//! `GET /healthz`: liveness for load balancers and operators; `GET /openapi.json`: the API
//! described (OpenAPI 3.1, `openapi.json` in this crate).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hpcdesk_core::Envelope;

use crate::error::envelope_response;
use crate::state::AppState;

pub async fn health(State(app): State<AppState>) -> Response {
    envelope_response(
        StatusCode::OK,
        &Envelope::success(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "launcher": app.launcher.kind(),
            "clusterId": app.config.auth.cluster_id,
        })),
    )
}

/// The OpenAPI document of every endpoint.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn openapi() -> Response {
    let mut r = axum::response::IntoResponse::into_response(OPENAPI);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
        for path in [
            "/hpc/openapi/{version}/desktop/vnc",
            "/hpc/openapi/{version}/desktop/vnc/{sessionId}",
            "/hpc/openapi/{version}/desktop/vnc/{sessionId}/launchurl",
            "/ac/openapi/{version}/tokens",
            "/api/user/v3/tokens",
            "/ac/openapi/{version}/tokens/next",
            "/ac/openapi/{version}/tokens/state",
            "/ac/openapi/{version}/center",
            "/vncws",
            "/hpcdesk/v1/sweep",
            "/hpcdesk/v1/nodes",
            "/healthz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(v["paths"].get(path).is_some(), "{path} is not documented");
        }
        let codes: Vec<&str> = v["components"]["schemas"]["Code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for c in hpcdesk_core::ApiCode::ALL {
            assert!(
                codes.contains(&c.as_str()),
                "code {} is not documented",
                c.as_str()
            );
        }
    }
}
