//! The server's log as an operator reads it, from `hpcdesk serve` with its stderr a pipe (as
//! under systemd): one access line per answer, with its SCNet code, path and caller; nothing
//! of a query (grant tokens, sealed VNC passwords) or of a token; no colour codes.

use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

const VNC: &str = "/hpc/openapi/v2/desktop/vnc";

/// The log's access lines (target `hpcdesk::access`).
fn access_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("hpcdesk::access"))
        .collect()
}

/// Whether one of `lines` holds every one of `parts`.
fn any_with(lines: &[&str], parts: &[&str]) -> bool {
    lines.iter().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// The value of `name` in a URL's query (up to the next `&`).
fn query_value<'a>(url: &'a str, name: &str) -> &'a str {
    url.split(&format!("{name}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .split('&')
        .next()
        .unwrap()
}

#[test]
fn each_answer_is_one_access_line_with_its_code_and_caller_and_never_a_query() {
    let app = TestApp::spawn();
    let token = app.token("alice");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let launched = app.launch_url(&token, &id);
    assert_eq!(launched["code"], "0", "{launched}");
    let url = launched["data"]["novncUrl"].as_str().unwrap().to_owned();
    let (grant, mm) = (query_value(&url, "token"), query_value(&url, "mm"));
    // A viewer opens the gateway with the grant and the sealed password in its query.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(connect(&ws_url(&app.base, &url))) {
        Connect::Open(v) => drop(v),
        Connect::Refused(status, body) => panic!("refused {status}: {body}"),
    }
    // Refused calls: no token, and someone else's session.
    let (_, none) = app.call("GET", VNC, None);
    assert_eq!(none["code"], "10003", "{none}");
    let bob = app.token("bob");
    assert_eq!(app.launch_url(&bob, &id)["code"], "10008");

    let log = app.log_text();
    let lines = access_lines(&log);
    let launch_path = format!("path=\"{VNC}/{id}/launchurl\"");
    let launches: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(&launch_path))
        .collect();
    assert_eq!(launches.len(), 2, "one line per launch URL asked:\n{log}");
    assert!(
        any_with(
            &launches,
            &[
                " INFO ",
                "user=\"alice\"",
                "code=\"0\"",
                "status=200",
                "micros="
            ]
        ),
        "alice's launch URL, answered 0:\n{launches:?}"
    );
    assert!(
        any_with(&launches, &["user=\"bob\"", "code=\"10008\""]),
        "bob's refusal, with its SCNet code (HTTP says 200 to both):\n{launches:?}"
    );
    assert!(
        any_with(
            &lines,
            &[&format!("path=\"{VNC}\""), "user=\"-\"", "code=\"10003\""]
        ),
        "the call without a token, with no caller:\n{lines:?}"
    );
    assert!(
        any_with(&lines, &["path=\"/vncws\"", "status=101"]),
        "the viewer's upgrade:\n{lines:?}"
    );
    for (what, secret) in [("grant", grant), ("sealed password", mm), ("token", &token)] {
        assert!(!log.contains(secret), "the {what} was logged");
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
