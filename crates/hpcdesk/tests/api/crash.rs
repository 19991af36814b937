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
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Users whose creates are in flight when the server dies.
const IN_FLIGHT: usize = 20;
/// Users whose creates were answered before the crash.
const ANSWERED: usize = 2;
const RECONCILE: Duration = Duration::from_secs(2);

/// Where a crash round runs: how to start the server, and the nodes its desktops run on.
pub struct Rig<'a> {
    pub spawn: &'a dyn Fn() -> TestApp,
    /// Node names (as in desktop directories and the agent's `--node`); `None`: the app's.
    pub nodes: Option<Vec<String>>,
    pub in_flight: usize,
}

impl Rig<'_> {
    fn nodes(&self, app: &TestApp) -> Vec<String> {
        self.nodes.clone().unwrap_or_else(|| vec![app.node.clone()])
    }
}

/// (node, display) of every live hpcdesk Xvnc of `nodes`.
pub fn desktops_on(nodes: &[String]) -> Vec<(String, u64)> {
    procs()
        .into_iter()
        .filter(|p| !zombie(*p))
        .filter_map(|p| {
            let argv = cmdline(p);
            if !argv.first().is_some_and(|a| a.contains("Xvnc")) {
                return None;
            }
            argv.iter().find_map(|a| {
                let dir = a.split("/.hpcdesk/desktops/").nth(1)?.split('/').next()?;
                let (node, d) = dir.rsplit_once('-')?;
                let d: u64 = d.parse().ok()?;
                nodes
                    .iter()
                    .any(|n| n == node)
                    .then(|| (node.to_owned(), d))
            })
        })
        .collect()
}

fn admin_token() -> String {
    token_with("crash-admin", &compute_user(), |c| c.role = "9".into())
}

/// Live `hpcdesk node start` agents for `nodes`.
pub fn agents(nodes: &[String]) -> usize {
    procs()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            !zombie(*p)
                && argv.windows(2).any(|w| w[0] == "node" && w[1] == "start")
                && argv
                    .windows(2)
                    .any(|w| w[0] == "--node" && nodes.contains(&w[1]))
        })
        .count()
}

/// Whether the node is settled: every listed session is running with exactly one Xvnc on
/// its display, and no other Xvnc runs; or what is not settled yet.
fn settled(app: &TestApp, nodes: &[String]) -> Result<(), String> {
    let (_, v) = app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&admin_token()));
    let sessions = v["data"].as_array().cloned().unwrap_or_default();
    let displays = desktops_on(nodes);
    for s in &sessions {
        if s["status"] != "running" {
            return Err(format!("not running: {s}"));
        }
        let at = (
            s["hostName"].as_str().unwrap().to_owned(),
            s["displayNumber"].as_u64().unwrap(),
        );
        let n = displays.iter().filter(|x| **x == at).count();
        if n != 1 {
            return Err(format!("{n} Xvnc on {at:?} of {s}"));
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
        let (tx, create, u) = (
            tx.clone(),
            create_in_background(app, &app.token(u)),
            u.clone(),
        );
        std::thread::spawn(move || {
            let _ = tx.send((u, create.join().unwrap().0));
        });
    }
    rx
}

/// What the crash sees of the node(s) when `kill_when` is asked.
pub struct Seen {
    pub after: Duration,
    pub agents: usize,
    pub xvnc: usize,
    pub desktops: usize,
}

