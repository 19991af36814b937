//! Every error code the desktop API can produce, each with a bad input, and proof that the
//! refused call changed nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::helpers::*;

const VNC: &str = "/hpc/openapi/v2/desktop/vnc";

fn assert_code(resp: &(u16, Value), code: &str) {
    assert_eq!(resp.0, 200, "business errors keep HTTP 200: {resp:?}");
    assert_eq!(resp.1["code"], code, "{}", resp.1);
    assert_eq!(resp.1["data"], "", "failures carry data \"\": {}", resp.1);
    assert!(
        !resp.1["msg"].as_str().unwrap_or("").is_empty(),
        "a failure needs a message"
    );
}

/// No session exists and no desktop was started.
fn assert_nothing_changed(app: &TestApp) {
    let admin = token_with("auditor", &compute_user(), |c| c.role = "9".into());
    assert!(
        app.list(&admin).is_empty(),
        "a refused call created a session"
    );
    assert!(app.xvnc_pids().is_empty(), "a refused call started Xvnc");
}

fn forged(header: &str, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("not-a-signature")
    )
}

fn valid_claims() -> Value {
    let t = token_with("mallory", &compute_user(), |_| {});
    let payload = t.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn a_missing_token_is_10003() {
    let app = TestApp::spawn();
    assert_code(&app.call("PUT", VNC, None), "10003");
    assert_code(&app.call("GET", VNC, None), "10003");
    assert_code(&app.call("PUT", VNC, Some("")), "10003");
    assert_code(
        &app.call("GET", &format!("{VNC}/n--u--SIG--1/launchurl"), None),
        "10003",
    );
    assert_nothing_changed(&app);
}

#[test]
fn garbage_forged_none_expired_and_foreign_tokens_are_10008() {
    let app = TestApp::spawn();
    let user = compute_user();
    let other_secret = {
        let claims = hpcdesk_server::auth::claims_for(
            "mallory",
            &user,
            CLUSTER,
            "1",
            "Normal",
            chrono::Utc::now().timestamp_millis(),
            std::time::Duration::from_secs(600),
        );
        hpcdesk_server::auth::mint(
            &hpcdesk_server::config::Secret::new("not-our-secret"),
            &claims,
        )
    };
    let bad = [
        ("garbage", "garbage".to_owned()),
        ("forged signature", other_secret),
        (
            "alg none",
            forged(r#"{"alg":"none","typ":"JWT"}"#, &valid_claims()),
        ),
        (
            "alg HS512 header",
            forged(r#"{"alg":"HS512","typ":"JWT"}"#, &valid_claims()),
        ),
        (
            "expired",
            token_with("mallory", &user, |c| c.expire_time = "1686123346568".into()),
        ),
        (
            "another cluster",
            token_with("mallory", &user, |c| c.cluster_id = "99999".into()),
        ),
        (
            "disabled account",
            token_with("mallory", &user, |c| c.account_status = "Disable".into()),
        ),
        (
            "invalid computeUser",
            token_with("mallory", "../../root", |_| {}),
        ),
        (
            "owing account creating",
            token_with("mallory", &user, |c| c.account_status = "Owe".into()),
        ),
    ];
    for (what, token) in &bad {
        let r = app.call("PUT", VNC, Some(token));
        assert_eq!(r.1["code"], "10008", "{what}: {}", r.1);
        assert_code(&r, "10008");
    }
    // The seed's own token: signed for another cluster's secret, and long expired.
    let seed = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb21wdXRlVXNlciI6InNsdXJtdGVzdCIsImFjY291bnRTdGF0dXMiOiJUcmlhbCIsImNyZWF0b3IiOiJhYyIsInJvbGUiOiIxIiwiZXhwaXJlVGltZSI6IjE2ODYxMjMzNDY1NjgiLCJjbHVzdGVySWQiOiIxMTExMiIsImludm9rZXIiOiI2MDQ4Y2U3YmExNWMyYWYyZThjZWMxMjk5MWVjMTNjZiIsInVzZXIiOiJzbHVybXRlc3QiLCJ1c2VySWQiOiIxMTY1NTA0ODU0MSJ9.iQUBzN32jiCeeFuJ9lFS_XjBpxenEEupQRiyA3Ef334";
    assert_code(&app.call("GET", VNC, Some(seed)), "10008");
    // An owing account may still list.
    let owe = token_with("mallory", &user, |c| c.account_status = "Owe".into());
    assert_eq!(app.call("GET", VNC, Some(&owe)).1["code"], "0");
    assert_nothing_changed(&app);
    // No token ever reaches the log.
    let log = app.log_text();
    for (_, token) in &bad {
        assert!(!log.contains(token.as_str()), "a token was logged");
    }
}

#[test]
fn an_unmapped_role_is_10010() {
    let app = TestApp::spawn();
    let token = token_with("mallory", &compute_user(), |c| c.role = "42".into());
    assert_code(&app.call("PUT", VNC, Some(&token)), "10010");
    assert_code(&app.call("GET", VNC, Some(&token)), "10010");
    assert_nothing_changed(&app);
}

#[test]
fn other_api_versions_are_10009() {
    let app = TestApp::spawn();
    let token = app.token("mallory");
    for path in [
        "/hpc/openapi/v3/desktop/vnc",
        "/hpc/openapi/v1/desktop/vnc",
        "/hpc/openapi/v10/desktop/vnc",
    ] {
        assert_code(&app.call("PUT", path, Some(&token)), "10009");
    }
    assert_code(
        &app.call(
            "DELETE",
            "/hpc/openapi/v3/desktop/vnc/n--u--SIG--1",
            Some(&token),
        ),
        "10009",
    );
    // The version is checked before the token.
    assert_code(
        &app.call("GET", "/hpc/openapi/v3/desktop/vnc", None),
        "10009",
    );
    // Not an API at all: 404 with an envelope.
    let (status, body) = app.call("GET", "/hpc/openapi/latest/desktop/vnc", Some(&token));
    assert_eq!(status, 404);
    assert_eq!(body["code"], "10004");
    assert_nothing_changed(&app);
}

#[test]
fn malformed_session_ids_are_10004() {
    let app = TestApp::spawn();
    let token = app.token("mallory");
    for id in [
        "nonsense",
        "gv101--test--4",
        "gv101--test--SIG--x",
        "gv101--test--SIG--99999999",
        "gv101--te%20st--SIG--4",
        "gv101--test--sig--4",
        "..--..--SIG--1",
    ] {
        assert_code(
            &app.call("DELETE", &format!("{VNC}/{id}"), Some(&token)),
            "10004",
        );
        assert_code(
            &app.call("GET", &format!("{VNC}/{id}/launchurl"), Some(&token)),
            "10004",
        );
    }
    assert_nothing_changed(&app);
}

#[test]
fn unknown_session_ids_are_815010() {
    let app = TestApp::spawn();
    let token = app.token("mallory");
    let id = format!("{}--{}--SIG--4", app.node, compute_user());
    assert_code(
        &app.call("DELETE", &format!("{VNC}/{id}"), Some(&token)),
        "815010",
    );
    assert_code(
        &app.call("GET", &format!("{VNC}/{id}/launchurl"), Some(&token)),
        "815010",
    );
    assert_code(
        &app.call(
            "DELETE",
            &format!("{VNC}/gv101--test_1215--SIG--4"),
            Some(&token),
        ),
        "815010",
    );
    assert_nothing_changed(&app);
}

#[test]
fn oversized_bodies_and_headers_are_10012() {
    let app = TestApp::spawn();
    let token = app.token("mallory");
    let big = "x".repeat(70 * 1024);
    let r = app.call_with("PUT", VNC, Some(&token), |b| b.body(big.clone()));
    assert_code(&r, "10012");
    // Without a Content-Length (chunked), the body is cut at the limit all the same.
    let r = app.call_with("PUT", VNC, Some(&token), |b| {
        b.body(reqwest::blocking::Body::new(std::io::Cursor::new(
            vec![b'y'; 120 * 1024],
        )))
    });
    assert_code(&r, "10012");
    let r = app.call_with("GET", VNC, Some(&token), |b| {
        b.header("x-padding", "p".repeat(20 * 1024))
    });
    assert_code(&r, "10012");
    let r = app.call("GET", VNC, Some(&"t".repeat(9000)));
    assert_code(&r, "10012");
    // Small bodies of any kind are accepted and ignored (clients send {} or text).
    let r = app.call_with("GET", VNC, Some(&token), |b| {
        b.header("content-type", "text/plain").body("{}")
    });
    assert_eq!(r.1["code"], "0");
    assert_nothing_changed(&app);
}

#[test]
fn another_users_session_is_10008_and_stays() {
    if !real_parts("another user's session") {
        return;
    }
    let app = TestApp::spawn();
    let owner = app.token("erin");
    let intruder = app.token("frank");
    let created = app.create(&owner);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_code(
        &app.call("DELETE", &format!("{VNC}/{id}"), Some(&intruder)),
        "10008",
    );
    assert_code(
        &app.call("GET", &format!("{VNC}/{id}/launchurl"), Some(&intruder)),
        "10008",
    );
    assert!(app.list(&intruder).is_empty());
    let listed = app.list(&owner);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(app.xvnc_pids().len(), 1);
    assert_eq!(app.delete(&owner, &id)["code"], "0");
}

#[test]
fn a_failed_start_is_815008_with_the_xvnc_reason_and_is_listed() {
    if !real_parts("failed start") {
        return;
    }
    // Depth 7 is not a depth Xvnc can serve: it exits with "Couldn't add screen".
    let app = TestApp::spawn_with(Options {
        depth: 7,
        ..Options::default()
    });
    let token = app.token("gina");
    let r = app.call("PUT", VNC, Some(&token));
    assert_code(&r, "815008");
    let msg = r.1["msg"].as_str().unwrap();
    assert!(msg.contains("Couldn't add screen"), "{msg}");
    let listed = app.list(&token);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "failed");
    assert!(
        listed[0]["statusReason"]
            .as_str()
            .unwrap()
            .contains("Couldn't add screen")
    );
    assert!(app.xvnc_pids().is_empty());
    let id = listed[0]["sessionId"].as_str().unwrap().to_owned();
    assert_code(
        &app.call("GET", &format!("{VNC}/{id}/launchurl"), Some(&token)),
        "815008",
    );
    // A failed session can be cleared.
    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(app.list(&token).is_empty());
}

#[test]
fn an_account_the_launcher_cannot_serve_is_815008() {
    let app = TestApp::spawn();
    let token = token_with("henry", "no_such_account_x", |_| {});
    let r = app.call("PUT", VNC, Some(&token));
    assert_code(&r, "815008");
    assert!(
        r.1["msg"].as_str().unwrap().contains("no_such_account_x"),
        "{}",
        r.1
    );
    assert!(app.list(&token).is_empty());
    assert!(app.xvnc_pids().is_empty());
}

#[test]
fn a_node_without_a_free_display_is_815201() {
    if !real_parts("no free display") {
        return;
    }
    // Hold the RFB port of the only display the launcher may use.
    let (display, _held) = (5000..5100)
        .find_map(|d| {
            std::net::TcpListener::bind(("127.0.0.1", 5900 + d as u16))
                .ok()
                .map(|l| (d, l))
        })
        .expect("a free port to hold");
    let app = TestApp::spawn_with(Options {
        display_min: display,
        display_max: display,
        ..Options::default()
    });
    let token = app.token("kim");
    let r = app.call("PUT", VNC, Some(&token));
    assert_code(&r, "815201");
    assert!(
        r.1["msg"].as_str().unwrap().contains("no free display"),
        "{}",
        r.1
    );
    assert!(app.list(&token).is_empty());
    assert!(app.xvnc_pids().is_empty());
}

#[test]
fn the_served_openapi_document_lists_every_code_the_api_answered_here() {
    let app = TestApp::spawn();
    let resp = reqwest::blocking::get(app.url("/openapi.json")).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = resp.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = doc["components"]["schemas"]["Code"]["enum"].to_string();
    // Codes this running server really answers with, not a list copied from the document.
    let token = app.token("mallory");
    let answers = [
        app.call("PUT", VNC, None),
        app.call("PUT", VNC, Some("garbage")),
        app.call("GET", "/hpc/openapi/v9/desktop/vnc", Some(&token)),
        app.call("DELETE", &format!("{VNC}/nope--x--SIG--4"), Some(&token)),
    ];
    for (_, body) in answers {
        let code = body["code"].as_str().unwrap();
        assert_ne!(code, "0", "{body}");
        assert!(
            documented.contains(&format!("\"{code}\"")),
            "{code} is not in the document"
        );
    }
}
