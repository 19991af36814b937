//! Every way a session ends goes through one place, with the same effects: its grants are
//! refused from then on, its open viewers are closed, and the audit log says how it ended.
//! Here: delete and a desktop that died (local); the idle sweep is in `sweep.rs`, an ended
//! Slurm job in `slurm.rs`, a failed start in `errors.rs` (no grant is ever issued for it).

use std::time::Duration;

use crate::helpers::*;
use crate::viewer::{Connect, connect, open_viewer, runtime};

fn refused(rt: &tokio::runtime::Runtime, ws: &str) -> bool {
    matches!(rt.block_on(connect(ws)), Connect::Refused(403, _))
}

#[test]
fn a_deleted_or_dead_desktop_has_its_grants_refused_and_its_viewers_closed() {
    if !real_parts("ending") {
        return;
    }
    let app = TestApp::spawn();
    let rt = runtime();

    // Deleted.
    let token = app.token("end-del");
    let id = app.create(&token)["data"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut viewer, _, ws) = open_viewer(&rt, &app, &token, &id);
    assert_eq!(app.delete(&token, &id)["code"], "0");
    let code =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), viewer.closed()).await });
    assert_eq!(code, Ok(Some(4001)), "the viewer of a deleted desktop");
    assert!(refused(&rt, &ws), "the grant of a deleted desktop");
    assert!(kinds(&audit(&app, "end-del")).contains(&"session_deleted".to_owned()));

    // Its Xvnc died.
    let token = app.token("end-dead");
    let created = app.create(&token);
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let display = created["data"]["displayNumber"].as_u64().unwrap();
    let (mut viewer, _, ws) = open_viewer(&rt, &app, &token, &id);
    let pid = app
        .xvnc_pids()
        .into_iter()
        .find(|p| cmdline(*p).iter().any(|a| *a == format!(":{display}")))
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let code =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), viewer.closed()).await });
    assert!(code.is_ok(), "the viewer of a dead desktop stays open");
    assert!(
        eventually(Duration::from_secs(5), || app.list(&token)[0]["status"]
            == "failed"),
        "{:?}",
        app.list(&token)
    );
    assert!(refused(&rt, &ws), "the grant of a dead desktop");
    assert_eq!(app.launch_url(&token, &id)["code"], "815008");
    assert!(kinds(&audit(&app, "end-dead")).contains(&"session_failed".to_owned()));
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
