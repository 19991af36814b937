//! Multi-user security, tried the way a user of the cluster would: each test attacks one
//! boundary and shows the attack fails and changed nothing.

use std::process::Command;

use crate::helpers::*;
use crate::viewer::{open_viewer, runtime};

/// The account whose home (0700) root without its file capabilities cannot enter, as on an
/// NFS home exported with root_squash.
const PRIVATE_USER: &str = "hdprivate";

/// Runs what follows as root without the capabilities that let it into others' files.
fn without_file_capabilities() -> Vec<String> {
    [
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_home_root_cannot_enter_still_gets_a_working_desktop() {
    if !real_parts("private home") {
        return;
    }
    let Some(user) = nix::unistd::User::from_name(PRIVATE_USER).ok().flatten() else {
        let msg = format!("private home: no account {PRIVATE_USER} (ci/test.sh creates it)");
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&user.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&user.dir, Some(user.uid), Some(user.gid)).unwrap();
    // The precondition: such a root really cannot enter it.
    let wrapper = without_file_capabilities();
    let probe = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg("ls")
        .arg(&user.dir)
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "root without DAC capabilities could list {}",
        user.dir.display()
    );

    let app = TestApp::spawn_with(Options {
        wrapper,
        ..Options::default()
    });
    let token = token_with("private", PRIVATE_USER, |_| {});
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    assert_eq!(created["data"]["status"], "running");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let rt = runtime();
    let (mut viewer, init, _) = open_viewer(&rt, &app, &token, &id);
    assert!(rt.block_on(viewer.full_update(init.width, init.height)) >= 1);
    drop(viewer);
    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(app.xvnc_pids().is_empty(), "the desktop is gone");
}
