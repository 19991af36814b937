//! Time limits against real desktops: `endTime`, extending within the site's limits, and
//! ending on time (the local launcher's `lifecycle.max_lifetime` here; Slurm's in slurm.rs).

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use crate::helpers::*;
use crate::viewer::{Connect, connect, runtime, ws_url};

pub fn time(v: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time ({e}): {v}"))
}

pub fn extend(app: &TestApp, token: &str, id: &str, by: &str) -> Value {
    app.call_with(
        "POST",
        &format!("/hpcdesk/v1/desktop/vnc/{id}/extend"),
        Some(token),
        |r| r.body(format!(r#"{{"by":"{by}"}}"#)),
    )
    .1
}

#[test]
fn a_local_desktop_ends_at_its_lifetime_with_viewers_closed_and_an_extended_one_lives_on() {
    if !real_parts("time limit") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("HPCDESK_LIFECYCLE__MAX_LIFETIME".into(), "20s".into()),
            ("HPCDESK_LIFECYCLE__MAX_EXTEND".into(), "90s".into()),
        ],
        ..Options::default()
    });
    let (ta, tb) = (app.token("tara"), app.token("uma"));
    let a = app.create(&ta);
    assert_eq!(a["code"], "0", "{a}\n{}", app.log_text());
    let a = &a["data"];
    let lifetime = time(&a["endTime"]) - time(&a["createTime"]);
    assert!(
        (19..=21).contains(&lifetime.num_seconds()),
        "endTime is not 20 s after creation: {a}"
    );
    let (id_a, display_a) = (
        a["sessionId"].as_str().unwrap().to_owned(),
        a["displayNumber"].as_u64().unwrap(),
    );
    let b = app.create(&tb)["data"].clone();
    let id_b = b["sessionId"].as_str().unwrap().to_owned();

    // Refusals change nothing: another user's, a bad `by`, past max_extend.
    let other = app.token("mallory");
    assert_eq!(extend(&app, &other, &id_a, "1m")["code"], "10008");
    let bad = extend(&app, &tb, &id_b, "soon");
    assert_eq!(bad["code"], "10004", "{bad}");
    assert!(bad["msg"].as_str().unwrap().contains("30m or 1h"), "{bad}");
    let too_much = extend(&app, &tb, &id_b, "2m");
    assert_eq!(too_much["code"], "10004", "{too_much}");
    let msg = too_much["msg"].as_str().unwrap();
    assert!(
        msg.contains("at most") && msg.contains("lifecycle.max_extend 1m 30s"),
        "{msg}"
    );
    assert_eq!(
        app.list(&tb)[0]["endTime"],
        b["endTime"],
        "a refusal moved endTime"
    );

    // Extended by a minute with the CLI: endTime moves by a minute.
    let (ok, out, err) = run_cli(
        &["desktop", "--api", &app.base, "extend", &id_b, "1m"],
        &[("HPCDESK_TOKEN", tb.as_str())],
    );
    assert!(ok, "{err}");
    assert!(out.contains("ENDS"), "{out}");
    let moved = time(&app.list(&tb)[0]["endTime"]) - time(&b["endTime"]);
    assert_eq!(moved.num_seconds(), 60, "{out}");

    // A's viewer is closed with 4001 when its lifetime is over; the session is stopped
    // with the reason, its desktop gone, and its link says why.
    let link = app.launch_url(&ta, &id_a)["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = runtime();
    let Connect::Open(mut v) = rt.block_on(connect(&ws_url(&app.base, &link))) else {
        panic!("viewer refused")
    };
    let code = rt.block_on(async {
        v.handshake().await;
        tokio::time::timeout(Duration::from_secs(30), v.closed()).await
    });
    assert_eq!(code.expect("the viewer was not closed in time"), Some(4001));
    // Viewers are told first, then the desktop is stopped, then the session ends.
    let mut ended = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            ended = app.list(&ta);
            ended[0]["status"] == "stopped"
        }),
        "{ended:?}"
    );
    assert!(
        ended[0]["statusReason"]
            .as_str()
            .unwrap()
            .starts_with("time limit reached"),
        "{ended:?}"
    );
    assert!(eventually(Duration::from_secs(10), || app
        .desktop_pids(display_a)
        .is_empty()));
    let (status, check) = app.call("GET", &link_path(&link), None);
    assert_eq!(status, 403, "{check}");
    assert!(
        check["msg"].as_str().unwrap().contains("time limit"),
        "{check}"
    );

    // B, extended, outlives A's end and its own first one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.list(&tb)[0]["status"], "running");
    assert_eq!(
        metric(&app, "hpcdesk_sessions_ended_total{how=\"time_limit\"}"),
        1.0
    );
    assert_eq!(metric(&app, "hpcdesk_extends_granted_total"), 1.0);
    assert_eq!(metric(&app, "hpcdesk_extends_refused_total"), 1.0);
    let kinds = kinds(&audit(&app, "uma"));
    assert!(kinds.contains(&"session_extended".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"extend_refused".to_owned()), "{kinds:?}");
    assert_eq!(app.delete(&tb, &id_b)["code"], "0");
}

/// The desktop's D-Bus session address, from the environment of one of its processes.
fn session_bus(app: &TestApp, display: u64) -> Option<String> {
    app.desktop_pids(display).into_iter().find_map(|p| {
        environ(p).into_iter().find_map(|kv| {
            kv.strip_prefix("DBUS_SESSION_BUS_ADDRESS=")
                .map(str::to_owned)
        })
    })
}

#[test]
fn the_desktop_is_notified_inside_before_its_time_limit() {
    if !real_parts("time limit notification") {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        let msg = "time limit notification: needs root to watch the user's D-Bus session";
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return;
    }
    // The default desktop (XFCE, with its notification daemon); both warnings (warn_before and
    // 5 minutes) are due at once, 20 s after the start.
    let app = TestApp::spawn_with(Options {
        default_desktop: None,
        env: vec![
            ("HPCDESK_LIFECYCLE__MAX_LIFETIME".into(), "320s".into()),
            ("HPCDESK_LIFECYCLE__WARN_BEFORE".into(), "300s".into()),
        ],
        ..Options::default()
    });
    let token = app.token("wren");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let display = created["data"]["displayNumber"].as_u64().unwrap();
    let mut bus = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            bus = session_bus(&app, display);
            bus.is_some()
        }),
        "the desktop has no D-Bus session"
    );
    // Watch the session's notifications as the user until the warning has been due a while.
    let out = std::process::Command::new("runuser")
        .args(["-u", &compute_user(), "--", "timeout", "35", "dbus-monitor"])
        .arg("interface='org.freedesktop.Notifications',member='Notify'")
        .env("DBUS_SESSION_BUS_ADDRESS", bus.unwrap())
        .output()
        .expect("dbus-monitor");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.contains("This desktop ends in") && seen.contains("hpcdesk"),
        "no notification in the desktop:\n{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One notification for the two thresholds crossed together, and it says how long.
    assert_eq!(seen.matches("This desktop ends in").count(), 1, "{seen}");
    assert!(seen.contains("ends in 5 min"), "{seen}");
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
