//! In-process tests of the router (`oneshot`, no socket): every SCNet code the API answers
//! with, produced the way a portal or a browser would produce it, with its HTTP status and
//! `msg`; and that a refused request changed nothing.

mod support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use hpcdesk_launcher::LaunchError;
use hpcdesk_launcher::fake::{FakeLauncher, Plan};
use support::{DESKTOPS, call, service, token, token_with_role};

/// The viewer socket's path and query (`/vncws?token=…&mm=…`) of the launch URL `launchurl`
/// answers.
async fn viewer_socket(app: &hpcdesk_server::AppState, token: &str, launchurl: &str) -> String {
    let url = call(app, Method::GET, launchurl, Some(token), "").await;
    let novnc = url.json["data"]["novncUrl"].as_str().unwrap();
    let path = novnc.split_once("path=").unwrap().1;
    path.split("&resize").next().unwrap().to_owned()
}

fn fake() -> Arc<FakeLauncher> {
    Arc::new(FakeLauncher::new(Plan::Ready { port: 5901 }))
}

#[tokio::test]
async fn a_create_answers_0_with_the_running_session_and_list_shows_it() {
    let app = service(fake(), &[]).await;
    let t = token("alice");
    let a = call(&app, Method::PUT, DESKTOPS, Some(&t), "{}").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "0"), "{}", a.json);
    assert_eq!(a.json["data"]["status"], "running");
    assert_eq!(a.json["data"]["sessionId"], "fake--alice--SIG--1");
    let l = call(&app, Method::GET, DESKTOPS, Some(&t), "").await;
    assert_eq!(l.code(), "0");
    assert_eq!(l.json["data"][0]["sessionId"], "fake--alice--SIG--1");
    let url = call(
        &app,
        Method::GET,
        &format!("{DESKTOPS}/fake--alice--SIG--1/launchurl"),
        Some(&t),
        "",
    )
    .await;
    assert_eq!(url.code(), "0");
    let novnc = url.json["data"]["novncUrl"].as_str().unwrap();
    assert!(novnc.starts_with("/vnc.html?path=/vncws?token="), "{novnc}");
}

#[tokio::test]
async fn a_panic_inside_a_start_is_10001_internal_error_and_says_nothing_more() {
    let f = fake();
    f.plan("alice", Plan::Panic);
    let app = service(f, &[]).await;
    let a = call(&app, Method::PUT, DESKTOPS, Some(&token("alice")), "").await;
    assert_eq!(
        (a.status, a.code(), a.msg()),
        (StatusCode::OK, "10001", "internal error")
    );
}

#[tokio::test]
async fn a_missing_token_is_10003() {
    let app = service(fake(), &[]).await;
    let a = call(&app, Method::GET, DESKTOPS, None, "").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "10003"));
    assert!(a.msg().contains("token"), "{}", a.msg());
}

#[tokio::test]
async fn a_malformed_session_id_is_10004_and_so_are_unknown_routes_and_methods() {
    let app = service(fake(), &[]).await;
    let t = token("alice");
    let a = call(
        &app,
        Method::DELETE,
        &format!("{DESKTOPS}/not-an-id"),
        Some(&t),
        "",
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::OK, "10004"),
        "{}",
        a.json
    );
    let a = call(&app, Method::GET, "/hpc/openapi/v2/nothing", Some(&t), "").await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "10004"));
    let a = call(&app, Method::POST, DESKTOPS, Some(&t), "").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "10004")
    );
    assert!(a.msg().contains("POST"), "{}", a.msg());
}

