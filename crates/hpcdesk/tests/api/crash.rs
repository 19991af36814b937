//! A crash of `hpcdesk serve` (SIGKILL) while many users create desktops at once loses
//! nothing and leaks nothing. After a restart, within two reconcile intervals of the last
//! interrupted start finishing, every user has either a running session with exactly one
//! Xvnc or no session and no Xvnc; every create answered before the crash still runs; each
//! user's next create succeeds with exactly one Xvnc.
//!
//! The kill lands at each point of a start, held there by the test-only pause of the agent
//! and launcher (`HPCDESK_TEST_START_PAUSE`): before the agent runs (`launch`), before Xvnc
//! (`xvnc`), between Xvnc and the desktop (`desktop`), and after the desktop but before the
//! answer (`reply`); and once at no particular point.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Users whose creates are in flight when the server dies.
const IN_FLIGHT: usize = 20;
/// Users whose creates were answered before the crash.
const ANSWERED: usize = 2;
const RECONCILE: Duration = Duration::from_secs(2);

fn admin_token() -> String {
    token_with("crash-admin", &compute_user(), |c| c.role = "9".into())
}

/// `PUT` without panicking on a connection that dies with the server: `None` then.
fn try_create(base: &str, token: &str) -> Option<Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let resp = client
        .put(format!("{base}/hpc/openapi/v2/desktop/vnc"))
        .header("token", token)
        .send()
        .ok()?;
    resp.json().ok()
}

/// Live `hpcdesk node start` agents of this app's node.
fn agents(app: &TestApp) -> usize {
    procs()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            !zombie(*p)
                && argv.windows(2).any(|w| w[0] == "node" && w[1] == "start")
                && argv
                    .windows(2)
                    .any(|w| w[0] == "--node" && w[1] == app.node)
        })
        .count()
}

/// Whether the node is settled: every listed session is running with exactly one Xvnc on
/// its display, and no other Xvnc runs; or what is not settled yet.
fn settled(app: &TestApp) -> Result<(), String> {
    let (_, v) = app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&admin_token()));
    let sessions = v["data"].as_array().cloned().unwrap_or_default();
    let displays = app.xvnc_displays();
    for s in &sessions {
        if s["status"] != "running" {
            return Err(format!("not running: {s}"));
        }
        let d = s["displayNumber"].as_u64().unwrap();
        let n = displays.iter().filter(|x| **x == d).count();
        if n != 1 {
            return Err(format!("{n} Xvnc on display :{d} of {s}"));
        }
    }
    if displays.len() != sessions.len() {
        return Err(format!(
            "{} Xvnc for {} sessions (displays {displays:?})",
            displays.len(),
            sessions.len()
        ));
    }
    Ok(())
}

/// The running session of `user`, if any: (id, display).
fn session_of(app: &TestApp, user: &str) -> Option<(String, u64)> {
    let listed = app.list(&app.token(user));
    assert!(listed.len() <= 1, "{user} has {} sessions", listed.len());
    listed.first().map(|s| {
        assert_eq!(s["status"], "running", "{s}");
        (
            s["sessionId"].as_str().unwrap().to_owned(),
            s["displayNumber"].as_u64().unwrap(),
        )
    })
}

fn creates_in_threads(app: &TestApp, users: &[String]) -> mpsc::Receiver<(String, Option<Value>)> {
    let (tx, rx) = mpsc::channel();
    for u in users {
        let (tx, base, token, u) = (tx.clone(), app.base.clone(), app.token(u), u.clone());
        std::thread::spawn(move || {
            let _ = tx.send((u, try_create(&base, &token)));
        });
    }
    rx
}

