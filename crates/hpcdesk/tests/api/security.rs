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

/// Processes that run as `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    procs()
        .into_iter()
        .filter(|p| {
            !zombie(*p) && std::fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() == uid)
        })
        .collect()
}

/// Tokens whose `computeUser` is the superuser, a system account, `nobody`, or an account
/// below `auth.min_uid` are refused with 10008 by every launcher before anything is written
/// or run: no session, no process as them, an audit line.
#[test]
fn tokens_for_root_system_accounts_and_low_uids_are_refused_by_every_launcher() {
    if !real_parts("account policy") {
        return;
    }
    let low = compute_user();
    let low_uid = nix::unistd::User::from_name(&low)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    // The test account counts as "below min_uid" for these apps.
    let opts = || Options {
        env: vec![("HPCDESK_AUTH__MIN_UID".into(), (low_uid + 1).to_string())],
        ..Options::default()
    };
    let apps = [
        ("local", TestApp::spawn_with(opts())),
        ("ssh", crate::ssh::ssh_app_with(opts())),
        ("slurm", crate::slurm::slurm_app_opts("", opts())),
    ];
    let accounts = ["root", "daemon", "nobody", low.as_str()];
    let uids: Vec<u32> = accounts
        .iter()
        .map(|a| {
            nix::unistd::User::from_name(a)
                .unwrap()
                .unwrap()
                .uid
                .as_raw()
        })
        .collect();
    // daemon and nobody: the test account runs other tests' desktops meanwhile, and root
    // always runs something (for those, no agent with these users may have run).
    let system = &uids[1..3];
    let before: Vec<Vec<i32>> = system.iter().map(|u| processes_of(*u)).collect();
    for (kind, app) in &apps {
        for account in accounts {
            let user = format!("pol-{kind}-{account}");
            let token = token_with(&user, account, |_| {});
            let (_, v) = app.call("PUT", "/hpc/openapi/v2/desktop/vnc", Some(&token));
            assert_eq!(v["code"], "10008", "{kind} {account}: {v}");
            let msg = v["msg"].as_str().unwrap();
            assert!(
                msg.contains(account) && msg.contains("may not run desktops"),
                "{kind} {account}: {msg}"
            );
            assert!(app.list(&token).is_empty(), "{kind} {account}: a session");
            assert!(
                kinds(&audit(app, &user)).contains(&"account_refused".to_owned()),
                "{kind} {account}: not audited"
            );
        }
    }
    let after: Vec<Vec<i32>> = system.iter().map(|u| processes_of(*u)).collect();
    for ((account, b), a) in accounts[1..3].iter().zip(&before).zip(&after) {
        let new: Vec<_> = a.iter().filter(|p| !b.contains(p)).collect();
        assert!(new.is_empty(), "processes as {account}: {new:?}");
    }
    assert!(
        !procs().into_iter().any(|p| {
            let argv = cmdline(p);
            argv.windows(2).any(|w| w[0] == "node" && w[1] == "start")
                && argv.iter().any(|a| a.starts_with("pol-"))
        }),
        "an agent ran"
    );
}

/// Runs `tests/browser/crafted-link.mjs` on `url`: the page's state, message, CSP header
/// and every request it made.
fn open_in_browser(url: &str) -> serde_json::Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/browser/crafted-link.mjs");
    let out = {
        let _one = crate::browser::browser_lock();
        Command::new("node").arg(script).arg(url).output().unwrap()
    };
    assert!(
        out.status.success(),
        "browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A link whose `path` names another host (a user's own server, posing as a desktop to
/// catch keystrokes and the clipboard) opens nothing there: the viewer refuses it in plain
/// words, and a listener on that host records no connection. The pages carry the CSP.
#[test]
fn a_crafted_link_naming_another_host_opens_no_connection_there() {
    if !real_parts("crafted link") || !crate::browser::browser_parts("crafted link") {
        return;
    }
    let app = TestApp::spawn();
    let token = app.token("crafty");
    let created = app.create(&token);
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let real = app.launch_url(&token, &id)["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    // As the API writes it: /vnc.html?path=/vncws?token=<grant>&mm=<sealed>&resize=remote.
    let grant = real
        .split("token=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap()
        .to_owned();
    let mm = real
        .split("mm=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap()
        .to_owned();

    // The other host: another origin (a port of its own) that counts who comes.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    trap.set_nonblocking(true).unwrap();
    let came = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (came, stop) = (came.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if trap.accept().is_ok() {
                    came.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    for crafted in [
        format!("//127.0.0.1:{trap_port}/vncws?token={grant}"),
        format!("http://127.0.0.1:{trap_port}/vncws?token={grant}"),
        format!("ws://127.0.0.1:{trap_port}/vncws?token={grant}"),
        // The old trick: `host@elsewhere` as the authority of the WebSocket URL.
        format!("@127.0.0.1:{trap_port}/vncws?token={grant}"),
    ] {
        let url = format!("{}/vnc.html?path={crafted}&mm={mm}&resize=remote", app.base);
        let seen = open_in_browser(&url);
        eprintln!("{crafted}: {seen}");
        assert_eq!(seen["status"], "failed", "{crafted}: {seen}");
        let msg = seen["message"].as_str().unwrap();
        assert!(
            msg.contains("points away from this site") || msg.contains("Cannot open the desktop"),
            "{crafted}: {msg}"
        );
        for r in seen["requests"].as_array().unwrap() {
            let host = r
                .as_str()
                .unwrap()
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            assert!(
                !host.ends_with(&format!(":{trap_port}")),
                "{crafted}: the page asked the other host: {r}"
            );
        }
        let csp = seen["csp"].as_str().unwrap();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().unwrap();
    assert_eq!(
        came.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a connection reached the trap"
    );

    // The real link still opens its desktop.
    let ok = open_in_browser(&format!("{}{real}", app.base));
    assert_eq!(ok["status"], "connected", "{ok}");
    // And the portal page carries the policy too.
    let portal = reqwest::blocking::get(app.url("/")).unwrap();
    let csp = portal.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
