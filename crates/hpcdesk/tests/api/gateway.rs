//! The gateway through the launch URL, against real Xvnc, with an independent WebSocket
//! client (tokio-tungstenite) speaking RFB as noVNC does.

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::viewer::{Connect, Viewer, connect, ws_url};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates a desktop for `user`; returns (token, session id, launch URL).
fn desktop(app: &TestApp, user: &str) -> (String, String, String) {
    let token = app.token(user);
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let url = launch(app, &token, &id);
    (token, id, url)
}

fn launch(app: &TestApp, token: &str, id: &str) -> String {
    let l = app.launch_url(token, id);
    assert_eq!(l["code"], "0", "{l}");
    l["data"]["novncUrl"].as_str().unwrap().to_owned()
}

fn open(rt: &tokio::runtime::Runtime, app: &TestApp, url: &str) -> Viewer {
    match rt.block_on(connect(&ws_url(&app.base, url))) {
        Connect::Open(v) => *v,
        Connect::Refused(status, body) => panic!("refused {status}: {body}"),
    }
}

fn refused(rt: &tokio::runtime::Runtime, url: &str) -> (u16, serde_json::Value) {
    match rt.block_on(connect(url)) {
        Connect::Open(_) => panic!("{url} should be refused"),
        Connect::Refused(status, body) => (status, serde_json::from_str(&body).unwrap()),
    }
}