/// One crash: `pause` holds every start at one point (`point:ms`), `kill_when` says when the
/// starts have got there.
fn crash_round(name: &str, pause: Option<&str>, kill_when: impl Fn(&TestApp, Duration) -> bool) {
    let mut app = TestApp::spawn_with(Options {
        reconcile_every: "2s",
        ..Options::default()
    });
    let answered: Vec<String> = (0..ANSWERED).map(|i| format!("{name}-a{i}")).collect();
    let rx = creates_in_threads(&app, &answered);
    let mut before = HashMap::new();
    for _ in &answered {
        let (u, v) = rx.recv().unwrap();
        let v = v.expect("answered");
        assert_eq!(v["code"], "0", "{v}");
        before.insert(u, v["data"]["sessionId"].as_str().unwrap().to_owned());
    }

    // Restart gracefully with the pause in place, then start many creates and crash.
    app.stop();
    app.set_env("HPCDESK_TEST_START_PAUSE", pause);
    app.start();
    let users: Vec<String> = (0..IN_FLIGHT).map(|i| format!("{name}-u{i}")).collect();
    let rx = creates_in_threads(&app, &users);
    let sent = Instant::now();
    while !kill_when(&app, sent.elapsed()) && sent.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    app.kill9();
    eprintln!(
        "{name}: killed {:?} after the creates, {} agents running, {} Xvnc",
        sent.elapsed(),
        agents(&app),
        app.xvnc_pids().len()
    );
    let mut answered_in_burst = HashMap::new();
    for _ in &users {
        let (u, v) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if let Some(v) = v
            && v["code"] == "0"
        {
            answered_in_burst.insert(u, v["data"]["sessionId"].as_str().unwrap().to_owned());
        }
    }

    app.set_env("HPCDESK_TEST_START_PAUSE", None);
    app.start();
    let restarted = Instant::now();
    // The starts the crash interrupted go on in their agents (hpcdesk cannot adopt a desktop
    // before it exists): count the two intervals from when the last of them has finished.
    let mut done = restarted;
    let mut last = Err(String::new());
    while Instant::now() < done + 2 * RECONCILE + Duration::from_millis(300) {
        if agents(&app) > 0 {
            done = Instant::now();
        }
        last = settled(&app);
        if last.is_ok() && agents(&app) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        last.is_ok(),
        "{name}: not settled within two reconcile intervals after the restart ({:?} after it, \
         agents done {:?} after it): {}\n{}",
        restarted.elapsed(),
        done - restarted,
        last.unwrap_err(),
        app.log_text()
    );
    eprintln!(
        "{name}: settled {:?} after the restart (interrupted agents done {:?} after it)",
        restarted.elapsed(),
        done - restarted
    );

    for (u, id) in before.iter().chain(&answered_in_burst) {
        let now = session_of(&app, u);
        assert_eq!(
            now.as_ref().map(|s| s.0.as_str()),
            Some(id.as_str()),
            "{name}: {u}'s answered desktop did not survive"
        );
    }
    let adopted = users
        .iter()
        .filter(|u| session_of(&app, u).is_some())
        .count();
    eprintln!(
        "{name}: {} answered before the kill, {adopted} of {IN_FLIGHT} interrupted users have a \
         desktop after the restart",
        answered_in_burst.len()
    );

    // Everyone's next create works, and leaves one Xvnc per user.
    let everyone: Vec<String> = answered.iter().chain(&users).cloned().collect();
    let rx = creates_in_threads(&app, &everyone);
    for _ in &everyone {
        let (u, v) = rx.recv_timeout(Duration::from_secs(90)).unwrap();
        let v = v.expect("answered");
        assert_eq!(v["code"], "0", "{name}: {u}'s next create: {v}");
        assert_eq!(v["data"]["status"], "running", "{v}");
    }
    settled(&app).unwrap_or_else(|e| panic!("{name}: after the next creates: {e}"));
    assert_eq!(app.xvnc_pids().len(), everyone.len(), "one Xvnc per user");
    let mut ids = Vec::new();
    for u in &everyone {
        let (id, _) = session_of(&app, u).expect("a session");
        ids.push((u.clone(), id));
    }
    for (u, id) in ids {
        assert_eq!(app.delete(&app.token(&u), &id)["code"], "0");
    }
    assert!(
        eventually(Duration::from_secs(10), || app.xvnc_pids().is_empty()),
        "{name}: desktops left after deleting them all"
    );
}

/// The crash rounds run one after another: each starts twenty desktops at once, and two
/// rounds side by side would only measure the machine.
#[test]
fn a_crash_during_many_creates_loses_and_leaks_nothing() {
    if !real_parts("crash") {
        return;
    }
    let total = IN_FLIGHT + ANSWERED;
    crash_round("anywhere", None, |app, _| {
        app.xvnc_pids().len() > ANSWERED + 5
    });
    crash_round("launch", Some("launch:3000"), |_, t| {
        t > Duration::from_millis(700)
    });
    crash_round("xvnc", Some("xvnc:3000"), |app, _| agents(app) >= IN_FLIGHT);
    crash_round("desktop", Some("desktop:3000"), |app, _| {
        app.xvnc_pids().len() >= total
    });
    crash_round("reply", Some("reply:3000"), |app, _| {
        app.xvnc_pids().len() >= total && app.desktop_processes() >= total
    });
}
