//! The AC platform's token and region endpoints (DESIGN §2.2), for sites without the AC
//! platform. Token endpoints are limited per client address before anything else runs.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::extract::{AcV2, client_addr, header};
use crate::accounts;
use crate::auth::AuthUser;
use crate::error::{ApiError, ok};
use crate::state::AppState;

fn peer(parts: &Parts, app: &AppState) -> Result<String, ApiError> {
    let peer = client_addr(&parts.headers, &parts.extensions, app);
    app.limits.check_peer(&peer)?;
    Ok(peer)
}

/// `POST /ac/openapi/v2/tokens` with headers `user`, `password`, `orgId`.
pub async fn password(
    State(app): State<AppState>,
    _: AcV2,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let peer = peer(&parts, &app)?;
    let user = header(&parts, "user")?;
    let password = header(&parts, "password")?;
    let org = header(&parts, "orgId")?;
    Ok(ok(accounts::password_login(
        &app, user, password, org, &peer,
    )
    .await?))
}

/// `POST /api/user/v3/tokens` with headers `user`, `accessKey`, `timestamp`, `signature`.
pub async fn access_key(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let peer = peer(&parts, &app)?;
    let user = header(&parts, "user")?;
    let key = header(&parts, "accessKey")?;
    let timestamp = header(&parts, "timestamp")?;
    let signature = header(&parts, "signature")?;
    Ok(ok(accounts::key_login(
        &app, user, key, timestamp, signature, &peer,
    )
    .await?))
}

/// `POST /ac/openapi/v2/tokens/next` with the (possibly expired) `token` header.
pub async fn renew(
    State(app): State<AppState>,
    _: AcV2,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let peer = client_addr(&parts.headers, &parts.extensions, &app);
    let token = header(&parts, "token")?;
    Ok(ok(accounts::renew(&app, token, &peer).await?))
}

/// `GET /ac/openapi/v2/tokens/state`.
pub async fn state(_: AcV2, _user: AuthUser) -> Response {
    ok("token is valid")
}

/// `GET /ac/openapi/v2/center`.
pub async fn center(
    State(app): State<AppState>,
    _: AcV2,
    user: AuthUser,
    req: Request,
) -> Result<Response, ApiError> {
    let base = match &app.config.public_url {
        Some(p) => p.base.clone(),
        None => {
            let host = req
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            let https = app.config.server.trust_forwarded_for
                && req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|p| p.eq_ignore_ascii_case("https"));
            format!("{}://{host}", if https { "https" } else { "http" })
        }
    };
    Ok(ok(accounts::center(&app, &user, base).await?))
}