#[test]
fn a_viewer_gets_a_framebuffer_update_through_the_launch_url() {
    if !real_parts("gateway handshake") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn();
    let (token, _id, url) = desktop(&app, "lena");
    let mut v = open(&rt, &app, &url);
    assert_eq!(v.protocol.as_deref(), Some("binary"));
    let init = rt.block_on(v.handshake());
    assert_eq!((init.width, init.height), (1024, 768));
    assert!(init.name.contains(&app.node), "{}", init.name);
    let (rects, w, h) = rt.block_on(v.first_update(1024, 768));
    assert!(rects >= 1);
    assert!(w > 0 && h > 0);

    // The session shows the open viewer, and input moves lastActiveTime.
    assert!(eventually(
        Duration::from_secs(2),
        || app.list(&token)[0]["connections"] == 1
    ));
    let before = app.list(&token)[0]["lastActiveTime"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(v.type_key(0xffe1)); // Shift: harmless
    assert!(
        eventually(Duration::from_secs(3), || {
            app.list(&token)[0]["lastActiveTime"].as_str().unwrap() != before
        }),
        "input did not move lastActiveTime"
    );
    drop(v);
    assert!(eventually(
        Duration::from_secs(3),
        || app.list(&token)[0]["connections"] == 0
    ));
    // Metrics tell the same story.
    let metrics = reqwest::blocking::get(app.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} missing in\n{metrics}"))
    };
    assert_eq!(value("hpcdesk_desktops_started_total"), 1.0);
    assert_eq!(value("hpcdesk_viewer_connections_total"), 1.0);
    assert_eq!(value("hpcdesk_sessions{state=\"running\"}"), 1.0);
    assert_eq!(value("hpcdesk_viewers_open"), 0.0);
    assert!(value("hpcdesk_gateway_bytes_down_total") > 1000.0);
    assert!(value("hpcdesk_api_responses_total{code=\"0\"}") >= 3.0);
    // Latency histograms: one create, one launch URL, one viewer set-up, each in a bucket.
    assert_eq!(value("hpcdesk_create_seconds_count"), 1.0);
    assert_eq!(value("hpcdesk_launchurl_seconds_count"), 1.0);
    assert_eq!(value("hpcdesk_viewer_setup_seconds_count"), 1.0);
    assert_eq!(
        value("hpcdesk_viewer_setup_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(value("hpcdesk_create_seconds_sum") > 0.0);
    // The VNC password was never in a log, nor the grant.
    let grant = url
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!app.log_text().contains(grant), "a grant token was logged");
}

#[test]
fn refused_viewers_get_403_and_never_reach_the_desktop() {
    if !real_parts("gateway refusals") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn();
    let (token, id, url) = desktop(&app, "mona");
    let ws = ws_url(&app.base, &url);
    let (grant, mm) = {
        let q = ws.split("token=").nth(1).unwrap();
        let (g, m) = q.split_once("&mm=").unwrap();
        (g.to_owned(), m.to_owned())
    };
    let base = app.base.replacen("http://", "ws://", 1);
    let bogus = uuid::Uuid::new_v4();
    let (status, body) = refused(&rt, &format!("{base}/vncws?token={bogus}&mm={mm}"));
    assert_eq!(status, 403);
    assert!(
        body["msg"].as_str().unwrap().contains("not valid"),
        "{body}"
    );
    let other_mm = {
        let u = launch(&app, &token, &id);
        ws_url(&app.base, &u)
            .split("&mm=")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_ne!(other_mm, mm);
    let (status, body) = refused(&rt, &format!("{base}/vncws?token={grant}&mm={other_mm}"));
    assert_eq!(status, 403, "{body}");
    assert!(body["msg"].as_str().unwrap().contains("mm"), "{body}");
    assert_eq!(refused(&rt, &format!("{base}/vncws?token={grant}")).0, 403);
    assert_eq!(refused(&rt, &format!("{base}/vncws?mm={mm}")).0, 403);
    assert_eq!(refused(&rt, &format!("{base}/vncws")).0, 403);
    // A host or port in the query changes nothing: the gateway never takes them.
    let mut v = open(&rt, &app, &format!("{url}&host=127.0.0.1&port=22"));
    assert_eq!(rt.block_on(v.handshake()).width, 1024);
    drop(v);
    // The grant of a deleted session.
    assert_eq!(app.delete(&token, &id)["code"], "0");
    let (status, body) = refused(&rt, &ws);
    assert_eq!(status, 403);
    assert!(body["msg"].as_str().unwrap().contains("deleted"), "{body}");
    assert!(!app.log_text().contains(&grant), "a grant token was logged");
}

#[test]
fn an_expired_grant_opens_nothing_new_but_open_viewers_stay() {
    if !real_parts("grant expiry") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn_with(Options {
        extra_toml: "[gateway]\ngrant_ttl = \"2s\"\n".into(),
        ..Options::default()
    });
    let (_token, _id, url) = desktop(&app, "nina");
    let mut v = open(&rt, &app, &url);
    rt.block_on(v.handshake());
    std::thread::sleep(Duration::from_millis(2300));
    let (status, body) = refused(&rt, &ws_url(&app.base, &url));
    assert_eq!(status, 403);
    assert!(body["msg"].as_str().unwrap().contains("expired"), "{body}");
    // The connection opened before expiry still works.
    let (rects, _, _) = rt.block_on(v.first_update(1024, 768));
    assert!(rects >= 1);
}

#[test]
fn deleting_a_session_closes_its_viewers_within_a_second() {
    if !real_parts("delete closes viewers") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn();
    let (token, id, url) = desktop(&app, "olga");
    let mut v1 = open(&rt, &app, &url);
    rt.block_on(v1.handshake());
    let mut v2 = open(&rt, &app, &url); // the grant is reusable (noVNC reconnects)
    rt.block_on(v2.handshake());
    assert!(eventually(
        Duration::from_secs(2),
        || app.list(&token)[0]["connections"] == 2
    ));
    let t0 = Instant::now();
    assert_eq!(app.delete(&token, &id)["code"], "0");
    let (c1, c2) = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), async {
            (v1.closed().await, v2.closed().await)
        })
        .await
        .expect("viewers still open a second after delete")
    });
    eprintln!("viewers closed {:?} after delete returned", t0.elapsed());
    assert_eq!(c1, Some(4001));
    assert_eq!(c2, Some(4001));
}

