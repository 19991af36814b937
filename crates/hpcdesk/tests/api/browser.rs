//! The real viewer page in headless Chromium (Playwright): the launch URL from the API opens
//! the desktop through the gateway, and a command typed in the browser runs in the desktop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Node, Chromium and playwright-core are here; skips loudly outside CI, fails in CI.
pub fn browser_parts(test: &str) -> bool {
    let mut missing = Vec::new();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node");
    }
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        missing.push("chromium (apt-get install chromium)");
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        missing.push("playwright-core (npm ci --prefix tests/browser)");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    assert!(!in_ci(), "{msg} — required in CI");
    eprintln!("SKIPPED {msg}");
    false
}

/// One Chromium at a time: three browsers and their desktops at once overload two cores.
pub fn browser_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens `url` in Chromium, waits for the viewer to connect, types `command` and Enter into the
/// desktop's xterm, and returns the file `~/<marker>` the command is expected to write (its
/// content, once it appears). Panics with the browser's own messages if it cannot connect.
pub fn type_in_desktop(
    url: &str,
    command: impl Fn(&str) -> String,
    shot: Option<&std::path::Path>,
) -> String {
    let marker = format!("hpcdesk-browser-{}", uuid::Uuid::new_v4().simple());
    let file = home_of(&compute_user()).join(&marker);
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("type-in-desktop.mjs"))
        .arg(url)
        .arg(command(&marker));
    if let Some(shot) = shot {
        cmd.arg(shot);
    }
    let out = {
        let _one_at_a_time = browser_lock();
        cmd.output().unwrap()
    };
    assert!(
        out.status.success(),
        "browser run failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let appeared = eventually(Duration::from_secs(5), || file.exists());
    let content = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    assert!(
        appeared,
        "the typed command did not run in the desktop; browser said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    content
}

pub fn home_of(user: &str) -> PathBuf {
    nix::unistd::User::from_name(user).unwrap().unwrap().dir
}

#[test]
fn a_command_typed_in_the_browser_runs_in_the_desktop() {
    if !real_parts("browser") || !browser_parts("browser") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("quinn");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let launch = app.launch_url(&token, &id);
    let url = format!(
        "{}{}",
        app.base,
        launch["data"]["novncUrl"].as_str().unwrap()
    );

    let shot = app.dir.path().join("desktop.png");
    type_in_desktop(&url, |marker| format!("touch ~/{marker}"), Some(&shot));
    // The viewer's connection was counted and is gone again.
    assert!(eventually(
        Duration::from_secs(3),
        || app.list(&token)[0]["connections"] == 0
    ));
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

/// Where the browser tests leave their screenshots (the README's pictures are made here):
/// `target/screenshots/`.
fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs a browser script with `args` (one browser at a time); returns its JSON line.
fn run_script(app: &TestApp, script: &str, args: &[&str]) -> serde_json::Value {
    let _one_at_a_time = browser_lock();
    run_script_holding_lock(app, script, args)
}

/// [`run_script`] for a caller that holds [`browser_lock`] already.
fn run_script_holding_lock(app: &TestApp, script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

#[test]
fn the_portal_creates_a_chosen_desktop_shows_its_thumbnail_shares_a_view_only_link_and_deletes_it()
{
    if !real_parts("portal") || !browser_parts("portal") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("rita");
    let home = home_of(&compute_user());
    let probe = |what: &str| format!("hpcdesk-portal-{what}-{}", uuid::Uuid::new_v4().simple());
    let (watched, typed) = (probe("view-only"), probe("full"));
    let shot = screenshot_path("portal.png");
    let r = run_script(
        &app,
        "portal.mjs",
        &[
            &app.base,
            &token,
            "twm",
            "1280x720",
            &format!("touch ~/{watched}"),
            &format!("touch ~/{typed}"),
            shot.to_str().unwrap(),
        ],
    );
    let offered: Vec<&str> = r["offered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(offered.contains(&"xfce") && offered.contains(&"twm"), "{r}");
    assert_eq!(r["kind"], "twm (minimal)", "{r}");
    assert_eq!(r["screen"], "1280x720", "{r}");
    assert_eq!(r["ends"], "no time limit", "{r}");
    assert_eq!(
        r["extendShown"], false,
        "nothing to extend without a limit: {r}"
    );
    assert_eq!(
        r["thumb"]["w"], 480,
        "a thumbnail of the screenshot endpoint: {r}"
    );
    assert_eq!(r["thumb"]["h"], 270, "{r}");
    assert_eq!(r["thumb"]["refreshed"], true, "{r}");
    assert_eq!(
        r["phone"]["fits"], true,
        "the page is wider than a phone: {r}"
    );
    assert!(
        r["viewOnlyUrl"]
            .as_str()
            .unwrap()
            .contains("view_only=true"),
        "{r}"
    );
    assert_eq!(r["viewOnly"]["viewOnly"], true, "{r}");
    assert_eq!(r["viewOnly"]["badge"], true, "the view-only badge: {r}");
    assert_eq!(r["full"]["badge"], false, "{r}");
    // What was typed in the full viewer ran; what was typed in the view-only one did not.
    assert!(
        eventually(Duration::from_secs(5), || home.join(&typed).exists()),
        "typing in the opened desktop did nothing"
    );
    let _ = std::fs::remove_file(home.join(&typed));
    assert!(
        !home.join(&watched).exists(),
        "typing in a view-only link reached the desktop"
    );
    assert_eq!(r["deleted"], true);
    assert!(app.list(&token).is_empty());
    assert!(app.xvnc_pids().is_empty());
}

#[test]
fn the_default_desktop_is_xfce_and_the_viewer_keeps_and_applies_its_image_settings() {
    if !real_parts("xfce") || !browser_parts("xfce") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        default_desktop: None,
        ..Options::default()
    });
    let token = app.token("saul");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    assert_eq!(created["data"]["desktop"], "xfce", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let display = created["data"]["displayNumber"].as_u64().unwrap();
    let launch = app.launch_url(&token, &id);
    let url = format!(
        "{}{}",
        app.base,
        launch["data"]["novncUrl"].as_str().unwrap()
    );
    let quality2 = "hpcdesk_viewer_quality_requests_total{level=\"2\"}";
    let compression7 = "hpcdesk_viewer_compression_requests_total{level=\"7\"}";
    assert_eq!(metric(&app, quality2), 0.0);

    let shot = screenshot_path("viewer-xfce.png");
    let clip = format!("hpcdesk-clip-{}", uuid::Uuid::new_v4().simple());
    // While the browser runs: once the browser's clipboard text reaches the desktop's
    // clipboard, copy `<text>-back` in the desktop, as an application there would.
    let watcher = {
        let (clip, node) = (clip.clone(), app.node.clone());
        std::thread::spawn(move || {
            let reached = eventually(Duration::from_secs(60), || {
                desktop_clipboard(&node, display, None) == clip
            });
            if reached {
                desktop_clipboard(&node, display, Some(&format!("{clip}-back")));
            }
            reached
        })
    };
    let r = run_script(
        &app,
        "viewer-settings.mjs",
        &[&url, &clip, shot.to_str().unwrap()],
    );
    assert!(
        watcher.join().unwrap(),
        "the browser's clipboard never reached the desktop: {r}"
    );
    assert_eq!(
        r["clipboard"]["back"],
        format!("{clip}-back"),
        "the desktop's clipboard never reached the browser's: {r}"
    );
    assert_eq!(r["clipboard"]["panel"], format!("{clip}-back"), "{r}");
    // XFCE's panel is drawn: its band is not the background's colour.
    assert!(
        r["distance"].as_f64().unwrap() >= 40.0,
        "no panel in the top band: {r}"
    );
    let commands: Vec<String> = app
        .desktop_pids(display)
        .into_iter()
        .map(|p| cmdline(p).join(" "))
        .collect();
    for part in ["xfce4-session", "xfce4-panel", "xfwm4", "dbus-launch"] {
        assert!(
            commands.iter().any(|c| c.contains(part)),
            "no {part} in {commands:?}"
        );
    }
    for absent in [
        "light-locker",
        "xfce4-screensaver",
        "xfce4-power-manager",
        "ssh-agent",
        "gpg-agent",
    ] {
        assert!(
            !commands.iter().any(|c| c.contains(absent)),
            "{absent} runs: {commands:?}"
        );
    }
    // The quality control changed what the viewer asked the desktop for (the gateway saw it
    // in a SetEncodings), live, and the choice was kept for the reload.
    assert_eq!(r["live"]["quality"], 2, "{r}");
    assert_eq!(r["live"]["compression"], 7, "{r}");
    assert!(
        metric(&app, quality2) >= 1.0,
        "the gateway saw no request for quality 2"
    );
    assert!(
        metric(&app, compression7) >= 1.0,
        "the gateway saw no request for compression 7"
    );
    assert_eq!(r["kept"]["quality"], 2, "{r}");
    assert_eq!(r["kept"]["compression"], 7, "{r}");
    assert_eq!(r["kept"]["rfbQuality"], 2, "{r}");

    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(eventually(Duration::from_secs(10), || app
        .desktop_pids(display)
        .is_empty()));
}

#[test]
fn the_viewer_page_and_novnc_are_served_by_hpcdesk() {
    let app = TestApp::spawn();
    let client = reqwest::blocking::Client::new();
    let portal = client.get(app.url("/")).send().unwrap();
    assert_eq!(portal.status(), 200);
    assert!(portal.text().unwrap().contains("portal.js"));
    let page = client.get(app.url("/vnc.html")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().unwrap().contains("viewer.js"));
    let rfb = client.get(app.url("/novnc/core/rfb.js")).send().unwrap();
    if rfb.status() != 200 {
        let msg = "noVNC is not embedded (npm ci --prefix web before building)";
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return;
    }
    assert_eq!(
        rfb.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(rfb.text().unwrap().contains("export default class RFB"));
    let missing = client.get(app.url("/novnc/core/nope.js")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let traversal = client.get(app.url("/../Cargo.toml")).send().unwrap();
    assert_eq!(traversal.status(), 404);
}

#[test]
fn the_viewer_counts_down_to_the_time_limit_warns_and_extends() {
    if !real_parts("viewer time limit") || !browser_parts("viewer time limit") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        env: vec![
            // Long enough to wait for the one browser at a time; warned from the start.
            ("HPCDESK_LIFECYCLE__MAX_LIFETIME".into(), "300s".into()),
            ("HPCDESK_LIFECYCLE__WARN_BEFORE".into(), "295s".into()),
            ("HPCDESK_LIFECYCLE__EXTEND_BY".into(), "1m".into()),
            ("HPCDESK_LIFECYCLE__MAX_EXTEND".into(), "5m".into()),
        ],
        ..Options::default()
    });
    let token = app.token("vera");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let end = crate::timelimit::time(&created["data"]["endTime"]);
    let launch = app.launch_url(&token, &id);
    let url = format!(
        "{}{}",
        app.base,
        launch["data"]["novncUrl"].as_str().unwrap()
    );
    let shot = screenshot_path("viewer-time-limit.png");
    let r = run_script(&app, "time-limit.mjs", &[&url, shot.to_str().unwrap()]);
    // "Ends in M:SS", within the warning time (how much is left depends on how long this
    // test waited for the browser).
    let countdown = r["countdown"].as_str().unwrap();
    let left = countdown
        .strip_prefix("Ends in ")
        .and_then(|t| t.split_once(':'))
        .and_then(|(m, s)| Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?))
        .unwrap_or_else(|| panic!("not a countdown: {r}"));
    assert!((1..=295).contains(&left), "{r}");
    let warning = r["warning"].as_str().unwrap();
    assert!(
        warning.contains("ends in") && warning.contains("time limit") && warning.contains("extend"),
        "{r}"
    );
    assert_eq!(r["button"], "Extend by 1m", "{r}");
    let moved = r["after"].as_f64().unwrap() - r["before"].as_f64().unwrap();
    assert!(
        (59_000.0..=61_000.0).contains(&moved),
        "the viewer's end moved by {moved} ms: {r}"
    );
    assert_eq!(r["bannerHidden"], true, "{r}");
    // The server's record moved with it, and says who asked.
    let now_end = crate::timelimit::time(&app.list(&token)[0]["endTime"]);
    assert_eq!((now_end - end).num_seconds(), 60);
    let events = audit(&app, "vera");
    let extended = events
        .iter()
        .find(|e| e["kind"] == "session_extended")
        .unwrap_or_else(|| panic!("no extend in {events:?}"));
    assert!(
        extended["peer"].as_str().unwrap().ends_with("(viewer)"),
        "{extended}"
    );
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

#[test]
fn the_viewer_says_plainly_that_the_desktop_ended_for_its_time_limit() {
    if !real_parts("viewer time limit end") || !browser_parts("viewer time limit end") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        env: vec![("HPCDESK_LIFECYCLE__MAX_LIFETIME".into(), "20s".into())],
        ..Options::default()
    });
    // The browser first: the 20 s must not go by waiting for it.
    let _one_at_a_time = browser_lock();
    let token = app.token("willa");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let launch = app.launch_url(&token, &id);
    let url = format!(
        "{}{}",
        app.base,
        launch["data"]["novncUrl"].as_str().unwrap()
    );
    let r = run_script_holding_lock(&app, "time-limit.mjs", &[&url, "-", "ended"]);
    assert_eq!(r["status"], "failed", "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("time limit"), "{r}");
    assert!(!message.contains("Reconnecting"), "{r}");
    assert_eq!(app.list(&token)[0]["status"], "stopped");
}
