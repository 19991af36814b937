//! Desktops outlive an hpcdesk restart; a desktop whose Xvnc dies is noticed by reconcile.

use std::time::{Duration, Instant};

use crate::helpers::*;

#[test]
fn desktops_survive_a_restart_and_a_killed_xvnc_is_noticed() {
    if !real_parts("restart") {
        return;
    }
    let mut app = TestApp::spawn();
    let token = app.token("ivan");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let xvnc = app.xvnc_pids();
    assert_eq!(xvnc.len(), 1);

    app.stop();
    assert_eq!(app.xvnc_pids(), xvnc, "the desktop must outlive hpcdesk");
    app.start();
    let listed = app.list(&token);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sessionId"], id.as_str());
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(app.launch_url(&token, &id)["code"], "0");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(xvnc[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    // reconcile_every is 1 s in tests.
    let noticed = eventually(Duration::from_secs(5), || {
        app.list(&token)
            .first()
            .is_some_and(|s| s["status"] != "running")
    });
    assert!(noticed, "a dead desktop is still listed running");
    eprintln!("dead Xvnc noticed after {:?}", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "took {:?}",
        killed.elapsed()
    );
    let s = &app.list(&token)[0];
    assert_eq!(s["status"], "failed");
    assert!(
        s["statusReason"]
            .as_str()
            .unwrap()
            .contains("no longer running"),
        "{s}"
    );
    assert_eq!(app.launch_url(&token, &id)["code"], "815008");

    // The user can start over.
    let again = app.create(&token);
    assert_eq!(again["code"], "0", "{again}");
    assert_eq!(again["data"]["status"], "running");
    let new_id = again["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.list(&token).len(), 1);
    assert_eq!(app.delete(&token, &new_id)["code"], "0");
}

#[test]
fn a_second_serve_on_the_same_sqlite_file_is_refused_until_the_first_stops() {
    let mut app = TestApp::spawn();
    let config = app.config.clone();
    let second = || {
        std::process::Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("HPCDESK_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = second().wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another hpcdesk serve uses") && err.contains("PostgreSQL"),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(app.call("GET", "/healthz", None).0, 200);

    app.stop();
    let mut again = second();
    let stderr = again.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let listening = loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening on") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = again.kill();
    let _ = again.wait();
    assert!(
        listening,
        "serve did not start once the first had stopped: {seen:?}"
    );
}