#[tokio::test]
async fn another_users_session_and_a_refused_account_are_10008_and_change_nothing() {
    let f = fake();
    f.refuse("daemon");
    let app = service(f.clone(), &[]).await;
    let alice = token("alice");
    call(&app, Method::PUT, DESKTOPS, Some(&alice), "").await;
    let id = format!("{DESKTOPS}/fake--alice--SIG--1");
    let bob = token("bob");
    for (m, uri) in [
        (Method::DELETE, id.clone()),
        (Method::GET, format!("{id}/launchurl")),
    ] {
        let a = call(&app, m, &uri, Some(&bob), "").await;
        assert_eq!((a.status, a.code()), (StatusCode::OK, "10008"), "{uri}");
        assert!(a.msg().contains("another user"), "{}", a.msg());
    }
    let a = call(&app, Method::PUT, DESKTOPS, Some(&token("daemon")), "").await;
    assert_eq!(a.code(), "10008");
    assert_eq!(f.starts(), 1, "only alice's start ran");
    let l = call(&app, Method::GET, DESKTOPS, Some(&alice), "").await;
    assert_eq!(
        l.json["data"][0]["status"], "running",
        "alice's desktop is untouched"
    );
    assert!(
        !f.calls()
            .iter()
            .any(|c| matches!(c, hpcdesk_launcher::fake::Call::Stop { .. }))
    );
}

/// A query string that does not fit (a parameter given twice, a flag that is not one) is
/// 10004 in the envelope like every other bad input, never a plain-text 400 (found by
/// schemathesis).
#[tokio::test]
async fn a_query_string_that_does_not_fit_is_10004_in_the_envelope() {
    let app = service(fake(), &[]).await;
    let t = token("alice");
    let id = "fake--alice--SIG--1";
    for path in [
        format!("/hpcdesk/v1/desktop/vnc/{id}/screenshot?width=320&width=640"),
        format!("{DESKTOPS}/{id}/launchurl?viewOnly=true&viewOnly=false"),
        format!("{DESKTOPS}?geometry=800x600&geometry=1024x768"),
    ] {
        let method = if path.starts_with(DESKTOPS) && !path.contains("launchurl") {
            Method::PUT
        } else {
            Method::GET
        };
        let a = call(&app, method, &path, Some(&t), "").await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::OK, "10004"),
            "{path}: {}",
            a.json
        );
        assert!(a.msg().contains("duplicate field"), "{path}: {}", a.msg());
        assert_eq!(a.json["data"], "");
    }
    // Nothing was created by the refused create.
    let l = call(&app, Method::GET, DESKTOPS, Some(&t), "").await;
    assert_eq!(l.json["data"], serde_json::json!([]));
}

#[tokio::test]
async fn another_api_version_is_10009() {
    let app = service(fake(), &[]).await;
    let a = call(
        &app,
        Method::GET,
        "/hpc/openapi/v3/desktop/vnc",
        Some(&token("alice")),
        "",
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "10009"));
}

#[tokio::test]
async fn a_role_without_a_mapping_is_10010() {
    let app = service(fake(), &[]).await;
    let a = call(
        &app,
        Method::GET,
        DESKTOPS,
        Some(&token_with_role("alice", "7")),
        "",
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::OK, "10010"),
        "{}",
        a.json
    );
}

#[tokio::test]
async fn calls_over_the_users_rate_are_10011_with_retry_after() {
    let app = service(
        fake(),
        &[
            ("HPCDESK_LIMITS__USER_PER_SECOND", "1"),
            ("HPCDESK_LIMITS__USER_BURST", "1"),
        ],
    )
    .await;
    let t = token("alice");
    assert_eq!(
        call(&app, Method::GET, DESKTOPS, Some(&t), "").await.code(),
        "0"
    );
    let a = call(&app, Method::GET, DESKTOPS, Some(&t), "").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "10011"));
    assert!(a.headers.contains_key("retry-after"));
    // Another user is not held up by alice's calls.
    assert_eq!(
        call(&app, Method::GET, DESKTOPS, Some(&token("bob")), "")
            .await
            .code(),
        "0"
    );
}

/// A create by alice with a 4 KiB body (over the 1 KiB limit the tests that send it set).
async fn oversized_create(app: &hpcdesk_server::AppState) -> support::Answer {
    call(
        app,
        Method::PUT,
        DESKTOPS,
        Some(&token("alice")),
        vec![b'x'; 4096],
    )
    .await
}

