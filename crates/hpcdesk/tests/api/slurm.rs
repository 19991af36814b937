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

/// Slurm answers; skips loudly outside CI, fails in CI. A node still `completing` the job of
/// the test before (its processes being cleaned up) is waited for, up to 30 s.
fn slurm_parts(test: &str) -> bool {
    if !real_parts(test) {
        return false;
    }
    let state = || {
        let (ok, out) = slurm("sinfo", &["-h", "-o", "%T"]);
        let up = ok
            && ["idle", "mixed", "allocated"]
                .iter()
                .any(|s| out.contains(s));
        (up, ok && out.contains("completing"), out)
    };
    let mut seen = state();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.0 && seen.1 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        seen = state();
    }
    let (up, _, out) = seen;
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

/// One Slurm test at a time: the single node has two CPUs. Jobs of hpcdesk's that a test
/// run killed midway left behind are cancelled first, so they hold no CPU.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let left: Vec<String> = hpcdesk_jobs().into_iter().map(|(id, _)| id).collect();
    if !left.is_empty() {
        eprintln!("cancelling hpcdesk jobs left by an earlier run: {left:?}");
        let ids: Vec<&str> = left.iter().map(String::as_str).collect();
        let _ = slurm("scancel", &ids);
        eventually(Duration::from_secs(15), || hpcdesk_jobs().is_empty());
    }
    guard
}

fn slurm_app() -> TestApp {
    slurm_app_with("")
}

/// A slurm app with more `[launcher.slurm]` keys.
fn slurm_app_with(slurm_toml: &str) -> TestApp {
    slurm_app_opts(slurm_toml, Options::default())
}

/// A slurm app with more `[launcher.slurm]` keys and other options.
pub fn slurm_app_opts(slurm_toml: &str, opts: Options) -> TestApp {
    let mut env = opts.env.clone();
    env.push(("SLURM_CONF".into(), slurm_conf().display().to_string()));
    TestApp::spawn_with(Options {
        launcher_toml: "kind = \"slurm\"".into(),
        extra_toml: format!(
            "[launcher.slurm]\nagent = \"{}\"\nlisten = \"localhost\"\n{}{slurm_toml}\n",
            agent_binary().display(),
            if slurm_toml.contains("time_limit =") {
                ""
            } else {
                "time_limit = \"10:00\"\n"
            }
        ),
        env,
        ..opts
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

/// Live Xvnc of Slurm jobs' desktops: only those started inside a job (with the job's
/// `SLURM_JOB_ID`), so a desktop someone started on this machine by hand is not counted.
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
                && environ(*p).iter().any(|kv| kv.starts_with("SLURM_JOB_ID="))
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
    // A viewer is open when the job ends.
    let rt = crate::viewer::runtime();
    let (mut viewer, _, ws) = crate::viewer::open_viewer(&rt, &app, &token, &id);
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
    // Its viewer was closed, and its grant is refused.
    let closed =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), viewer.closed()).await });
    assert!(closed.is_ok(), "the viewer of an ended job stays open");
    assert!(matches!(
        rt.block_on(connect(&ws)),
        Connect::Refused(403, _)
    ));
    assert!(kinds(&audit(&app, "slurm-b")).contains(&"session_ended".to_owned()));
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

