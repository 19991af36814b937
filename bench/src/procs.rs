//! Child processes of a run (the plain relay, hpcdesk, websockify) and their memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hpcdesk_launcher::LaunchError;
use hpcdesk_launcher::fake::{FakeLauncher, Plan};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Lifts the open-file limit as far as allowed (as root, to a million): 10 000 viewers need
/// 20 000 sockets in the gateway and as many in the benchmark itself.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = if nix::unistd::Uid::effective().is_root() {
            hard.max(1 << 20)
        } else {
            hard
        };
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

pub const SECRET: &str = "hpcdesk-bench-secret";

/// A day-long token for `user` (also its compute user), signed with [`SECRET`].
pub fn token(user: &str) -> String {
    let claims = hpcdesk_server::auth::claims_for(
        user,
        user,
        "11112",
        "1",
        "Normal",
        chrono::Utc::now().timestamp_millis(),
        Duration::from_secs(86400),
    );
    hpcdesk_server::auth::mint(&hpcdesk_server::config::Secret::new(SECRET), &claims)
}

/// The viewer socket's path and query (`/vncws?token=…&mm=…`) of a fresh launch URL of
/// session `id`, asked of the API at `vnc` (`…/desktop/vnc`).
pub async fn viewer_path(
    http: &reqwest::Client,
    vnc: &str,
    id: &str,
    token: &str,
) -> Result<String, Error> {
    let launch: serde_json::Value = http
        .get(format!("{vnc}/{id}/launchurl"))
        .header("token", token)
        .send()
        .await?
        .json()
        .await?;
    let url = launch["data"]["novncUrl"]
        .as_str()
        .ok_or_else(|| format!("launchurl failed: {launch}"))?;
    let path = url
        .split("path=")
        .nth(1)
        .and_then(|p| p.split("&resize").next())
        .ok_or("unexpected launch URL")?;
    Ok(path.to_owned())
}

/// `hpcdesk --data DIR --map USER=PORT … [--log]`: the real hpcdesk server (store, grants,
/// gateway) with a [`FakeLauncher`]. With `--log` it logs as `hpcdesk serve` does (to its
/// stderr, at `HPCDESK_LOG`, default `info`), so a benchmark pays for the same lines. With
/// `splice`, its gateway splices the screen (`gateway.splice`).
pub async fn hpcdesk_main(
    data: std::path::PathBuf,
    maps: Vec<String>,
    log: bool,
    splice: bool,
) -> Result<(), Error> {
    let _log = log.then(hpcdesk_server::logging::init);
    // Each compute user's desktop is a benchmark server.
    let launcher = FakeLauncher::new(Plan::Fail(LaunchError::Desktop(
        "no benchmark server for this user".into(),
    )));
    for m in maps {
        let (user, port) = m.split_once('=').ok_or("--map USER=PORT")?;
        launcher.plan(
            user,
            Plan::Ready {
                port: port.parse()?,
            },
        );
    }
    let env = [
        ("HPCDESK_SERVER__DATA_DIR", data.display().to_string()),
        ("HPCDESK_AUTH__JWT_SECRET", SECRET.to_owned()),
        ("HPCDESK_GATEWAY__GRANT_TTL", "2h".to_owned()),
        ("HPCDESK_LIFECYCLE__RECONCILE_EVERY", "1h".to_owned()),
        // The API benchmark measures throughput, not the abuse limits.
        ("HPCDESK_LIMITS__USER_PER_SECOND", "1000000".to_owned()),
        ("HPCDESK_LIMITS__USER_BURST", "1000000".to_owned()),
        // The concurrency rows open thousands of viewers of one session.
        (
            "HPCDESK_GATEWAY__MAX_VIEWERS_PER_SESSION",
            "100000".to_owned(),
        ),
        ("HPCDESK_GATEWAY__SPLICE", splice.to_string()),
    ];
    let config =
        hpcdesk_server::Config::load(None, env.iter().map(|(k, v)| (k.to_string(), v.clone())))?;
    let state = hpcdesk_server::build_with(
        config,
        Arc::new(launcher),
        Arc::new(hpcdesk_server::SystemClock),
    )
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    // The framework ceiling: a trivial axum handler in the same process and runtime.
    let trivial = TcpListener::bind("127.0.0.1:0").await?;
    println!("ready {} {}", listener.local_addr()?, trivial.local_addr()?);
    let ping = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
    tokio::spawn(async move { axum::serve(trivial, ping).await });
    hpcdesk_server::serve(listener, state, std::future::pending()).await?;
    Ok(())
}