#[tokio::test]
async fn a_body_over_the_limit_is_10012_and_starts_nothing() {
    let f = fake();
    let app = service(f.clone(), &[("HPCDESK_LIMITS__MAX_BODY_BYTES", "1024")]).await;
    let a = oversized_create(&app).await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "10012"));
    assert_eq!(f.starts(), 0);
}

#[tokio::test]
async fn no_node_with_room_is_815201_and_a_failed_start_815008_with_the_launchers_words() {
    let f = fake();
    f.plan(
        "alice",
        Plan::Fail(LaunchError::NoCapacity(
            "every node is full (n1: 20 desktops)".into(),
        )),
    );
    f.plan(
        "bob",
        Plan::Fail(LaunchError::Desktop("Xvnc: (EE) no fonts".into())),
    );
    f.plan(
        "carol",
        Plan::Fail(LaunchError::Scheduler("sbatch: invalid partition".into())),
    );
    let app = service(f, &[]).await;
    let a = call(&app, Method::PUT, DESKTOPS, Some(&token("alice")), "").await;
    assert_eq!(
        (a.code(), a.msg()),
        ("815201", "every node is full (n1: 20 desktops)")
    );
    let b = call(&app, Method::PUT, DESKTOPS, Some(&token("bob")), "").await;
    assert_eq!((b.code(), b.msg()), ("815008", "Xvnc: (EE) no fonts"));
    let c = call(&app, Method::PUT, DESKTOPS, Some(&token("carol")), "").await;
    assert_eq!((c.code(), c.msg()), ("815008", "sbatch: invalid partition"));
    // A failed start that had no place is not listed; the caller may simply try again.
    let l = call(&app, Method::GET, DESKTOPS, Some(&token("bob")), "").await;
    assert_eq!(l.json["data"], serde_json::json!([]));
}

#[tokio::test]
async fn an_unknown_session_is_815010() {
    let app = service(fake(), &[]).await;
    let a = call(
        &app,
        Method::DELETE,
        &format!("{DESKTOPS}/fake--alice--SIG--9"),
        Some(&token("alice")),
        "",
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "815010"));
}

#[tokio::test]
async fn the_viewer_socket_refuses_bad_links_with_403_and_plain_words() {
    let app = service(fake(), &[]).await;
    let a = call(&app, Method::GET, "/vncws", None, "").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "10003"));
    let a = call(&app, Method::GET, "/vncws?token=nope&mm=nope", None, "").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "10008"));
    assert_eq!(a.msg(), "the launch link is not valid");
}

#[tokio::test]
async fn a_deleted_sessions_link_is_refused_as_deleted() {
    let f = fake();
    let app = service(f.clone(), &[]).await;
    let t = token("alice");
    call(&app, Method::PUT, DESKTOPS, Some(&t), "").await;
    let id = format!("{DESKTOPS}/fake--alice--SIG--1");
    let ws = viewer_socket(&app, &t, &format!("{id}/launchurl")).await;
    // Before the delete the link checks out (a plain GET, as the viewer page does).
    assert_eq!(call(&app, Method::GET, &ws, None, "").await.code(), "0");
    assert_eq!(
        call(&app, Method::DELETE, &id, Some(&t), "").await.code(),
        "0"
    );
    let a = call(&app, Method::GET, &ws, None, "").await;
    assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "10008"));
    assert_eq!(a.msg(), "the desktop session of this link was deleted");
}

#[tokio::test]
async fn a_node_that_cannot_stop_the_desktop_leaves_the_session_as_it_was() {
    let f = fake();
    let app = service(f.clone(), &[]).await;
    let t = token("alice");
    call(&app, Method::PUT, DESKTOPS, Some(&t), "").await;
    f.fail_stops(true);
    let id = format!("{DESKTOPS}/fake--alice--SIG--1");
    let a = call(&app, Method::DELETE, &id, Some(&t), "").await;
    assert_eq!((a.code(), a.msg()), ("815008", "the node does not answer"));
    let l = call(&app, Method::GET, DESKTOPS, Some(&t), "").await;
    assert_eq!(l.json["data"][0]["status"], "running", "nothing lost");
    f.fail_stops(false);
    assert_eq!(
        call(&app, Method::DELETE, &id, Some(&t), "").await.code(),
        "0"
    );
}

