//! The SCNet desktop endpoints (DESIGN §2.3), and hpcdesk's additions to them: the choice of
//! desktop and screen size at create, the list of desktops, and screenshots.
//!
//! SCNet clients send a create with no body, `{}` or text; those get the defaults. A JSON
//! object body (or the query string) may name `desktop` and `geometry`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hpcdesk_core::wire::DesktopEntry;

use super::extract::{QueryOf, SessionPath, V2};
use crate::auth::AuthUser;
use crate::error::{ApiError, ok};
use crate::sessions;
use crate::state::AppState;

/// The options of a create, from the query string (`?desktop=twm&geometry=1280x720`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct CreateQuery {
    desktop: Option<String>,
    geometry: Option<String>,
}

/// The options of a create: the query string's, and a JSON object body's. A body that is not
/// a JSON object (none, text) asks for nothing, as SCNet clients expect.
fn create_options(query: CreateQuery, body: &[u8]) -> Result<sessions::CreateOptions, ApiError> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let mut from_body = CreateQuery::default();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::InvalidParameter(format!("the body is not valid JSON: {e}")))?;
        let field = |name: &str| match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::InvalidParameter(format!(
                "{name} must be a string"
            ))),
        };
        from_body.desktop = field("desktop")?;
        from_body.geometry = field("geometry")?;
    }
    let merge = |name: &str, q: Option<String>, b: Option<String>| match (q, b) {
        (Some(q), Some(b)) if q != b => Err(ApiError::InvalidParameter(format!(
            "{name} is given twice, differently, in the query string and the body"
        ))),
        (q, b) => Ok(b.or(q)),
    };
    Ok(sessions::CreateOptions {
        desktop: merge("desktop", query.desktop, from_body.desktop)?,
        geometry: merge("geometry", query.geometry, from_body.geometry)?,
    })
}

/// `PUT /hpc/openapi/v2/desktop/vnc[?desktop=…&geometry=…]`
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name()))]
pub async fn create(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
    QueryOf(query): QueryOf<CreateQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let opts = create_options(query, &body)?;
    let started = std::time::Instant::now();
    let created = sessions::create(&app, &user, &opts).await;
    app.metrics.create_seconds.observe(started.elapsed());
    Ok(ok(created?))
}

/// `GET /hpcdesk/v1/desktops`: the desktops a create may name.
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name()))]
pub async fn desktops(State(app): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let d = &app.config.desktops;
    let default = d.default_choice().map(|c| c.name.clone());
    let list: Vec<DesktopEntry> = d
        .list()
        .iter()
        .map(|c| DesktopEntry {
            name: c.name.to_string(),
            title: c.title.clone(),
            default: Some(&c.name) == default.as_ref(),
        })
        .collect();
    Ok(ok(list))
}

/// `GET /hpc/openapi/v2/desktop/vnc`
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name()))]
pub async fn list(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
) -> Result<Response, ApiError> {
    Ok(ok(sessions::list(&app, &user).await?))
}

/// `DELETE /hpc/openapi/v2/desktop/vnc/{sessionId}`
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn delete(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
    id: SessionPath,
) -> Result<Response, ApiError> {
    sessions::delete(&app, &user, &id.0).await?;
    Ok(ok(serde_json::json!({})))
}

/// Options of launchurl beyond the SCNet API (clients that do not know them send none).
#[derive(Debug, serde::Deserialize)]
pub struct LaunchOptions {
    #[serde(rename = "viewOnly")]
    view_only: Option<String>,
}

/// `GET /hpc/openapi/v2/desktop/vnc/{sessionId}/launchurl[?viewOnly=true]`
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn launch_url(
    State(app): State<AppState>,
    _: V2,
    user: AuthUser,
    id: SessionPath,
    QueryOf(opts): QueryOf<LaunchOptions>,
) -> Result<Response, ApiError> {
    let view_only = match opts.view_only.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "viewOnly must be true or false, not {other:?}"
            )));
        }
    };
    let started = std::time::Instant::now();
    let url = sessions::launch_url(&app, &user, &id.0, view_only).await;
    app.metrics.launchurl_seconds.observe(started.elapsed());
    Ok(ok(url?))
}

/// Options of a screenshot.
#[derive(Debug, serde::Deserialize)]
pub struct ScreenshotOptions {
    width: Option<String>,
}

/// `GET /hpcdesk/v1/desktop/vnc/{sessionId}/screenshot[?width=320]`: a PNG (`image/png`);
/// errors are the usual envelope.
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn screenshot(
    State(app): State<AppState>,
    user: AuthUser,
    id: SessionPath,
    QueryOf(opts): QueryOf<ScreenshotOptions>,
) -> Result<Response, ApiError> {
    use hpcdesk_gateway::screenshot::WIDTHS;
    let width = match opts.width.as_deref() {
        None => 320,
        Some(w) => w
            .parse::<u16>()
            .ok()
            .filter(|w| WIDTHS.contains(w))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "width must be a whole number of pixels from {} to {}, not {w:?}",
                    WIDTHS.start(),
                    WIDTHS.end()
                ))
            })?,
    };
    let png = sessions::screenshot(&app, &user, &id.0, width).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/png"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// `by` of an extend, from the query string or a JSON object body (`{"by": "1h"}`); neither:
/// `lifecycle.extend_by`.
pub fn extension_of(
    app: &AppState,
    query: Option<String>,
    body: &[u8],
) -> Result<std::time::Duration, ApiError> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let from_body = if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::InvalidParameter(format!("the body is not valid JSON: {e}")))?;
        match v.get("by") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::InvalidParameter(
                    "by must be a string such as \"1h\"".into(),
                ));
            }
        }
    } else {
        None
    };
    match from_body.or(query) {
        Some(by) => sessions::parse_extension(&by),
        None => Ok(app.config.lifecycle.extend_by.0),
    }
}

/// The query of an extend.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ExtendQuery {
    by: Option<String>,
}

/// `POST /hpcdesk/v1/desktop/vnc/{sessionId}/extend[?by=1h]`, or `{"by": "1h"}`.
#[tracing::instrument(level = "debug", skip_all, fields(user = %user.name(), session = %id.0))]
pub async fn extend(
    State(app): State<AppState>,
    user: AuthUser,
    id: SessionPath,
    QueryOf(q): QueryOf<ExtendQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let by = extension_of(&app, q.by, &body)?;
    Ok(ok(sessions::extend(&app, &user, &id.0, by).await?))
}
