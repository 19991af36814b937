//! The `hpcdesk desktop` client and `hpcdesk token` against a running server.

use crate::helpers::*;

#[test]
fn the_cli_creates_lists_opens_and_deletes_a_desktop() {
    if !real_parts("CLI") {
        return;
    }
    let app = TestApp::spawn();
    let cfg = path_of(&app.config);
    // `hpcdesk token` signs with the configured secret.
    let (ok, token, err) = run_cli(
        &[
            "--config",
            &cfg,
            "token",
            "--user",
            "judy",
            "--compute-user",
            &compute_user(),
        ],
        &[],
    );
    assert!(ok, "token: {err}");
    let token = token.trim().to_owned();
    let env = [
        ("HPCDESK_TOKEN", token.as_str()),
        ("HPCDESK_API", app.base.as_str()),
    ];

    let (ok, out, err) = run_cli(&["desktop", "create"], &env);
    assert!(ok, "create: {out}\n{err}");
    assert!(out.starts_with("SESSION"), "{out}");
    assert!(out.contains("running"), "{out}");
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(id.starts_with(&format!("{}--", app.node)), "{id}");

    let (ok, out, _) = run_cli(&["desktop", "list", "--json"], &env);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"][0]["sessionId"], id.as_str());

    let (ok, out, _) = run_cli(&["desktop", "url", &id], &env);
    assert!(ok);
    assert!(
        out.trim()
            .starts_with(&format!("{}/vnc.html?path=/vncws?token=", app.base)),
        "{out}"
    );

    let (ok, out, _) = run_cli(&["desktop", "delete", &id], &env);
    assert!(ok);
    assert_eq!(out.trim(), format!("deleted {id}"));

    let (ok, _, err) = run_cli(&["desktop", "url", &id], &env);
    assert!(!ok);
    assert!(err.contains("815010"), "{err}");
}

#[test]
fn the_cli_reports_an_unreachable_server_plainly() {
    let (ok, _, err) = run_cli(
        &[
            "desktop",
            "--api",
            "http://127.0.0.1:9",
            "--token",
            "x",
            "list",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("cannot reach http://127.0.0.1:9"), "{err}");
}