/// `sbatch` that takes its time, as on a busy controller: hpcdesk dies while it runs, and the
/// job is submitted after the restart found nothing.
fn slow_sbatch() -> PathBuf {
    let dir = agent_binary().parent().unwrap().to_owned();
    let path = dir.join("slow-sbatch");
    let sbatch = ["/usr/bin/sbatch", "/usr/local/bin/sbatch"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("sbatch");
    std::fs::write(&path, format!("#!/bin/sh\nsleep 3\nexec {sbatch} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One crash of hpcdesk while two users' desktops are being submitted. Afterwards each user
/// has a live session with its one job (and once it runs, its one Xvnc) or no session and
/// no job; their next create works; deleting everything leaves no job and no Xvnc.
fn slurm_crash(name: &str, slurm_toml: &str, pause: Option<&str>, kill_after: Duration) {
    let mut app = slurm_app_with(slurm_toml);
    app.stop();
    app.set_env("HPCDESK_TEST_START_PAUSE", pause);
    app.start();
    let users = [format!("{name}-1"), format!("{name}-2")];
    let threads: Vec<_> = users
        .iter()
        .map(|u| create_in_background(&app, &app.token(u)))
        .collect();
    std::thread::sleep(kill_after);
    app.kill9();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap().0).collect();
    eprintln!(
        "{name}: killed; answers {answers:?}; jobs {:?}",
        hpcdesk_jobs()
    );
    app.set_env("HPCDESK_TEST_START_PAUSE", None);
    app.start();
    // An sbatch still running submits its job after the restart looked: wait until it has,
    // and see the jobs arrive.
    let mut seen = hpcdesk_jobs().len();
    let mut waited = false;
    while procs()
        .into_iter()
        .any(|p| !zombie(p) && cmdline(p).iter().any(|a| a.ends_with("slow-sbatch")))
    {
        waited = true;
        seen = seen.max(hpcdesk_jobs().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    if waited {
        for _ in 0..50 {
            seen = seen.max(hpcdesk_jobs().len());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(seen > 0, "{name}: the late sbatch submitted no job");
        eprintln!("{name}: {seen} jobs submitted after the restart");
    }

    // Settled: one job per live session, none otherwise (a late job is cancelled after the
    // grace period), and the sessions whose job runs have their desktop.
    let admin = token_with("slurm-admin", &compute_user(), |c| c.role = "9".into());
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        let listed = app.list(&admin);
        let jobs = hpcdesk_jobs();
        let live: Vec<_> = listed
            .iter()
            .filter(|s| ["pending", "starting", "running"].contains(&s["status"].as_str().unwrap()))
            .collect();
        let running = live.iter().filter(|s| s["status"] == "running").count();
        last = format!("sessions {listed:?}, jobs {jobs:?}, Xvnc {}", job_xvnc());
        listed.len() == live.len()
            && jobs.len() == live.len()
            && jobs.iter().all(|(_, st)| st == "RUNNING")
            && running == live.len()
            && job_xvnc() == running
    });
    assert!(ok, "{name}: not settled: {last}\n{}", app.log_text());
    eprintln!("{name}: settled: {last}");

    let mut ids = Vec::new();
    for u in &users {
        let token = app.token(u);
        let v = app.create(&token);
        assert_eq!(v["code"], "0", "{name}: {u}'s next create: {v}");
        ids.push((
            token.clone(),
            running(&app, &token)["sessionId"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    assert_eq!(hpcdesk_jobs().len(), users.len(), "one job per user");
    for (token, id) in ids {
        assert_eq!(app.delete(&token, &id)["code"], "0");
    }
    assert!(
        eventually(Duration::from_secs(15), || hpcdesk_jobs().is_empty()
            && job_xvnc() == 0),
        "{name}: jobs or desktops left: {:?}, {}",
        hpcdesk_jobs(),
        job_xvnc()
    );
}

#[test]
fn a_crash_while_desktops_are_submitted_leaves_no_orphan_job_or_desktop() {
    if !slurm_parts("slurm crash") {
        return;
    }
    let _x = exclusive();
    // Before anything was submitted: nothing to adopt, nothing left.
    slurm_crash(
        "sl-launch",
        "orphan_grace = \"1s\"",
        Some("launch:3000"),
        Duration::from_millis(700),
    );
    // Submitted, the job id not recorded yet: the job is found by its name and adopted.
    slurm_crash(
        "sl-sub",
        "orphan_grace = \"1s\"",
        Some("submitted:3000"),
        Duration::from_millis(1500),
    );
    // Killed while sbatch runs: the restart finds no job and ends the session (and removes
    // its job directory); the job that appears later finds no password and fails, or, if it
    // runs, carries the marker of an ended session and is cancelled after the grace period.
    let slow = format!(
        "orphan_grace = \"1s\"\nsbatch = \"{}\"",
        slow_sbatch().display()
    );
    slurm_crash("sl-late", &slow, None, Duration::from_millis(1500));
}

fn sbatch_as(user: &str, name: &str) -> String {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sbatch", "--parsable", "--job-name", name])
        .args(["--output", "/dev/null", "--wrap", "sleep 600"])
        .env("SLURM_CONF", slurm_conf())
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn job_state(job: &str) -> Option<String> {
    let (_, out) = slurm("squeue", &["-h", "-j", job, "-o", "%T"]);
    let s = out.trim();
    (!s.is_empty() && !s.contains("Invalid")).then(|| s.to_owned())
}

/// A job named after the marker of a session that has ended, run by that session's account,
/// is hpcdesk's (a crash between sbatch and recording it): reconcile cancels it once it has
/// been in the queue for `orphan_grace`. Jobs that only look like hpcdesk's are left alone:
/// one whose marker no session has, and one run by another account with a real marker.
#[test]
fn a_job_of_an_ended_session_is_cancelled_after_the_grace_period_and_no_other() {
    if !slurm_parts("slurm orphan job") {
        return;
    }
    let _x = exclusive();
    let app = slurm_app_with("orphan_grace = \"3s\"");
    let token = app.token("slurm-orphan");
    assert_eq!(app.create(&token)["code"], "0");
    let s = running(&app, &token);
    let marker = marker_of_display(s["displayNumber"].as_u64().unwrap());
    let id = s["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(eventually(Duration::from_secs(15), || hpcdesk_jobs().is_empty()));

    let ours = sbatch_as(&compute_user(), &format!("hpcdesk-{marker}"));
    let unknown = sbatch_as(&compute_user(), "hpcdesk-0123456789abcdef0123456789abcdef");
    let other_user = sbatch_as("test_1215", &format!("hpcdesk-{marker}"));
    let submitted = std::time::Instant::now();
    // Not before the grace period…
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        job_state(&ours).is_some(),
        "cancelled before the grace period"
    );
    // …but soon after it.
    assert!(
        eventually(Duration::from_secs(10), || job_state(&ours).is_none()),
        "the orphan job {ours} was not cancelled\n{}",
        app.log_text()
    );
    eprintln!(
        "orphan job cancelled {:?} after it was submitted",
        submitted.elapsed()
    );
    assert!(submitted.elapsed() >= Duration::from_secs(3));
    // The look-alikes are untouched.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        job_state(&unknown).is_some(),
        "a job no session owns was cancelled"
    );
    assert!(
        job_state(&other_user).is_some(),
        "another account's job was cancelled"
    );
    let _ = slurm("scancel", &[&unknown, &other_user]);
}

/// A user whose Slurm job output is a link to `/dev/zero` (and whose desktop cannot start):
/// hpcdesk reads the job's output only through its capped reader, which refuses the link.
/// The create answers 815008 within the start timeout, hpcdesk's memory stays bounded, and
/// another user's create at the same time succeeds.
#[test]
fn a_job_output_linked_to_dev_zero_is_refused_and_slows_no_one_else() {
    if !slurm_parts("slurm flood") || !flood_user("slurm flood") {
        return;
    }
    let _x = exclusive();
    // The desktop cannot start: where its directory goes is a file.
    let _blocked = HomeFile::replace(".hpcdesk/desktops", b"not a directory\n");
    let app = slurm_app();
    // The next job ids, learnt from a job of the user's own; the user links the output of
    // each to /dev/zero as soon as hpcdesk makes the job's directory.
    let probe = sbatch_as(FLOOD_USER, "probe");
    let _ = slurm("scancel", &[&probe]);
    let next: u64 = probe.parse::<u64>().unwrap() + 1;
    let user = nix::unistd::User::from_name(FLOOD_USER).unwrap().unwrap();
    let jobs_dir = user.dir.join(".hpcdesk/jobs");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let linker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut linked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&jobs_dir).into_iter().flatten().flatten() {
                    for j in next..next + 10 {
                        let link = e.path().join(format!("slurm-{j}.out"));
                        if std::os::unix::fs::symlink("/dev/zero", &link).is_ok() {
                            let _ = nix::unistd::fchownat(
                                nix::fcntl::AT_FDCWD,
                                &link,
                                Some(user.uid),
                                Some(user.gid),
                                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                            );
                            linked += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            linked
        })
    };
    let pid = app.pid().unwrap();
    let before = rss_kib(pid);
    let flooded = create_in_background(&app, &token_with("slurm-flood", FLOOD_USER, |_| {}));
    let calm = app.token("slurm-calm");
    assert_eq!(app.create(&calm)["code"], "0");
    let s = running(&app, &calm);
    let (v, took) = flooded.join().unwrap();
    let v = v.expect("an answer");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let linked = linker.join().unwrap();
    let after = rss_kib(pid);
    eprintln!(
        "flooded create: {took:?}, {v}; {linked} links; hpcdesk RSS {before} KiB -> {after} KiB"
    );
    assert!(linked > 0, "the job output was never linked");
    assert_eq!(v["code"], "815008", "{v}");
    // The launcher's start timeout in tests is 20 s.
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert!(
        after.saturating_sub(before) < 100 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
    let id = s["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&calm, &id)["code"], "0");
    assert!(eventually(Duration::from_secs(15), || hpcdesk_jobs().is_empty()));
}

/// The job's time limit as squeue prints it.
fn squeue_limit(job: &str) -> String {
    let (_, out) = slurm("squeue", &["-h", "-j", job, "-o", "%l"]);
    out.trim().to_owned()
}

#[test]
fn a_slurm_desktop_ends_when_its_job_does_and_extends_within_max_time_limit() {
    if !slurm_parts("slurm time limit") {
        return;
    }
    use crate::timelimit::{extend, time};
    let _x = exclusive();
    let app = slurm_app_with("time_limit = \"3:00\"\nmax_time_limit = \"6m\"");
    let token = app.token("slurm-walltime");
    assert_eq!(app.create(&token)["code"], "0");
    let s = running(&app, &token);
    let id = s["sessionId"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().fixed_offset();
    let left = (time(&s["endTime"]) - now).num_seconds();
    assert!(
        (150..=182).contains(&left),
        "endTime is not 3 min after the start: {s}"
    );
    let jobs = hpcdesk_jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0].0.clone();
    assert_eq!(squeue_limit(&job), "3:00");

    // Another user; past max_time_limit: refused, nothing changed.
    assert_eq!(
        extend(&app, &app.token("slurm-other"), &id, "2m")["code"],
        "10008"
    );
    let too_much = extend(&app, &token, &id, "4m");
    assert_eq!(too_much["code"], "10004", "{too_much}");
    let msg = too_much["msg"].as_str().unwrap();
    assert!(
        msg.contains("at most 0:06:00") && msg.contains("launcher.slurm.max_time_limit"),
        "{msg}"
    );
    assert_eq!(
        squeue_limit(&job),
        "3:00",
        "a refused extend changed the job"
    );

    let r = extend(&app, &token, &id, "2m");
    assert_eq!(r["code"], "0", "{r}\n{}", app.log_text());
    assert_eq!(squeue_limit(&job), "5:00");
    let moved = (time(&r["data"]["endTime"]) - time(&s["endTime"])).num_seconds();
    assert!(
        (118..=122).contains(&moved),
        "endTime moved by {moved} s: {r}"
    );
    assert_eq!(app.list(&token)[0]["endTime"], r["data"]["endTime"]);
    assert_eq!(metric(&app, "hpcdesk_extends_granted_total"), 1.0);
    assert_eq!(metric(&app, "hpcdesk_extends_refused_total"), 1.0);
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

#[test]
fn a_slurm_desktop_that_reaches_its_time_limit_is_stopped_and_its_viewer_told() {
    if !slurm_parts("slurm timeout") {
        return;
    }
    let _x = exclusive();
    // One minute: Slurm's smallest limit.
    let app = slurm_app_with("time_limit = \"1\"");
    let token = app.token("slurm-timeout");
    assert_eq!(app.create(&token)["code"], "0");
    let id = running(&app, &token)["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = app.launch_url(&token, &id)["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = crate::viewer::runtime();
    let Connect::Open(mut v) = rt.block_on(connect(&ws_url(&app.base, &link))) else {
        panic!("viewer refused")
    };
    let started = std::time::Instant::now();
    let code = rt.block_on(async {
        v.handshake().await;
        tokio::time::timeout(Duration::from_secs(180), v.closed()).await
    });
    eprintln!("the job's viewer was closed after {:?}", started.elapsed());
    // Slurm kills the job at its limit, so the viewer usually sees the desktop close (1000)
    // just before reconcile ends the session (4001); either way it is closed, and the link
    // then says why.
    let code = code.expect("the viewer stayed open past the limit");
    assert!(matches!(code, Some(1000 | 4001)), "{code:?}");
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            last = app.list(&token).first().cloned().unwrap_or_default();
            last["status"] == "stopped"
        }),
        "{last}"
    );
    let reason = last["statusReason"].as_str().unwrap();
    assert!(
        reason.starts_with("time limit reached") && reason.contains("TIMEOUT"),
        "{reason}"
    );
    // The viewer page's link check says it plainly.
    let (status, check) = app.call("GET", &link_path(&link), None);
    assert_eq!(status, 403, "{check}");
    assert!(
        check["msg"].as_str().unwrap().contains("time limit"),
        "{check}"
    );
    assert_eq!(
        metric(&app, "hpcdesk_sessions_ended_total{how=\"time_limit\"}"),
        1.0
    );
    assert!(eventually(Duration::from_secs(10), || job_xvnc() == 0));
}

/// The output file of the running job named `hpcdesk-<marker>` of `user` (in the job's
/// directory in the user's home), as text.
fn job_output(user: &str) -> String {
    let (_, out) = slurm("squeue", &["-h", "-o", "%i|%j"]);
    let Some((job, name)) = out
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .find(|(_, n)| n.starts_with("hpcdesk-"))
    else {
        return String::new();
    };
    let home = nix::unistd::User::from_name(user).unwrap().unwrap().dir;
    let marker = name.trim_start_matches("hpcdesk-");
    let path = home.join(format!(".hpcdesk/jobs/{marker}/slurm-{job}.out"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A job tells hpcdesk the moment its desktop is ready (`POST /hpcdesk/v1/jobs/ready`, with
/// its own token); a call with another token is refused and wakes nothing; a job whose call
/// cannot reach hpcdesk still gets its desktop, since hpcdesk looks by itself, and its output
/// says why the call failed.
#[test]
fn a_job_says_when_its_desktop_is_ready_and_one_that_cannot_is_found_all_the_same() {
    if !slurm_parts("slurm ready call") {
        return;
    }
    let _x = exclusive();
    let user = compute_user();
    let app = slurm_app();
    let token = app.token("slurm-ready");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let s = running(&app, &token);
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &app,
            "hpcdesk_job_ready_calls_total"
        ) == 1.0),
        "the job did not call: {}",
        job_output(&user)
    );
    assert!(!job_output(&user).contains("could not tell hpcdesk"));
    // Someone else's call, with a token that is not this job's: refused, nothing woken.
    let (_, names) = slurm("squeue", &["-h", "-o", "%j"]);
    let marker = names
        .lines()
        .find_map(|n| n.trim().strip_prefix("hpcdesk-"))
        .unwrap()
        .to_owned();
    let forged = reqwest::blocking::Client::new()
        .post(app.url(&format!(
            "/hpcdesk/v1/jobs/ready?marker={marker}&token=AAAAAAAAAAAAAAAAAAAAAA"
        )))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(forged["code"], "10008", "{forged}");
    assert_eq!(metric(&app, "hpcdesk_job_ready_refused_total"), 1.0);
    assert_eq!(metric(&app, "hpcdesk_job_ready_calls_total"), 1.0);
    let id = s["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&token, &id)["code"], "0");
    assert!(eventually(Duration::from_secs(30), || hpcdesk_jobs().is_empty()));
    drop(app);

    // A job that cannot reach hpcdesk: a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = slurm_app_with(&format!("ready_url = \"http://127.0.0.1:{dead}\"\n"));
    let token = app.token("slurm-ready");
    assert_eq!(app.create(&token)["code"], "0");
    let s = running(&app, &token);
    assert!(
        eventually(Duration::from_secs(10), || job_output(&user)
            .contains("could not tell hpcdesk the desktop is ready")),
        "{}",
        job_output(&user)
    );
    assert_eq!(metric(&app, "hpcdesk_job_ready_calls_total"), 0.0);
    let id = s["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
