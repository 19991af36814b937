//! The desktop a create asks for (`desktop`, `geometry`, body or query string), the list of
//! desktops, and screenshots, against real Xvnc desktops.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::viewer::{Connect, connect, runtime, ws_url};

const CREATE: &str = "/hpc/openapi/v2/desktop/vnc";

fn create_with(app: &TestApp, token: &str, query: &str, body: Option<&str>) -> Value {
    let path = format!("{CREATE}{query}");
    app.call_with("PUT", &path, Some(token), |r| match body {
        Some(b) => r.body(b.to_owned()),
        None => r,
    })
    .1
}

fn commands_of(app: &TestApp, display: u64) -> Vec<String> {
    app.desktop_pids(display)
        .into_iter()
        .map(|p| cmdline(p).join(" "))
        .collect()
}

/// The screen size the desktop itself reports to a viewer (ServerInit, through the gateway).
fn server_init(app: &TestApp, token: &str, id: &str) -> (u16, u16) {
    let l = app.launch_url(token, id);
    let url = ws_url(&app.base, l["data"]["novncUrl"].as_str().unwrap());
    let rt = runtime();
    let Connect::Open(mut v) = rt.block_on(connect(&url)) else {
        panic!("the viewer was refused")
    };
    let init = rt.block_on(v.handshake());
    (init.width, init.height)
}