/// One crash: `pause` holds every start at one point (`point:ms`), `kill_when` says when the
/// starts have got there.
pub fn crash_round(rig: &Rig, name: &str, pause: Option<&str>, kill_when: impl Fn(&Seen) -> bool) {
    let mut app = (rig.spawn)();
    let nodes = rig.nodes(&app);
    let in_flight = rig.in_flight;
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
    let users: Vec<String> = (0..in_flight).map(|i| format!("{name}-u{i}")).collect();
    let rx = creates_in_threads(&app, &users);
    let sent = Instant::now();
    let seen = || Seen {
        after: sent.elapsed(),
        agents: agents(&nodes),
        xvnc: desktops_on(&nodes).len(),
        desktops: desktop_processes(&nodes),
    };
    while !kill_when(&seen()) && sent.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    app.kill9();
    let at_kill = seen();
    eprintln!(
        "{name}: killed {:?} after the creates, {} agents running, {} Xvnc",
        at_kill.after, at_kill.agents, at_kill.xvnc
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
        if agents(&nodes) > 0 {
            done = Instant::now();
        }
        last = settled(&app, &nodes);
        if last.is_ok() && agents(&nodes) == 0 {
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
        lifecycle_log(&app)
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
        "{name}: {} answered before the kill, {adopted} of {in_flight} interrupted users have a \
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
    settled(&app, &nodes).unwrap_or_else(|e| panic!("{name}: after the next creates: {e}"));
    assert_eq!(
        desktops_on(&nodes).len(),
        everyone.len(),
        "one Xvnc per user"
    );
    let mut ids = Vec::new();
    for u in &everyone {
        let (id, _) = session_of(&app, u).expect("a session");
        ids.push((u.clone(), id));
    }
    for (u, id) in ids {
        assert_eq!(app.delete(&app.token(&u), &id)["code"], "0");
    }
    assert!(
        eventually(Duration::from_secs(10), || desktops_on(&nodes).is_empty()),
        "{name}: desktops left after deleting them all"
    );
}

/// The server's log without its per-query and per-request lines: what reconcile and the
/// starts did, readable when a round fails.
fn lifecycle_log(app: &TestApp) -> String {
    app.log_text()
        .lines()
        .filter(|l| !l.contains("sqlx::query") && !l.contains("hpcdesk::access"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Live processes of desktops on `nodes` other than their Xvnc (their desktop command).
fn desktop_processes(nodes: &[String]) -> usize {
    procs()
        .into_iter()
        .filter(|p| {
            !zombie(*p)
                && !cmdline(*p).first().is_some_and(|a| a.contains("Xvnc"))
                && environ(*p).iter().any(|kv| {
                    kv.strip_prefix("HPCDESK_DESKTOP=")
                        .is_some_and(|v| nodes.iter().any(|n| v.starts_with(&format!("{n}-"))))
                })
        })
        .count()
}

/// The crash rounds run one after another: each starts twenty desktops at once, and two
/// rounds side by side would only measure the machine.
#[test]
fn a_crash_during_many_creates_loses_and_leaks_nothing() {
    if !real_parts("crash") {
        return;
    }
    let spawn = || {
        TestApp::spawn_with(Options {
            reconcile_every: "2s",
            ..Options::default()
        })
    };
    let rig = Rig {
        spawn: &spawn,
        nodes: None,
        in_flight: IN_FLIGHT,
    };
    every_point(&rig);
}

/// Crash rounds at every point of a start.
pub fn every_point(rig: &Rig) {
    let total = rig.in_flight + ANSWERED;
    let n = rig.in_flight;
    crash_round(rig, "anywhere", None, |s| s.xvnc > ANSWERED + n / 4);
    crash_round(rig, "launch", Some("launch:3000"), |s| {
        s.after > Duration::from_millis(700)
    });
    crash_round(rig, "xvnc", Some("xvnc:3000"), |s| s.agents >= n);
    crash_round(rig, "desktop", Some("desktop:3000"), |s| s.xvnc >= total);
    crash_round(rig, "reply", Some("reply:3000"), |s| {
        s.xvnc >= total && s.desktops >= total
    });
}

/// Display numbers are reused, so a stop decided on an earlier look (recovery's listing,
/// an orphan, a session's record) names its desktop by marker too: the agent's `node stop`
/// with another session's marker leaves the desktop on that display, and its directory,
/// as they were; with the desktop's own marker it stops it.
#[test]
fn a_stop_that_names_another_session_leaves_the_desktop_on_that_display_alone() {
    if !real_parts("stop by marker") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("stop-marker");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let display = created["data"]["displayNumber"].as_u64().unwrap();
    let pids = app.desktop_pids(display);
    assert!(pids.len() >= 2, "Xvnc and its desktop: {pids:?}");
    let xvnc = app.xvnc_pids();
    assert_eq!(xvnc.len(), 1);
    let marker = marker_of_display(display);
    let dir = desktop_dir(&app.node, display);
    let state = std::fs::read(dir.join("state.json")).expect("its state file");

    let stop = |m: &str| -> Value {
        let out = as_compute_user(agent_binary())
            .args(["node", "stop", "--node", &app.node, "--display"])
            .arg(display.to_string())
            .args(["--marker", m])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let answer = stop("0123456789abcdef0123456789abcdef");
    assert_eq!(answer["processes"], 0, "{answer}");
    assert_eq!(app.xvnc_pids(), xvnc, "another session's stop");
    let now = app.desktop_pids(display);
    // Its desktop command runs on (its short-lived helpers come and go).
    assert!(now.len() >= 2, "{pids:?} then {now:?}");
    assert_eq!(std::fs::read(dir.join("state.json")).ok(), Some(state));
    std::thread::sleep(RECONCILE);
    assert_eq!(app.list(&token)[0]["status"], "running");
    assert_eq!(
        app.launch_url(&token, created["data"]["sessionId"].as_str().unwrap())["code"],
        "0"
    );

    let answer = stop(&marker);
    assert!(answer["processes"].as_u64().unwrap() >= 2, "{answer}");
    assert!(
        eventually(Duration::from_secs(5), || app
            .desktop_pids(display)
            .is_empty()),
        "its own marker stops it"
    );
    assert!(!dir.exists(), "its directory goes with it");
}

/// Xvnc runs helpers of its own while it starts (`sh -c xkbcomp …`), which inherit its
/// environment and so its desktop marker. The node's listing does not take them for the
/// desktop's session: a start cut off then is a half-way start, which recovery stops, not a
/// desktop it adopts (its agent, finding hpcdesk gone, would stop that Xvnc a moment later).
/// The helper is held (SIGSTOP) while the listing looks, so the two surely overlap.
#[test]
fn the_helpers_xvnc_runs_while_it_starts_do_not_make_a_desktop_look_complete() {
    if !real_parts("listing") {
        return;
    }
    for attempt in 0..5 {
        let node = format!("t{}xk{attempt}", std::process::id());
        // A free display: Xvnc exits at once on one another server holds.
        let display = (60..99u64)
            .find(|d| {
                !Path::new(&format!("/tmp/.X{d}-lock")).exists()
                    && std::net::TcpListener::bind(("127.0.0.1", 5900 + *d as u16)).is_ok()
            })
            .expect("a free display");
        let passwd = desktop_dir(&node, display).join("passwd");
        let mut xvnc = as_compute_user("Xvnc")
            .arg(format!(":{display}"))
            .args(["-localhost", "-SecurityTypes", "None", "-PasswordFile"])
            .arg(&passwd)
            .env("HPCDESK_DESKTOP", format!("{node}-{display}-mark00000000"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let is_ours = |p: i32| {
            let argv = cmdline(p);
            argv.first().is_some_and(|a| a.contains("Xvnc"))
                && argv.iter().any(|a| *a == passwd.display().to_string())
        };
        let started = Instant::now();
        let mut verdict = None;
        while verdict.is_none() && started.elapsed() < Duration::from_secs(5) {
            let Some(x) = procs().into_iter().find(|p| is_ours(*p)) else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let Some(h) = procs().into_iter().find(|p| parent_of(*p) == Some(x)) else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let signal = |sig: &str| {
                let _ = Command::new("kill")
                    .args([sig, &h.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            signal("-STOP");
            if parent_of(h) == Some(x) && !zombie(h) {
                let out = Command::new(agent_binary())
                    .args(["node", "list", "--node", &node])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
                let seen: Vec<Value> = listing["desktops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["display"] == display)
                    .cloned()
                    .collect();
                verdict = Some((h, cmdline(h), seen, listing.clone()));
            }
            signal("-CONT");
        }
        for p in procs().into_iter().filter(|p| is_ours(*p)) {
            let _ = Command::new("kill").arg(p.to_string()).status();
        }
        let _ = xvnc.wait();
        if let Some((h, argv, seen, listing)) = verdict {
            assert_eq!(seen.len(), 1, "{listing}");
            assert_eq!(
                seen[0]["complete"], false,
                "Xvnc's own helper (pid {h}, {argv:?}) taken for its session: {listing}"
            );
            return;
        }
        eprintln!("attempt {attempt}: Xvnc on :{display} ran no helper that could be held");
    }
    panic!("Xvnc ran no helper of its own in five starts");
}
