//! `GET /vncws?token=…&mm=…`: the viewer's WebSocket.
//!
//! The grant is checked before the upgrade: a refusal is an HTTP 403 with an envelope that
//! says why in plain words (and is logged without the token). A plain GET with a valid grant
//! (no upgrade headers) answers `code 0`, so the viewer page can check a link before
//! connecting, with the desktop's time limit (`endTime`, `warnBefore`, `canExtend`). After
//! the upgrade the connection is handed to the gateway as a raw TCP stream.
//!
//! `POST /vncws/extend?token=…&mm=…[&by=1h]`: the viewer's Extend button. A full (not
//! view-only) grant of a running session may extend it while its viewer is open, even once
//! the link has stopped opening new connections (`gateway.grant_ttl`); it acts as the
//! desktop's owner, within the same limits as the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hpcdesk_gateway::{ClientStream, ws};
use hyper_util::rt::TokioIo;

use super::extract::QueryOf;
use crate::audit::{self, Kind};
use crate::error::{ApiError, ok};
use crate::state::AppState;

pub async fn connect(
    State(app): State<AppState>,
    QueryOf(q): QueryOf<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let grant = match app
        .gateway
        .resolve(
            q.get("token").map(String::as_str),
            q.get("mm").map(String::as_str),
        )
        .await
    {
        Ok(g) => g,
        Err(r) => {
            tracing::info!(%peer, reason = %r, "viewer refused");
            return ApiError::from(r).into_response();
        }
    };
    if let Err(r) = app
        .gateway
        .admit(&grant, app.presence.elsewhere(&grant.session_key))
    {
        tracing::info!(%peer, session = %grant.session_id, reason = %r, "viewer refused");
        return ApiError::from(r).into_response();
    }
    let upgrade = match ws::check_upgrade(req.headers()) {
        Ok(u) => u,
        Err(_) if !req.headers().contains_key(header::UPGRADE) => {
            return link_info(&app, &grant).await;
        }
        Err(why) => return ApiError::BadUpgrade(why.to_owned()).into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::invariant("an HTTP/1 connection that cannot be upgraded").into_response();
    };
    let gateway = app.gateway.clone();
    let audit_app = app.clone();
    let peer_text = crate::routes::extract::client_addr(req.headers(), req.extensions(), &app);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<ClientStream>>() {
            Ok(parts) => {
                // Copy the (usually empty) bytes read past the request: holding `read_buf`
                // would keep hyper's whole read buffer alive for the life of the viewer.
                let leftover = parts.read_buf.to_vec();
                let viewer = parts.io.into_inner();
                drop(parts.read_buf);
                let (owner, id) = (grant.owner.clone(), grant.session_id.clone());
                let how = if grant.view_only { "view only" } else { "" };
                audit::record(
                    &audit_app,
                    Kind::ViewerConnected,
                    &owner,
                    &id,
                    &peer_text,
                    how,
                )
                .await;
                audit_app
                    .metrics
                    .viewers_connected
                    .fetch_add(1, Ordering::Relaxed);
                let (end, counts) = gateway.serve(viewer, &leftover, grant, peer).await;
                audit_app
                    .metrics
                    .gateway_bytes_down
                    .fetch_add(counts.down, Ordering::Relaxed);
                audit_app
                    .metrics
                    .gateway_bytes_up
                    .fetch_add(counts.up, Ordering::Relaxed);
                audit::record(
                    &audit_app,
                    Kind::ViewerDisconnected,
                    &owner,
                    &id,
                    &peer_text,
                    format!("{end:?}; {} bytes down, {} up", counts.down, counts.up),
                )
                .await;
            }
            Err(_) => tracing::error!(%peer, "the upgraded connection is not a client stream"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&upgrade.accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = upgrade.protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

/// What the viewer page learns from a plain GET of its link.
async fn link_info(app: &AppState, grant: &hpcdesk_gateway::Grant) -> Response {
    let session = app
        .store
        .session_by_key(&grant.session_key)
        .await
        .ok()
        .flatten();
    let end_time = session
        .as_ref()
        .and_then(|s| s.ends_at)
        .map(hpcdesk_core::wire::local_time)
        .unwrap_or_default();
    let can_extend = !grant.view_only && !end_time.is_empty();
    ok(serde_json::json!({
        "sessionId": grant.session_id,
        "viewOnly": grant.view_only,
        "endTime": end_time,
        "warnBefore": app.config.lifecycle.warn_before.0.as_secs(),
        "canExtend": can_extend,
        "extendBy": humantime::format_duration(app.config.lifecycle.extend_by.0).to_string(),
    }))
}

/// `POST /vncws/extend`: see the module documentation.
pub async fn extend(
    State(app): State<AppState>,
    QueryOf(q): QueryOf<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let peer = crate::routes::extract::client_addr(req.headers(), req.extensions(), &app);
    let (token, mm) = match (q.get("token"), q.get("mm")) {
        (Some(t), Some(m)) if !t.is_empty() && !m.is_empty() => (t, m),
        _ => return Err(hpcdesk_gateway::Refusal::Missing.into()),
    };
    let resolved = crate::grants::StoreGrants::of(&app)
        .resolve_with(token, mm, true)
        .await?;
    if resolved.grant.view_only {
        return Err(ApiError::Permission(
            "a view-only link cannot extend the desktop".into(),
        ));
    }
    let open = app
        .gateway
        .registry
        .activity(&resolved.grant.session_key)
        .connections;
    if resolved.expired && open == 0 {
        return Err(hpcdesk_gateway::Refusal::Expired.into());
    }
    let body = axum::body::to_bytes(req.into_body(), 4096)
        .await
        .unwrap_or_default();
    let by = super::desktop::extension_of(&app, q.get("by").cloned(), &body)?;
    let who = resolved.session.owner.clone();
    Ok(ok(crate::sessions::extend_session(
        &app,
        &resolved.session,
        by,
        &who,
        &format!("{peer} (viewer)"),
    )
    .await?))
}
