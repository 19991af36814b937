//! The database goes away: PostgreSQL stopped under a running hpcdesk with a viewer open.
//! The viewer keeps receiving its desktop; every API call answers within 2 s with 815008
//! and a plain message (never a hang, never a bare "internal error"); nothing is started;
//! `/readyz` says 503. Once PostgreSQL is back, the API works again by itself.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::viewer::{open_viewer, runtime};

/// The message of 815008 while the store cannot be used.
const UNAVAILABLE: &str =
    "the desktop service's database is unavailable; please try again in a minute";

/// A PostgreSQL server of this test's own (`ci/postgres.sh` with its own directory and
/// port), so that stopping it disturbs no other test. Stopped and removed when dropped.
struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/postgres.sh")
}

impl OwnPostgres {
    /// `None` outside CI when PostgreSQL or root is missing; a failure in CI.
    fn start(test: &str) -> Option<OwnPostgres> {
        let installed = std::path::Path::new("/usr/lib/postgresql").exists();
        if !installed || !nix::unistd::Uid::effective().is_root() {
            let msg = format!("{test}: needs root and PostgreSQL (apt-get install postgresql)");
            assert!(!in_ci(), "{msg} — required in CI");
            eprintln!("SKIPPED {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = PathBuf::from(format!("/var/tmp/hpcdesk-pg-outage-{}", std::process::id()));
        let mut pg = OwnPostgres {
            dir,
            port,
            url: String::new(),
        };
        let out = pg.ctl("up");
        pg.url = out
            .lines()
            .find_map(|l| l.strip_prefix("HPCDESK_TEST_POSTGRES_URL="))
            .expect("ci/postgres.sh prints the URL")
            .to_owned();
        Some(pg)
    }

    fn ctl(&self, action: &str) -> String {
        let out = Command::new(script())
            .arg(action)
            .env("HPCDESK_PG_DIR", &self.dir)
            .env("HPCDESK_PG_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ci/postgres.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.ctl("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Calls the API and says how long it took.
fn timed(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let (_, v) = app.call(method, path, token);
    (v, t.elapsed())
}

#[test]
fn with_postgresql_stopped_calls_answer_815008_at_once_viewers_go_on_and_recovery_is_automatic() {
    if !real_parts("outage") {
        return;
    }
    let Some(pg) = OwnPostgres::start("outage") else {
        return;
    };
    let app = TestApp::spawn_with(Options {
        extra_toml: format!("[store]\nurl = \"{}\"\n", pg.url),
        ..Options::default()
    });
    let token = app.token("out-a");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let rt = runtime();
    let (mut viewer, init, _) = open_viewer(&rt, &app, &token, &id);
    assert!(rt.block_on(viewer.full_update(init.width, init.height)) >= 1);
    let xvnc = app.xvnc_pids();

    pg.ctl("down");
    let stopped = Instant::now();

    // The desktop is still there for its viewer.
    assert!(rt.block_on(viewer.full_update(init.width, init.height)) >= 1);

    // Every call answers quickly and plainly.
    let other = app.token("out-b");
    let launch = format!("/hpc/openapi/v2/desktop/vnc/{id}/launchurl");
    for (method, path, who) in [
        ("GET", "/hpc/openapi/v2/desktop/vnc", &token),
        ("PUT", "/hpc/openapi/v2/desktop/vnc", &other),
        ("GET", launch.as_str(), &token),
    ] {
        let (v, took) = timed(&app, method, path, Some(who));
        eprintln!("{method} {path} with PostgreSQL down: {took:?} {v}");
        assert_eq!(v["code"], "815008", "{method} {path}: {v}");
        assert_eq!(v["msg"], UNAVAILABLE, "{method} {path}: {v}");
        assert!(
            took < Duration::from_secs(2),
            "{method} {path} took {took:?}"
        );
    }
    assert_eq!(app.xvnc_pids(), xvnc, "nothing was started");
    let (status, ready) = app.call("GET", "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["code"], "815008");
    assert!(
        ready["msg"].as_str().unwrap().contains("database"),
        "{ready}"
    );
    let (status, health) = app.call("GET", "/healthz", None);
    assert_eq!(
        (status, health["data"]["status"].as_str()),
        (200, Some("degraded"))
    );

    // The viewer is still served after a while of outage (reconcile and presence rounds
    // fail meanwhile and must not take it down).
    std::thread::sleep(Duration::from_secs(3));
    assert!(rt.block_on(viewer.full_update(init.width, init.height)) >= 1);
    eprintln!("viewer served through {:?} of outage", stopped.elapsed());

    pg.ctl("up");
    let back = Instant::now();
    let recovered = eventually(Duration::from_secs(10), || {
        app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&token))
            .1["code"]
            == "0"
    });
    assert!(recovered, "the API did not recover\n{}", app.log_text());
    eprintln!("API back {:?} after PostgreSQL", back.elapsed());
    assert_eq!(app.call("GET", "/readyz", None).0, 200);
    assert_eq!(
        app.list(&token)[0]["status"],
        "running",
        "the desktop survived"
    );
    let b = app.create(&other);
    assert_eq!(b["code"], "0", "{b}");
    for (t, v) in [(&token, &created), (&other, &b)] {
        let sid = v["data"]["sessionId"].as_str().unwrap();
        assert_eq!(app.delete(t, sid)["code"], "0");
    }
    assert!(
        !app.log_text().contains("hpcdesk-ci@"),
        "the password is never logged"
    );
}

/// A small file system of the test's own, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(test: &str, size: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("hpcdesk-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = nix::unistd::Uid::effective().is_root()
            && Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            let msg = format!("{test}: needs root to mount a small tmpfs");
            assert!(!in_ci(), "{msg} — required in CI");
            eprintln!("SKIPPED {msg}");
            return None;
        }
        Some(SmallDisk(dir))
    }

    /// Writes zeros to a file until the file system is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("fill");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = vec![0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SQLite on a disk that fills up: calls that must write answer 815008 with the same plain
/// message, nothing is started or half-written, and all works again once there is room.
#[test]
fn with_the_sqlite_disk_full_writes_answer_815008_nothing_is_started_and_running_desktops_still_open()
 {
    if !real_parts("disk full") {
        return;
    }
    let Some(disk) = SmallDisk::mount("disk full", "8m") else {
        return;
    };
    let mut app = TestApp::spawn_with(Options {
        env: vec![(
            "HPCDESK_SERVER__DATA_DIR".into(),
            disk.0.display().to_string(),
        )],
        ..Options::default()
    });
    let a = app.token("full-a");
    let created = app.create(&a);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let xvnc = app.xvnc_pids();

    let fill = disk.fill();
    let b = app.token("full-b");
    let path = "/hpc/openapi/v2/desktop/vnc";
    let (v, took) = timed(&app, "PUT", path, Some(&b));
    eprintln!("PUT {path} with the disk full: {took:?} {v}");
    assert_eq!(v["code"], "815008", "PUT {path}: {v}");
    assert_eq!(v["msg"], UNAVAILABLE, "{v}");
    // A launch URL writes nothing (grants are signed): the running desktop still opens. Its
    // audit line cannot be written, and the log says so.
    let launch = app.launch_url(&a, &id);
    assert_eq!(launch["code"], "0", "{launch}");
    let socket = link_path(launch["data"]["novncUrl"].as_str().unwrap());
    let (_, checked) = app.call("GET", &socket, None);
    assert_eq!(checked["code"], "0", "the link checks out: {checked}");
    assert!(
        eventually(Duration::from_secs(5), || app
            .log_text()
            .contains("cannot write the audit log")),
        "{}",
        app.log_text()
    );
    assert_eq!(app.xvnc_pids(), xvnc, "nothing was started");
    assert!(app.list(&b).is_empty(), "no half-made session");
    assert_eq!(app.list(&a)[0]["status"], "running");

    std::fs::remove_file(fill).unwrap();
    let again = app.create(&b);
    assert_eq!(again["code"], "0", "{again}\n{}", app.log_text());
    assert_eq!(app.launch_url(&a, &id)["code"], "0");
    assert_eq!(app.delete(&a, &id)["code"], "0");
    let id_b = again["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&b, &id_b)["code"], "0");
    app.stop();
}