#[test]
fn a_plain_get_checks_a_launch_link() {
    if !real_parts("link check") {
        return;
    }
    let app = TestApp::spawn();
    let (_token, id, url) = desktop(&app, "petra");
    let (status, body) = app.call("GET", &link_path(&url), None);
    assert_eq!(status, 200);
    assert_eq!(body["code"], "0");
    assert_eq!(body["data"]["sessionId"], id.as_str());
    let (status, body) = app.call("GET", "/vncws?token=nope&mm=nope", None);
    assert_eq!(status, 403);
    assert_eq!(body["code"], "10008");
}

#[test]
fn a_view_only_viewer_watches_but_its_input_never_reaches_the_desktop() {
    if !real_parts("view-only") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn();
    let (token, id, _) = desktop(&app, "rosa");
    let path = format!("/hpc/openapi/v2/desktop/vnc/{id}/launchurl");
    let bad = app
        .call("GET", &format!("{path}?viewOnly=maybe"), Some(&token))
        .1;
    assert_eq!(bad["code"], "10004", "{bad}");
    let l = app
        .call("GET", &format!("{path}?viewOnly=true"), Some(&token))
        .1;
    assert_eq!(l["code"], "0", "{l}");
    let url = l["data"]["novncUrl"].as_str().unwrap().to_owned();
    assert!(url.ends_with("&resize=remote&view_only=true"), "{url}");

    let mut v = open(&rt, &app, &url);
    rt.block_on(v.handshake());
    let (rects, _, _) = rt.block_on(v.first_update(1024, 768));
    assert!(rects >= 1, "a view-only viewer still gets the screen");
    let before = app.list(&token)[0]["lastActiveTime"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(v.type_key(0x61));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        app.list(&token)[0]["lastActiveTime"].as_str().unwrap(),
        before,
        "dropped input must not count as activity"
    );
    // A message the gateway cannot frame ends a view-only connection (policy violation).
    rt.block_on(v.send(&[77, 0, 0, 0]));
    assert_eq!(rt.block_on(v.closed()), Some(1008));
}

#[test]
fn a_viewer_that_stops_answering_pings_is_dropped_and_one_that_answers_stays() {
    if !real_parts("heartbeat") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn_with(Options {
        extra_toml: "[gateway]\nheartbeat = \"400ms\"\n".into(),
        ..Options::default()
    });
    let (_token, _id, url) = desktop(&app, "sara");
    let mut lively = open(&rt, &app, &url);
    rt.block_on(lively.handshake());
    let mut silent = open(&rt, &app, &url);
    rt.block_on(silent.handshake());
    // The lively viewer reads (so its WebSocket answers pings); the silent one does not, and
    // is dropped after two unanswered pings (at about 1.2 s). The gateway then waits up to a
    // second for the closing handshake, so reading it at 1.6 s shows the close frame.
    rt.block_on(lively.pump(Duration::from_millis(1600)));
    assert_eq!(rt.block_on(silent.closed()), Some(4002));
    let (rects, _, _) = rt.block_on(lively.first_update(1024, 768));
    assert!(rects >= 1, "the answering viewer is still served");
}

