//! `GET /metrics`: Prometheus text exposition of what an operator watches — API answers by
//! SCNet code, desktop starts, viewer connections and gateway bytes (counters), and sessions by
//! state and open viewers (gauges, read at scrape time). Counters are plain atomics; nothing
//! here is on the gateway's per-byte path (bytes are added when a viewer disconnects).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hpcdesk_core::ApiCode;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Default)]
pub struct Metrics {
    responses: [AtomicU64; ApiCode::ALL.len()],
    pub desktops_started: AtomicU64,
    pub desktop_start_failures: AtomicU64,
    pub viewers_connected: AtomicU64,
    pub gateway_bytes_down: AtomicU64,
    pub gateway_bytes_up: AtomicU64,
    /// Connections closed at accept because too many requests were incomplete.
    pub connections_refused: AtomicU64,
    /// Time-limit extensions granted and refused.
    pub extends_granted: AtomicU64,
    pub extends_refused: AtomicU64,
    /// Slurm jobs' calls saying their desktop is ready: accepted, and refused (bad token).
    pub job_ready_calls: AtomicU64,
    pub job_ready_refused: AtomicU64,
    ended: [AtomicU64; ENDINGS.len()],
    /// How long creates and launch URLs took to answer (whatever the answer).
    pub create_seconds: hpcdesk_core::histogram::Histogram,
    pub launchurl_seconds: hpcdesk_core::histogram::Histogram,
}

/// How sessions end (`sessions::Ending`), as metric labels.
const ENDINGS: [&str; 7] = [
    "deleted",
    "swept",
    "died",
    "ended_outside",
    "start_failed",
    "interrupted",
    "time_limit",
];

impl Metrics {
    /// Counts a session that ended, by how.
    pub fn session_ended(&self, how: &str) {
        if let Some(i) = ENDINGS.iter().position(|e| *e == how) {
            self.ended[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an API answer by its SCNet code (`routes::access` calls it for every answer).
    pub fn count_response(&self, code: ApiCode) {
        if let Some(i) = ApiCode::ALL.iter().position(|c| *c == code) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub async fn render(State(app): State<AppState>) -> Result<Response, ApiError> {
    let m = &app.metrics;
    let mut out = String::new();
    family(
        &mut out,
        "hpcdesk_api_responses_total",
        "counter",
        "API answers by SCNet code.",
    );
    for (code, n) in ApiCode::ALL.iter().zip(&m.responses) {
        let _ = writeln!(
            out,
            "hpcdesk_api_responses_total{{code=\"{}\"}} {}",
            code.as_str(),
            n.load(Ordering::Relaxed)
        );
    }
    m.create_seconds.render(
        &mut out,
        "hpcdesk_create_seconds",
        "Time to answer a create (a new desktop's start included).",
    );
    m.launchurl_seconds.render(
        &mut out,
        "hpcdesk_launchurl_seconds",
        "Time to answer a launch URL.",
    );
    app.gateway.registry.viewer_stats().setup.render(
        &mut out,
        "hpcdesk_viewer_setup_seconds",
        "Time from a viewer's upgrade to its relay running (desktop reached and authenticated, browser handshake done).",
    );
    let asked = app.gateway.registry.viewer_stats();
    for (name, help, counts) in [
        (
            "hpcdesk_viewer_quality_requests_total",
            "Viewers' requests for a JPEG quality level (SetEncodings), by level.",
            &asked.quality,
        ),
        (
            "hpcdesk_viewer_compression_requests_total",
            "Viewers' requests for a compression level (SetEncodings), by level.",
            &asked.compression,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for (level, n) in counts.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{level=\"{level}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    for (name, help, v) in [
        (
            "hpcdesk_desktops_started_total",
            "Desktops that became ready.",
            &m.desktops_started,
        ),
        (
            "hpcdesk_desktop_start_failures_total",
            "Desktop starts that failed.",
            &m.desktop_start_failures,
        ),
        (
            "hpcdesk_viewer_connections_total",
            "Viewer connections accepted by the gateway.",
            &m.viewers_connected,
        ),
        (
            "hpcdesk_gateway_bytes_down_total",
            "Bytes relayed desktop to viewer (counted at disconnect).",
            &m.gateway_bytes_down,
        ),
        (
            "hpcdesk_gateway_bytes_up_total",
            "Bytes relayed viewer to desktop (counted at disconnect).",
            &m.gateway_bytes_up,
        ),
        (
            "hpcdesk_http_connections_refused_total",
            "Connections closed at once because limits.max_incomplete_requests were in progress.",
            &m.connections_refused,
        ),
        (
            "hpcdesk_extends_granted_total",
            "Desktop time limits extended.",
            &m.extends_granted,
        ),
        (
            "hpcdesk_extends_refused_total",
            "Extensions refused (past the site's limits, or not possible).",
            &m.extends_refused,
        ),
        (
            "hpcdesk_job_ready_calls_total",
            "Slurm jobs that said their desktop is ready (POST /hpcdesk/v1/jobs/ready).",
            &m.job_ready_calls,
        ),
        (
            "hpcdesk_job_ready_refused_total",
            "Calls to /hpcdesk/v1/jobs/ready refused (not the job's token).",
            &m.job_ready_refused,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    family(
        &mut out,
        "hpcdesk_sessions_ended_total",
        "counter",
        "Sessions ended, by how (deleted, swept, died, ended_outside, start_failed, interrupted).",
    );
    for (how, n) in ENDINGS.iter().zip(&m.ended) {
        let _ = writeln!(
            out,
            "hpcdesk_sessions_ended_total{{how=\"{how}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let sessions = app.store.list_sessions(None).await?;
    family(
        &mut out,
        "hpcdesk_sessions",
        "gauge",
        "Listed sessions by state.",
    );
    for state in ["pending", "starting", "running", "failed", "stopped"] {
        let n = sessions
            .iter()
            .filter(|s| s.state.as_str() == state)
            .count();
        let _ = writeln!(out, "hpcdesk_sessions{{state=\"{state}\"}} {n}");
    }
    let open: u64 = app
        .gateway
        .registry
        .all()
        .iter()
        .map(|(_, a)| u64::from(a.connections))
        .sum();
    family(
        &mut out,
        "hpcdesk_viewers_open",
        "gauge",
        "Open viewer connections.",
    );
    let _ = writeln!(out, "hpcdesk_viewers_open {open}");
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