#[tokio::test]
async fn readiness_and_health_answer_with_envelopes() {
    let app = service(fake(), &[]).await;
    let r = call(&app, Method::GET, "/readyz", None, "").await;
    assert_eq!((r.status, r.code()), (StatusCode::OK, "0"));
    let h = call(&app, Method::GET, "/healthz", None, "").await;
    assert_eq!(h.json["data"]["launcher"], "fake");
    assert_eq!(h.json["data"]["store"], "ok");
}

#[tokio::test]
async fn create_options_are_checked_before_anything_starts() {
    let f = fake();
    let app = service(f.clone(), &[("HPCDESK_LAUNCHER__DESKTOP", "xterm")]).await;
    let t = token("alice");
    for (path, body, says) in [
        (
            DESKTOPS.to_owned(),
            r#"{"desktop":"xfce"}"#,
            "desktop must be one of default",
        ),
        (format!("{DESKTOPS}?geometry=1x1"), "", "between 640x480"),
        (DESKTOPS.to_owned(), "{nope", "not valid JSON"),
    ] {
        let a = call(&app, Method::PUT, &path, Some(&t), body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::OK, "10004"),
            "{}",
            a.json
        );
        assert!(a.msg().contains(says), "{}", a.msg());
    }
    assert!(
        f.calls().is_empty(),
        "a refused create reached the launcher"
    );
    let a = call(&app, Method::PUT, DESKTOPS, Some(&t), "some text").await;
    assert_eq!(a.code(), "0", "{}", a.json);
    assert_eq!(a.json["data"]["desktop"], "default");
    let d = call(&app, Method::GET, "/hpcdesk/v1/desktops", Some(&t), "").await;
    assert_eq!(
        d.json["data"],
        serde_json::json!([{"name": "default", "title": "Desktop", "default": true}])
    );
}

#[tokio::test]
async fn a_screenshot_of_a_desktop_that_is_not_running_is_815008_and_of_none_815010() {
    let f = fake();
    f.plan(
        "alice",
        Plan::Queued {
            steps: vec![hpcdesk_launcher::Progress::Pending("Resources".into())],
        },
    );
    // A create answers `pending` once the start timeout has passed with the job queued.
    let app = service(f, &[("HPCDESK_LAUNCHER__START_TIMEOUT", "1s")]).await;
    let t = token("alice");
    let a = call(&app, Method::PUT, DESKTOPS, Some(&t), "").await;
    assert_eq!(a.json["data"]["status"], "pending", "{}", a.json);
    let id = a.json["data"]["sessionId"].as_str().unwrap().to_owned();
    let shot = |id: &str| format!("/hpcdesk/v1/desktop/vnc/{id}/screenshot");
    let s = call(&app, Method::GET, &shot(&id), Some(&t), "").await;
    assert_eq!(s.code(), "815008", "{}", s.json);
    assert!(s.msg().contains("is pending"), "{}", s.msg());
    let s = call(&app, Method::GET, &shot("fake--bob--SIG--3"), Some(&t), "").await;
    assert_eq!(s.code(), "815010", "{}", s.json);
    let s = call(&app, Method::GET, &shot("a--b"), Some(&t), "").await;
    assert_eq!(s.code(), "10004", "{}", s.json);
    let s = call(&app, Method::GET, &shot(&id), None, "").await;
    assert_eq!(s.code(), "10003", "{}", s.json);
}