#[test]
fn a_create_names_its_desktop_and_screen_size_and_a_bad_one_changes_nothing() {
    if !real_parts("desktop choice") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("dora");
    let (_, listed) = app.call("GET", "/hpcdesk/v1/desktops", Some(&token));
    assert_eq!(listed["code"], "0", "{listed}");
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"twm") && names.contains(&"xfce"),
        "{listed}"
    );
    let default: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["default"] == true)
        .collect();
    assert_eq!(default.len(), 1, "{listed}");
    assert_eq!(
        default[0]["name"], "twm",
        "the tests' launcher.default_desktop"
    );

    // Bad choices: 10004 naming what is allowed, and nothing created.
    for (query, body, says) in [
        ("", Some(r#"{"desktop":"nope"}"#), "xfce"),
        ("?desktop=nope", None, "twm"),
        ("", Some(r#"{"desktop":5}"#), "desktop must be a string"),
        (
            "",
            Some(r#"{"geometry":"10x10"}"#),
            "between 640x480 and 7680x4320",
        ),
        ("?geometry=1280x720;rm", None, "WIDTHxHEIGHT"),
        ("", Some(r#"{"desktop":"twm""#), "not valid JSON"),
        ("?desktop=xfce", Some(r#"{"desktop":"twm"}"#), "given twice"),
    ] {
        let r = create_with(&app, &token, query, body);
        assert_eq!(r["code"], "10004", "{query} {body:?}: {r}");
        assert_eq!(r["data"], "");
        let msg = r["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{query} {body:?}: {msg}");
        assert!(
            app.list(&token).is_empty(),
            "a refused create left a session"
        );
    }
    assert!(app.xvnc_pids().is_empty());

    let r = create_with(
        &app,
        &token,
        "",
        Some(r#"{"desktop":"twm","geometry":"1280x720"}"#),
    );
    assert_eq!(r["code"], "0", "{r}\n{}", app.log_text());
    let s = &r["data"];
    assert_eq!(
        (s["desktop"].as_str(), s["geometry"].as_str()),
        (Some("twm"), Some("1280x720"))
    );
    let id = s["sessionId"].as_str().unwrap().to_owned();
    let display = s["displayNumber"].as_u64().unwrap();
    assert_eq!(server_init(&app, &token, &id), (1280, 720));
    let commands = commands_of(&app, display);
    assert!(
        commands
            .iter()
            .any(|c| c.ends_with("twm") || c.contains("twm ")),
        "{commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains("xfce4-session")),
        "{commands:?}"
    );
    // One desktop per user: asking again for another returns this one, unchanged.
    let again = create_with(&app, &token, "", Some(r#"{"desktop":"xfce"}"#));
    assert_eq!(again["data"]["sessionId"], id.as_str());
    assert_eq!(again["data"]["desktop"], "twm");
    assert_eq!(app.list(&token)[0]["desktop"], "twm");
    assert_eq!(app.delete(&token, &id)["code"], "0");

    // SCNet portals send text or nothing: the defaults, with a query string if there is one.
    let other = app.token("elia");
    let r = create_with(&app, &other, "?geometry=800x600", Some("hello"));
    assert_eq!(r["code"], "0", "{r}");
    assert_eq!(r["data"]["geometry"], "800x600");
    assert_eq!(r["data"]["desktop"], "twm");
    let id = r["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(server_init(&app, &other, &id), (800, 600));
    assert_eq!(app.delete(&other, &id)["code"], "0");
}

/// GET a screenshot: the PNG's (width, height, RGB pixels), or the JSON envelope.
fn screenshot(
    app: &TestApp,
    token: &str,
    id: &str,
    query: &str,
) -> Result<(u32, u32, Vec<u8>), Value> {
    let resp = reqwest::blocking::Client::new()
        .get(app.url(&format!("/hpcdesk/v1/desktop/vnc/{id}/screenshot{query}")))
        .header("token", token)
        .send()
        .unwrap();
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().unwrap();
    if ctype != "image/png" {
        return Err(serde_json::from_slice(&bytes).unwrap());
    }
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

/// Whether two RGB images of width `w` differ inside the rectangle `[x0, x1) × [y0, y1)`.
fn differ(a: &[u8], b: &[u8], w: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> bool {
    (y0..y1).any(|y| {
        let row = |img: &[u8]| {
            let s = ((y * w + x0) * 3) as usize;
            img[s..s + ((x1 - x0) * 3) as usize].to_vec()
        };
        row(a) != row(b)
    })
}

#[test]
fn a_screenshot_shows_the_screen_to_its_owner_only_and_is_no_activity() {
    if !real_parts("screenshot") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("fern");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let active = || {
        app.list(&token)[0]["lastActiveTime"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = active();

    let (w, h, _) = screenshot(&app, &token, &id, "?width=320").unwrap();
    assert_eq!((w, h), (320, 240), "scaled from 1024x768");
    // Screenshots are not activity (lastActiveTime has a resolution of a second).
    std::thread::sleep(Duration::from_millis(1100));
    screenshot(&app, &token, &id, "?width=64").unwrap();
    assert_eq!(active(), before, "a screenshot counted as activity");
    assert_eq!(app.list(&token)[0]["connections"], 0);

    // A viewer puts the pointer into the desktop's terminal (the xterm at +20+20), so that
    // the pointer Xvnc draws into the screenshots is in the same place in both.
    let l = app.launch_url(&token, &id);
    let rt = runtime();
    let url = ws_url(&app.base, l["data"]["novncUrl"].as_str().unwrap());
    let Connect::Open(mut v) = rt.block_on(connect(&url)) else {
        panic!("viewer refused")
    };
    rt.block_on(async {
        v.handshake().await;
        v.send(&[5, 0, 0, 200, 0, 150]).await;
        v.pump(Duration::from_millis(1000)).await;
    });
    let (w, h, first) = screenshot(&app, &token, &id, "?width=1024").unwrap();
    assert_eq!((w, h), (1024, 768));
    rt.block_on(async {
        for c in "echo hpcdesk was here".bytes() {
            v.type_key(u32::from(c)).await;
        }
        v.pump(Duration::from_millis(1000)).await;
    });
    let (_, _, second) = screenshot(&app, &token, &id, "?width=1024").unwrap();
    drop(v);
    assert!(
        differ(&first, &second, 1024, (20, 20, 620, 420)),
        "the terminal looks the same after typing into it"
    );
    assert!(
        !differ(&first, &second, 1024, (700, 500, 1024, 768)),
        "the screen changed far from the terminal"
    );
    assert_ne!(active(), before, "the viewer's input is activity");

    // Another user; bad widths.
    let other = app.token("mallory");
    let e = screenshot(&app, &other, &id, "").unwrap_err();
    assert_eq!(e["code"], "10008", "{e}");
    for q in ["?width=0", "?width=abc", "?width=99999", "?width=-5"] {
        let e = screenshot(&app, &token, &id, q).unwrap_err();
        assert_eq!(e["code"], "10004", "{q}: {e}");
        assert!(
            e["msg"].as_str().unwrap().contains("from 16 to 3840"),
            "{e}"
        );
    }
    // Rate-limited per desktop (burst 5 per second by default).
    let codes: Vec<String> = (0..8)
        .map(|_| match screenshot(&app, &token, &id, "?width=32") {
            Ok(_) => "png".to_owned(),
            Err(e) => e["code"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert!(codes.contains(&"10011".to_owned()), "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "png" || c == "10011"),
        "{codes:?}"
    );
    assert!(eventually(
        Duration::from_secs(3),
        || app.list(&token)[0]["connections"] == 0
    ));

    assert_eq!(app.delete(&token, &id)["code"], "0");
    let e = screenshot(&app, &token, &id, "").unwrap_err();
    assert_eq!(e["code"], "815010", "{e}");
}

#[test]
fn the_cli_lists_the_desktops_and_creates_the_one_asked_for() {
    if !real_parts("desktop choice cli") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("gus");
    let env = [("HPCDESK_TOKEN", token.as_str())];
    let cli = |args: &[&str]| {
        let mut all = vec!["desktop", "--api", &app.base];
        all.extend_from_slice(args);
        run_cli(&all, &env)
    };
    let (ok, out, err) = cli(&["desktops"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("xfce ") && l.contains("XFCE")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("twm ") && l.trim_end().ends_with("yes")),
        "{out}"
    );

    let (ok, _, err) = cli(&["create", "--desktop", "nope"]);
    assert!(!ok);
    assert!(
        err.contains("error 10004") && err.contains("xfce, twm"),
        "{err}"
    );
    let (ok, _, err) = cli(&["create", "--geometry", "huge"]);
    assert!(!ok);
    assert!(err.contains("error 10004"), "{err}");
    assert!(app.list(&token).is_empty());

    let (ok, out, err) = cli(&["create", "--desktop", "twm", "--geometry", "1024x600"]);
    assert!(ok, "{err}\n{}", app.log_text());
    assert!(
        out.contains("DESKTOP") && out.contains(" twm ") && out.contains("1024x600"),
        "{out}"
    );
    let s = &app.list(&token)[0];
    assert_eq!(
        (s["desktop"].as_str(), s["geometry"].as_str()),
        (Some("twm"), Some("1024x600"))
    );
    let id = s["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