/// A viewer that stops reading (its TCP window closes) is dropped within
/// `gateway.write_timeout`, and its desktop's `connections` returns to 0.
#[test]
fn a_viewer_that_stops_reading_is_dropped_within_the_write_timeout() {
    if !real_parts("stalled viewer") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn_with(Options {
        extra_toml: "[gateway]\nwrite_timeout = \"2s\"\n".into(),
        ..Options::default()
    });
    let (token, id, url) = desktop(&app, "stalled");
    let mut v = open(&rt, &app, &url);
    rt.block_on(v.handshake());
    // Ask for the whole screen (3 MiB in Raw) over and over, and never read again: the
    // socket buffers fill within a second and the gateway's writes stop going through.
    rt.block_on(v.send(&[2, 0, 0, 1, 0, 0, 0, 0]));
    assert_eq!(app.list(&token)[0]["connections"], 1);
    let asked = Instant::now();
    let mut dropped = false;
    let mut cut_off = None;
    for round in 0.. {
        if dropped || asked.elapsed() > Duration::from_secs(12) {
            break;
        }
        if cut_off.is_none() {
            let sent = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_millis(50),
                    v.try_send(&[3, 0, 0, 0, 0, 0, 4, 0, 3, 0]),
                )
                .await
            });
            if sent == Ok(false) {
                cut_off = Some(asked.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        // A look five times a second: within the user's rate limit.
        if round % 10 == 9 {
            dropped = app.list(&token)[0]["connections"] == 0;
        }
    }
    eprintln!("the gateway cut the stalled viewer off after {cut_off:?}");
    assert!(dropped, "a viewer that reads nothing is still connected");
    eprintln!(
        "stalled viewer dropped {:?} after it stopped reading",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "dropped before the write timeout"
    );
    assert!(app.log_text().contains("ViewerStalled"), "the log says why");
    drop(v);
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

/// One viewer more than `gateway.max_viewers_per_session` is refused with a plain reason;
/// when one leaves, another may come.
#[test]
fn the_viewer_past_the_per_session_limit_is_refused() {
    if !real_parts("viewer limit") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn_with(Options {
        extra_toml: "[gateway]\nmax_viewers_per_session = 2\n".into(),
        ..Options::default()
    });
    let (token, id, url) = desktop(&app, "crowd");
    let mut first = open(&rt, &app, &url);
    rt.block_on(first.handshake());
    let mut second = open(&rt, &app, &url);
    rt.block_on(second.handshake());
    let (status, body) = refused(&rt, &ws_url(&app.base, &url));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("already has 2 viewers"),
        "{body}"
    );
    assert_eq!(
        app.list(&token)[0]["connections"],
        2,
        "the refusal changed nothing"
    );
    drop(first);
    assert!(eventually(Duration::from_secs(5), || {
        app.list(&token)[0]["connections"] == 1
    }));
    let mut third = open(&rt, &app, &url);
    rt.block_on(third.handshake());
    drop((second, third));
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

/// A view-only viewer authenticates with the desktop's view-only password, so Xvnc itself
/// keeps the clipboard from it: it receives no ServerCutText while a full viewer of the same
/// desktop does, and what it sends as ClientCutText never reaches the desktop.
#[test]
fn a_view_only_viewer_neither_receives_nor_sends_the_clipboard() {
    if !real_parts("view-only clipboard") {
        return;
    }
    let rt = runtime();
    let app = TestApp::spawn();
    let (token, id, url) = desktop(&app, "cutter");
    let display = app.list(&token)[0]["displayNumber"].as_u64().unwrap();
    let path = format!("/hpc/openapi/v2/desktop/vnc/{id}/launchurl?viewOnly=true");
    let watch_url = app.call("GET", &path, Some(&token)).1["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut full = open(&rt, &app, &url);
    rt.block_on(full.handshake());
    let mut watcher = open(&rt, &app, &watch_url);
    rt.block_on(watcher.handshake());
    // Raw only, and no update requests: from now on the server sends nothing unasked but
    // clipboard and bell messages.
    for v in [&mut full, &mut watcher] {
        rt.block_on(v.send(&[2, 0, 0, 1, 0, 0, 0, 0]));
    }
    std::thread::sleep(Duration::from_millis(300));
    desktop_clipboard(&app.node, display, Some("hpcdesk clipboard secret"));

    let head = rt.block_on(full.recv_exact(8)).unwrap();
    assert_eq!(head[0], 3, "the full viewer gets ServerCutText");
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let text = rt.block_on(full.recv_exact(len)).unwrap();
    assert_eq!(String::from_utf8_lossy(&text), "hpcdesk clipboard secret");
    rt.block_on(watcher.pump(Duration::from_secs(2)));
    assert!(
        watcher.buffered().is_empty(),
        "the view-only viewer got {:?}",
        watcher.buffered()
    );

    // And what it sends does not reach the desktop's clipboard.
    let mut cut = vec![6, 0, 0, 0];
    cut.extend_from_slice(&12u32.to_be_bytes());
    cut.extend_from_slice(b"from watcher");
    rt.block_on(watcher.send(&cut));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        desktop_clipboard(&app.node, display, None),
        "hpcdesk clipboard secret"
    );
    drop((full, watcher));
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
