//! The desktop lifecycle against real Xvnc: create → RFB with VNC auth → list → launch URL
//! → delete → nothing left.

use std::time::Duration;

use base64::Engine;
use hpcdesk_core::seal::ServerKey;

use crate::helpers::*;

fn server_key(app: &TestApp) -> ServerKey {
    let secret = std::fs::read_to_string(app.dir.path().join("data/server.key")).unwrap();
    ServerKey::from_secret(secret.trim().as_bytes())
}

#[test]
fn a_desktop_is_created_listed_opened_and_deleted_with_nothing_left_behind() {
    if !real_parts("desktop lifecycle") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("alice");
    let user = compute_user();

    let created = app.create(&token);
    assert_eq!(
        created["code"],
        "0",
        "create: {created}\n{}",
        app.log_text()
    );
    let s = &created["data"];
    let display = s["displayNumber"].as_u64().unwrap();
    let id = format!("{}--{user}--SIG--{display}", app.node);
    assert_eq!(s["sessionId"], id.as_str());
    assert_eq!(s["status"], "running");
    assert_eq!(s["statusReason"], "");
    assert_eq!(s["hostName"], app.node.as_str());
    assert_eq!(s["userName"], user.as_str());
    assert_eq!(s["geometry"], "1024x768");
    assert_eq!(s["connections"], 0);
    assert!((20..=99).contains(&display));
    chrono::DateTime::parse_from_rfc3339(s["createTime"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(s["lastActiveTime"].as_str().unwrap()).unwrap();

    // The desktop is a real RFB server that demands VNC authentication, and only that.
    let port = 5900 + display as u16;
    let (banner, types) = rfb_security_types(port);
    assert_eq!(banner, "RFB 003.008\n");
    assert_eq!(types, vec![2], "only VncAuth may be offered");
    assert_eq!(rfb_auth(port, b"wrongpw1"), 1, "a wrong password must fail");
    let procs_before = app.desktop_pids(display);
    assert!(
        procs_before.len() >= 2,
        "Xvnc and the desktop processes should run: {procs_before:?}"
    );

    let listed = app.list(&token);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sessionId"], id.as_str());
    assert_eq!(listed[0]["status"], "running");

    // The launch URL has the documented shape and its mm opens to the real VNC password.
    let launch = app.launch_url(&token, &id);
    assert_eq!(launch["code"], "0", "{launch}");
    assert_eq!(launch["data"]["withDomain"], false);
    let url = launch["data"]["novncUrl"].as_str().unwrap();
    let rest = url
        .strip_prefix("/vnc.html?path=/vncws?token=")
        .unwrap_or_else(|| panic!("unexpected launch URL {url}"));
    let (grant, rest) = rest.split_once("&mm=").unwrap();
    let (mm, tail) = rest.split_once('&').unwrap();
    assert_eq!(tail, "resize=remote");
    // A signed grant: URL-safe base64 of its claims and their tag.
    assert!(
        grant.len() == 67
            && grant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "grant token {grant}"
    );
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE
            .decode(mm)
            .unwrap()
            .len(),
        8 + 16
    );
    let password = server_key(&app).open_for_grant(grant, mm).unwrap();
    assert_eq!(password.len(), 8);
    assert_eq!(
        rfb_auth(port, &password),
        0,
        "mm must hold the desktop's password"
    );
    // Another launch URL is another grant.
    let again = app.launch_url(&token, &id);
    assert_ne!(again["data"]["novncUrl"], launch["data"]["novncUrl"]);

    let xvnc = app.xvnc_pids();
    assert_eq!(xvnc.len(), 1);
    let deleted = app.delete(&token, &id);
    assert_eq!(
        deleted,
        serde_json::json!({"code": "0", "msg": "success", "data": {}})
    );
    assert!(
        eventually(Duration::from_secs(3), || app
            .desktop_pids(display)
            .is_empty()),
        "processes of the desktop are left: {:?}",
        app.desktop_pids(display)
    );
    assert!(app.xvnc_pids().is_empty());
    // The lock file is gone, or (tests run in parallel) held by some newer server.
    let lock = std::fs::read_to_string(format!("/tmp/.X{display}-lock")).unwrap_or_default();
    assert_ne!(lock.trim(), xvnc[0].to_string(), "stale X lock left behind");
    assert!(app.list(&token).is_empty());
    assert_eq!(app.launch_url(&token, &id)["code"], "815010");
    assert_eq!(app.delete(&token, &id)["code"], "815010");
}

#[test]
fn creating_twice_or_concurrently_yields_one_session() {
    if !real_parts("idempotent create") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("bob");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| {
                    let v = app.create(&token);
                    assert_eq!(v["code"], "0", "{v}");
                    v["data"]["sessionId"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(app.xvnc_pids().len(), 1, "exactly one Xvnc");
    let again = app.create(&token);
    assert_eq!(again["data"]["sessionId"], ids[0].as_str());
    assert_eq!(app.list(&token).len(), 1);
    assert_eq!(app.delete(&token, &ids[0])["code"], "0");
}

#[test]
fn an_admin_lists_and_deletes_every_session() {
    if !real_parts("admin role") {
        return;
    }
    let app = TestApp::spawn();
    let carol = app.token("carol");
    let admin = token_with("root-admin", &compute_user(), |c| c.role = "9".into());
    let id = app.create(&carol)["data"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let all = app.list(&admin);
    assert!(all.iter().any(|s| s["sessionId"] == id.as_str()));
    // Launch URLs are audited with whoever asked for them.
    assert_eq!(app.launch_url(&carol, &id)["code"], "0");
    assert_eq!(app.launch_url(&admin, &id)["code"], "0");
    // A launch URL's line is queued for the audit writer's next commit, not waited for.
    let issued_by = |user: &str| -> Vec<serde_json::Value> {
        audit(&app, user)
            .into_iter()
            .filter(|e| e["kind"] == "launch_url_issued")
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || issued_by("carol").len() == 1
            && issued_by("root-admin").len() == 1),
        "one launch URL line each: {:?} {:?}",
        issued_by("carol"),
        issued_by("root-admin")
    );
    let by_admin = &issued_by("root-admin")[0];
    assert_eq!(by_admin["sessionId"], id.as_str());
    assert_eq!(by_admin["detail"], "owner carol");
    assert!(
        app.list(&app.token("dave")).is_empty(),
        "users see only their own"
    );
    assert_eq!(app.delete(&admin, &id)["code"], "0");
    assert!(app.list(&carol).is_empty());
}
