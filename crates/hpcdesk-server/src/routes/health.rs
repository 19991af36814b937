//! `GET /healthz`: liveness for operators (always 200 while the process serves; says whether
//! the store answers); `GET /readyz`: readiness for load balancers (503 with the reason
//! while the store cannot be used, so traffic goes to an instance that can); `GET
//! /openapi.json`: the API described (OpenAPI 3.1, `openapi.json` in this crate).

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ok};
use crate::state::AppState;

/// How long a readiness check waits for the store.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// `Ok` if the store answers within [`STORE_CHECK`], else why not (no secrets: the URL is
/// never part of it).
async fn store_status(app: &AppState) -> Result<(), String> {
    match tokio::time::timeout(STORE_CHECK, app.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store check failed");
            Err(if e.is_unavailable() {
                "the database is unavailable".to_owned()
            } else {
                "the database answered with an error".to_owned()
            })
        }
        Err(_) => Err(format!(
            "the database did not answer within {}",
            humantime::format_duration(STORE_CHECK)
        )),
    }
}

pub async fn health(State(app): State<AppState>) -> Response {
    let store = store_status(&app).await;
    ok(serde_json::json!({
        "status": if store.is_ok() { "ok" } else { "degraded" },
        "store": store.err().unwrap_or_else(|| "ok".to_owned()),
        "version": env!("CARGO_PKG_VERSION"),
        "launcher": app.launcher.kind(),
        "clusterId": app.config.auth.cluster_id,
    }))
}

/// `GET /readyz`: 200 when this instance can serve the API, 503 with the reason otherwise.
pub async fn ready(State(app): State<AppState>) -> Response {
    match store_status(&app).await {
        Ok(()) => ok(serde_json::json!({"ready": true})),
        Err(why) => ApiError::NotReady(why).into_response(),
    }
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
            "/hpcdesk/v1/desktops",
            "/hpcdesk/v1/desktop/vnc/{sessionId}/screenshot",
            "/hpcdesk/v1/desktop/vnc/{sessionId}/extend",
            "/vncws/extend",
            "/healthz",
            "/readyz",
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
        let errors: Vec<&str> = v["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            errors.len(),
            codes.len() - 1,
            "every code but 0 is an error"
        );
        assert!(!errors.contains(&"0"));
    }

    /// Every operation's JSON 200 is one of its success envelope (code "0") and the error
    /// envelope, since business errors answer 200; and the transport statuses are there.
    #[test]
    fn every_json_answer_is_documented_as_success_or_error_envelope() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let error = serde_json::json!({"$ref": "#/components/schemas/ErrorEnvelope"});
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = &op["responses"];
                for status in ["404", "405", "408"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path}: {status} not documented"
                    );
                }
                let Some(schema) = responses["200"]["content"]["application/json"].get("schema")
                else {
                    continue;
                };
                if path == "/openapi.json" {
                    continue;
                }
                let one_of = schema["oneOf"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path}: 200 is not oneOf"));
                assert_eq!(one_of.len(), 2, "{method} {path}");
                assert_eq!(
                    one_of[0]["properties"]["code"]["const"], "0",
                    "{method} {path}"
                );
                assert_eq!(one_of[1], error, "{method} {path}");
            }
        }
        assert_eq!(
            v["paths"]["/vncws"]["get"]["responses"]["403"]["content"]["application/json"]["schema"],
            error
        );
    }
}
