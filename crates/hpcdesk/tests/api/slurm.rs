//! The `slurm` launcher against a real single-node Slurm with munge (`ci/slurm.sh`): a
//! desktop is a batch job that goes pending → running, opens in the browser through the
//! gateway, and is gone (job and Xvnc) after delete; a job cancelled outside hpcdesk leaves
//! its session `stopped` with the reason within a reconcile interval.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::browser::{browser_parts, type_in_desktop};
use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

fn slurm_conf() -> PathBuf {
    std::env::var_os("HPCDESK_SLURM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/hpcdesk-slurm"))
        .join("slurm.conf")
}

fn slurm(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("SLURM_CONF", slurm_conf())
        .output();
    match out {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Slurm answers; skips loudly outside CI, fails in CI.
fn slurm_parts(test: &str) -> bool {
    if !real_parts(test) {
        return false;
    }
    let (ok, out) = slurm("sinfo", &["-h", "-o", "%T"]);
    let up = ok
        && ["idle", "mixed", "allocated"]
            .iter()
            .any(|s| out.contains(s));
    if !up {
        let msg = format!(
            "{test}: no Slurm (run `ci/slurm.sh up` as root): {}",
            out.trim()
        );
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
    }
    up
}

/// One Slurm test at a time: the single node has two CPUs.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn slurm_app() -> TestApp {
    TestApp::spawn_with(Options {
        launcher_toml: "kind = \"slurm\"".into(),
        extra_toml: format!(
            "[launcher.slurm]\nagent = \"{}\"\nlisten = \"localhost\"\ntime_limit = \"10:00\"\n",
            agent_binary().display()
        ),
        env: vec![("SLURM_CONF".into(), slurm_conf().display().to_string())],
        ..Options::default()
    })
}

/// hpcdesk jobs in the queue: (id, state).
/// hpcdesk's jobs in the queue (named `hpcdesk-<session marker>`): (id, state).
fn hpcdesk_jobs() -> Vec<(String, String)> {
    let (_, out) = slurm("squeue", &["-h", "-o", "%i|%T|%j"]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            match f.as_slice() {
                [id, state, name] if name.starts_with("hpcdesk-") => {
                    Some(((*id).to_owned(), (*state).to_owned()))
                }
                _ => None,
            }
        })
        .collect()
}

fn job_xvnc() -> usize {
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    procs()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            !zombie(*p)
                && argv.first().is_some_and(|a| a.contains("Xvnc"))
                && argv
                    .iter()
                    .any(|a| a.contains(&format!("/.hpcdesk/desktops/{host}-")))
        })
        .count()
}

fn running(app: &TestApp, token: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = eventually(Duration::from_secs(30), || {
        last = app.list(token).first().cloned().unwrap_or_default();
        last["status"] == "running"
    });
    assert!(
        ok,
        "the desktop job did not start: {last}\n{}",
        app.log_text()
    );
    last
}

#[test]
fn a_desktop_is_a_slurm_job_that_opens_in_the_browser_and_goes_with_delete() {
    if !slurm_parts("slurm desktop") {
        return;
    }
    let _x = exclusive();
    let app = slurm_app();
    let token = app.token("slurm-a");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let status = created["data"]["status"].as_str().unwrap();
    assert!(
        ["pending", "starting", "running"].contains(&status),
        "{created}"
    );
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with(&format!("slurm--{}--SIG--", compute_user())),
        "{id}"
    );
    let s = running(&app, &token);
    assert_eq!(
        s["sessionId"],
        id.as_str(),
        "the id stays from submission on"
    );
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(s["hostName"], host.as_str());
    let jobs = hpcdesk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].1, "RUNNING");

    let url = app.launch_url(&token, &id)["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Connect::Open(mut v) = rt.block_on(connect(&ws_url(&app.base, &url))) else {
        panic!("refused");
    };
    assert_eq!(rt.block_on(v.handshake()).width, 1024);
    drop(v);
    if browser_parts("slurm browser") {
        let job = type_in_desktop(
            &format!("{}{url}", app.base),
            |marker| format!("echo $SLURM_JOB_ID > ~/{marker}"),
            None,
        );
        assert_eq!(job.trim(), jobs[0].0, "the desktop runs inside the job");
    }

    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(
        eventually(Duration::from_secs(10), || hpcdesk_jobs().is_empty()),
        "the job is still queued: {:?}",
        hpcdesk_jobs()
    );
    assert!(
        eventually(Duration::from_secs(10), || job_xvnc() == 0),
        "an Xvnc of the job is left"
    );
    assert!(app.list(&token).is_empty());
}

#[test]
fn a_job_cancelled_outside_hpcdesk_leaves_its_session_stopped_with_the_reason() {
    if !slurm_parts("slurm scancel") {
        return;
    }
    let _x = exclusive();
    let app = slurm_app();
    let token = app.token("slurm-b");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let display = running(&app, &token)["displayNumber"].as_u64().unwrap();
    let jobs = hpcdesk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (ok, out) = slurm("scancel", &[&jobs[0].0]);
    assert!(ok, "{out}");
    let cancelled = std::time::Instant::now();
    let mut last = serde_json::Value::Null;
    let stopped = eventually(Duration::from_secs(10), || {
        last = app.list(&token).first().cloned().unwrap_or_default();
        last["status"] == "stopped"
    });
    assert!(stopped, "{last}\n{}", app.log_text());
    eprintln!("cancelled job noticed after {:?}", cancelled.elapsed());
    let reason = last["statusReason"].as_str().unwrap();
    assert!(
        reason.contains(&jobs[0].0) && reason.contains("CANCELLED"),
        "{reason}"
    );
    assert_eq!(app.launch_url(&token, &id)["code"], "815008");
    assert!(
        eventually(Duration::from_secs(10), || job_xvnc() == 0),
        "an Xvnc of the job is left"
    );
    // The job trapped TERM and stopped its desktop cleanly: no X lock is left behind.
    let lock = std::fs::read_to_string(format!("/tmp/.X{display}-lock")).unwrap_or_default();
    assert!(
        lock.trim().is_empty() || std::path::Path::new(&format!("/proc/{}", lock.trim())).exists(),
        "a stale X lock of display :{display} is left"
    );
    // The ended session goes away when deleted.
    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(app.list(&token).is_empty());
}