/// A child process that is killed (with its process group) when dropped.
pub struct Child {
    pub _child: tokio::process::Child,
    pub pid: i32,
    /// What it printed after "ready".
    pub ready: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Spawns `program args…` in its own process group and waits for a line starting with
/// `ready` (or, for websockify, for the port to accept).
pub async fn spawn(
    program: &str,
    args: &[String],
    wait_port: Option<SocketAddr>,
) -> Result<Child, Error> {
    spawn_with(program, args, wait_port, Stdio::null(), None).await
}

/// [`spawn`], with the child's stderr going to `stderr` (the hpcdesk server's log file), and
/// with `threads` Tokio worker threads (`TOKIO_WORKER_THREADS`) instead of one per core when
/// given (a relay built on Tokio's multi-threaded runtime).
pub async fn spawn_with(
    program: &str,
    args: &[String],
    wait_port: Option<SocketAddr>,
    stderr: Stdio,
    threads: Option<usize>,
) -> Result<Child, Error> {
    let mut cmd = tokio::process::Command::new(program);
    if let Some(n) = threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id().ok_or("child has no pid")? as i32;
    let ready = if let Some(addr) = wait_port {
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        String::new()
    } else {
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(out).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| format!("{program} did not get ready"))??
            .ok_or_else(|| format!("{program} exited"))?;
        line.strip_prefix("ready ")
            .ok_or_else(|| format!("{program} said {line:?}"))?
            .to_owned()
    };
    Ok(Child {
        _child: child,
        pid,
        ready,
    })
}

/// Every process in /proc, with the fields of its `stat` after the name (state, ppid, …).
fn proc_stats() -> Vec<(i32, Vec<u64>)> {
    let mut procs = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
            {
                // The state (a letter) reads as 0; the numbers follow it.
                let fields = rest
                    .split_whitespace()
                    .map(|x| x.parse::<u64>().unwrap_or(0))
                    .collect();
                procs.push((p, fields));
            }
        }
    }
    procs
}

/// `pid` and its descendants, each with its `stat` fields (see [`proc_stats`]).
fn process_tree(pid: i32) -> Vec<(i32, Vec<u64>)> {
    let procs = proc_stats();
    let parents: HashMap<i32, i32> = procs
        .iter()
        .map(|(p, f)| (*p, f.get(1).copied().unwrap_or(0) as i32))
        .collect();
    let in_tree = |mut p: i32| {
        for _ in 0..64 {
            if p == pid {
                return true;
            }
            match parents.get(&p) {
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    procs.into_iter().filter(|(p, _)| in_tree(*p)).collect()
}

/// CPU seconds (user + system, of all threads) of `pid` and every descendant, from /proc
/// (which counts in USER_HZ, 100 a second on Linux whatever the kernel's tick).
pub fn cpu_seconds(pid: u32) -> f64 {
    process_tree(pid as i32)
        .iter()
        // After the name: state(0) ppid(1) … utime(11) stime(12).
        .map(|(_, f)| f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0))
        .sum::<u64>() as f64
        / 100.0
}

/// Proportional set size (KiB) of `pid` and all its descendants.
pub fn pss_kib(pid: i32) -> u64 {
    process_tree(pid)
        .iter()
        .map(|(p, _)| p)
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}