/// Every metric the shipped Grafana dashboard queries is one `/metrics` serves.
#[tokio::test]
async fn the_grafana_dashboard_asks_only_for_metrics_that_exist() {
    let app = service(fake(), &[]).await;
    let r = call(&app, Method::GET, "/metrics", None, "").await;
    let served = r.text;
    let dashboard = include_str!("../../../packaging/grafana-dashboard.json");
    let v: serde_json::Value = serde_json::from_str(dashboard).unwrap();
    let mut names = Vec::new();
    for panel in v["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("hpcdesk_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    for name in names {
        assert!(
            served.lines().any(|l| l.starts_with(&name)),
            "the dashboard asks for {name}, which /metrics does not serve"
        );
    }
}

#[tokio::test]
async fn a_jobs_ready_call_needs_its_own_token_and_only_then_wakes_the_waiters() {
    let app = service(fake(), &[]).await;
    let woken = app.job_wakes.subscribe();
    let path = hpcdesk_server::jobs::READY_PATH;
    let a = call(&app, Method::POST, &format!("{path}?marker=m1"), None, "").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::OK, "10004"),
        "{}",
        a.json
    );
    assert_eq!(a.msg(), "marker and token are required");
    let other = hpcdesk_server::jobs::ready_call(Some(&String::new()), &app.server_key, "m2")
        .unwrap()
        .token;
    let a = call(
        &app,
        Method::POST,
        &format!("{path}?marker=m1&token={other}"),
        None,
        "",
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::OK, "10008"),
        "{}",
        a.json
    );
    assert!(!woken.has_changed().unwrap(), "a refused call wakes no one");
    let own = hpcdesk_server::jobs::ready_call(Some(&String::new()), &app.server_key, "m1")
        .unwrap()
        .token;
    let a = call(
        &app,
        Method::POST,
        &format!("{path}?marker=m1&token={own}"),
        None,
        "",
    )
    .await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, "0"), "{}", a.json);
    assert!(woken.has_changed().unwrap(), "the waiters look now");
    let a = call(&app, Method::GET, path, None, "").await;
    assert_eq!(a.code(), "10004", "GET is not allowed: {}", a.json);
}

#[tokio::test]
async fn a_launch_link_changed_in_any_way_is_not_valid() {
    let app = service(fake(), &[]).await;
    let t = token("alice");
    call(&app, Method::PUT, DESKTOPS, Some(&t), "").await;
    let id = format!("{DESKTOPS}/fake--alice--SIG--1");
    let ws = viewer_socket(&app, &t, &format!("{id}/launchurl?viewOnly=true")).await;
    assert_eq!(call(&app, Method::GET, &ws, None, "").await.code(), "0");
    // The token's second byte says view-only: flipping it (or any other) voids the link.
    let token = ws
        .split_once("token=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap();
    for i in [2usize, 5, 30, 66] {
        let mut bad = token.as_bytes().to_vec();
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = ws.replace(token, std::str::from_utf8(&bad).unwrap());
        let a = call(&app, Method::GET, &bad, None, "").await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, "10008"),
            "char {i}"
        );
        assert_eq!(a.msg(), "the launch link is not valid");
    }
}

/// Every answer is counted by its SCNet code in `/metrics`, refusals made before any handler
/// runs (10003, 10012) included.
#[tokio::test]
async fn answers_are_counted_by_code_in_metrics() {
    let app = service(fake(), &[("HPCDESK_LIMITS__MAX_BODY_BYTES", "1024")]).await;
    let count = |text: &str, code: &str| -> u64 {
        let series = format!("hpcdesk_api_responses_total{{code=\"{code}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    let before = call(&app, Method::GET, "/metrics", None, "").await.text;
    for _ in 0..2 {
        let ok = call(&app, Method::GET, DESKTOPS, Some(&token("alice")), "").await;
        assert_eq!(ok.code(), "0");
    }
    assert_eq!(
        call(&app, Method::GET, DESKTOPS, None, "").await.code(),
        "10003"
    );
    let big = oversized_create(&app).await;
    assert_eq!(big.code(), "10012");
    let after = call(&app, Method::GET, "/metrics", None, "").await.text;
    assert_eq!(count(&after, "0") - count(&before, "0"), 2);
    assert_eq!(count(&after, "10003") - count(&before, "10003"), 1);
    assert_eq!(count(&after, "10012") - count(&before, "10012"), 1);
}
