//! `TestApp`: a real `hpcdesk serve` process on 127.0.0.1:0 with its own data directory and
//! node name, plus helpers to mint tokens, call the API and look at real processes.
//!
//! Tests that need a real component (Xvnc, a Linux test account) call [`real_parts`]: outside
//! CI they skip *loudly* when it is missing; in CI (`CI=true`) a missing part is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hpcdesk_server::config::Secret;
use serde_json::Value;

pub const SECRET: &str = "test-jwt-secret-for-hpcdesk";
pub const CLUSTER: &str = "11112";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The Linux account desktops run as in tests: `hdtest` (or `HPCDESK_TEST_USER`) as root,
/// the current account otherwise.
pub fn compute_user() -> String {
    if is_root() {
        std::env::var("HPCDESK_TEST_USER").unwrap_or_else(|_| "hdtest".into())
    } else {
        nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .unwrap()
            .unwrap()
            .name
    }
}

fn account_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Whether Xvnc and the test account are here. Skips loudly outside CI; fails in CI.
pub fn real_parts(test: &str) -> bool {
    let mut missing = Vec::new();
    if !on_path("Xvnc") {
        missing.push("TigerVNC Xvnc (apt-get install tigervnc-standalone-server)".to_owned());
    }
    let user = compute_user();
    if !account_exists(&user) {
        missing.push(format!("the test account {user:?} (useradd -m {user})"));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    if in_ci() {
        panic!("{msg} — required in CI");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// The binary under test; as root, a copy every account can execute (it is also the agent,
/// which runs as the test account and may not reach a target dir under /root).
pub fn agent_binary() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let built = PathBuf::from(env!("CARGO_BIN_EXE_hpcdesk"));
            if !is_root() {
                return built;
            }
            // Under /var/tmp, not /tmp: the test nodes of the ssh launcher have a private /tmp.
            // Copies left by earlier runs whose process is gone are removed first.
            if let Ok(entries) = std::fs::read_dir("/var/tmp") {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name
                        .strip_prefix("hpcdesk-test-agent-")
                        .and_then(|p| p.parse::<i32>().ok())
                        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            let dir = PathBuf::from("/var/tmp")
                .join(format!("hpcdesk-test-agent-{}", std::process::id()));
            // /var/tmp is everyone's: use the directory only if it is ours and no link.
            match std::fs::symlink_metadata(&dir) {
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    assert!(
                        m.is_dir() && m.uid() == 0,
                        "refusing {}: not a directory of root's",
                        dir.display()
                    );
                }
                Err(_) => {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
                }
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let copy = dir.join("hpcdesk");
            std::fs::copy(&built, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy
        })
        .clone()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hpcdesk"))
}

/// Settings a test may change.
#[derive(Debug, Clone)]
pub struct Options {
    pub node: Option<String>,
    pub display_min: u32,
    pub display_max: u32,
    pub depth: u8,
    pub reconcile_every: &'static str,
    /// Extra TOML appended to the config file.
    pub extra_toml: String,
    /// Extra keys of the `[launcher]` table (e.g. `kind = "ssh"`).
    pub launcher_toml: String,
    /// `launcher.default_desktop`: twm unless a test wants the real default (XFCE, which
    /// takes more memory and start-up time than most tests need); `None` leaves it unset.
    pub default_desktop: Option<&'static str>,
    /// Environment of the server process.
    pub env: Vec<(String, String)>,
    /// A command the server is started under (e.g. `setpriv …`), its argv before `hpcdesk`.
    pub wrapper: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node: None,
            display_min: 20,
            display_max: 99,
            depth: 24,
            reconcile_every: "1s",
            extra_toml: String::new(),
            launcher_toml: String::new(),
            default_desktop: Some("twm"),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestApp {
    pub base: String,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    pub node: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl TestApp {
    pub fn spawn() -> TestApp {
        Self::spawn_with(Options::default())
    }

    pub fn spawn_with(opts: Options) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let node = opts.node.clone().unwrap_or_else(|| {
            format!(
                "t{}x{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            )
        });
        let config = dir.path().join("hpcdesk.toml");
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

[auth]
jwt_secret = "{SECRET}"
cluster_id = "{CLUSTER}"

[auth.roles]
"1" = "user"
"9" = "admin"

[launcher]
node_name = "{node}"
agent = "{agent}"
geometry = "1024x768"
depth = {depth}
start_timeout = "20s"
display_min = {dmin}
display_max = {dmax}
{default_desktop}
{launcher_extra}

[lifecycle]
reconcile_every = "{reconcile}"

{extra}
"#,
            data = dir.path().join("data").display(),
            agent = agent_binary().display(),
            depth = opts.depth,
            dmin = opts.display_min,
            dmax = opts.display_max,
            reconcile = opts.reconcile_every,
            extra = opts.extra_toml,
            launcher_extra = opts.launcher_toml,
            default_desktop = opts
                .default_desktop
                .map(|d| format!("default_desktop = \"{d}\""))
                .unwrap_or_default(),
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("serve.log");
        let mut app = TestApp {
            base: String::new(),
            env: opts.env.clone(),
            wrapper: opts.wrapper.clone(),
            node,
            dir,
            config,
            log,
            child: None,
        };
        app.start();
        app
    }

    /// Starts `hpcdesk serve` and waits for its "listening on" line.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            // Debug everywhere, so the tests that grep the log for secrets see the most.
            .env("HPCDESK_LOG", "debug")
            .env_remove("HPCDESK_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hpcdesk serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = self.log.clone();
        std::thread::spawn(move || {
            let mut log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(log_path)
                .unwrap();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => self.base = url,
            Err(_) => panic!("hpcdesk serve did not start; log:\n{}", self.log_text()),
        }
    }

    /// Stops the server (SIGTERM) and waits for it; desktops stay up.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL, as a crash would: nothing of it runs its shutdown, and
    /// what it started (agents, desktops) stays.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's pid, while it runs.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sets (or with `None` removes) an environment variable of the server from its next
    /// start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// The server's log so far. While the server runs, first a marker request: the server
    /// writes its lines from a thread of its own, so a line can trail the answer it belongs
    /// to. The marker's access line comes after every line of the calls answered before it,
    /// so once it is in the file, so are they (and a check that something was *not* logged
    /// reads the whole of it).
    pub fn log_text(&self) -> String {
        if self.child.is_some() {
            let mark = format!(
                "/hpcdesk-test-log-mark/{}",
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            if client(Duration::from_secs(5))
                .get(self.url(&mark))
                .send()
                .is_ok()
            {
                eventually(Duration::from_secs(5), || {
                    std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(&mark))
                });
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, user: &str) -> String {
        token_with(user, &compute_user(), |_| {})
    }

    /// Calls `method path` with optional token; returns (HTTP status, JSON body).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call_with(method, path, token, |r| r)
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        f: impl FnOnce(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
    ) -> (u16, Value) {
        let mut req =
            client(Duration::from_secs(60)).request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.header("token", t);
        }
        let resp = f(req).send().expect("request");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.text().unwrap();
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
        assert_eq!(
            ctype, "application/json;charset=UTF-8",
            "content type of {method} {path}"
        );
        (status, json)
    }

    pub fn create(&self, token: &str) -> Value {
        self.call("PUT", "/hpc/openapi/v2/desktop/vnc", Some(token))
            .1
    }

    pub fn list(&self, token: &str) -> Vec<Value> {
        let (_, v) = self.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(token));
        assert_eq!(v["code"], "0", "list failed: {v}");
        v["data"].as_array().unwrap().clone()
    }

    pub fn delete(&self, token: &str, id: &str) -> Value {
        self.call(
            "DELETE",
            &format!("/hpc/openapi/v2/desktop/vnc/{id}"),
            Some(token),
        )
        .1
    }

    pub fn launch_url(&self, token: &str, id: &str) -> Value {
        self.call(
            "GET",
            &format!("/hpc/openapi/v2/desktop/vnc/{id}/launchurl"),
            Some(token),
        )
        .1
    }

    /// Live (non-zombie) Xvnc processes of this app's node.
    pub fn xvnc_pids(&self) -> Vec<i32> {
        let mark = format!("/.hpcdesk/desktops/{}-", self.node);
        procs()
            .into_iter()
            .filter(|p| {
                let argv = cmdline(*p);
                argv.first().is_some_and(|a| a.contains("Xvnc"))
                    && argv.iter().any(|a| a.contains(&mark))
                    && !zombie(*p)
            })
            .collect()
    }

    /// Live processes of one desktop of this node (by its marker variable).
    pub fn desktop_pids(&self, display: u64) -> Vec<i32> {
        let prefix = format!("HPCDESK_DESKTOP={}-{display}-", self.node);
        procs()
            .into_iter()
            .filter(|p| !zombie(*p) && environ(*p).iter().any(|kv| kv.starts_with(&prefix)))
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        // Whatever a failed test left running on this node.
        let prefix = format!("HPCDESK_DESKTOP={}-", self.node);
        for p in procs() {
            if environ(p).iter().any(|kv| kv.starts_with(&prefix)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A token for `user` running as `compute_user`, adjusted by `f`, signed with [`SECRET`].
pub fn token_with(
    user: &str,
    compute_user: &str,
    f: impl FnOnce(&mut hpcdesk_core::Claims),
) -> String {
    let mut claims = hpcdesk_server::auth::claims_for(
        user,
        compute_user,
        CLUSTER,
        "1",
        "Normal",
        chrono::Utc::now().timestamp_millis(),
        Duration::from_secs(3600),
    );
    f(&mut claims);
    hpcdesk_server::auth::mint(&Secret::new(SECRET), &claims)
}

pub fn procs() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent of `pid` (field 4 of `/proc/<pid>/stat`), if it is alive.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st == "Z" || st == "X"))
                .unwrap_or(true)
        })
        .unwrap_or(true)
}

/// Connects to an RFB server and returns (banner, offered security types).
pub fn rfb_security_types(port: u16) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the VNC port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner).unwrap();
    s.write_all(&banner).unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; usize::from(n[0])];
    s.read_exact(&mut types).unwrap();
    (String::from_utf8_lossy(&banner).into_owned(), types)
}

/// Completes VNC Authentication with `password`; returns the SecurityResult (0 = OK).
pub fn rfb_auth(port: u16, password: &[u8]) -> u32 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner).unwrap();
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; usize::from(n[0])];
    s.read_exact(&mut types).unwrap();
    s.write_all(&[2]).unwrap();
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).unwrap();
    s.write_all(&hpcdesk_rfb::vnc_auth_response(password, &challenge))
        .unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    u32::from_be_bytes(result)
}

/// A client for this app's API, waiting at most `timeout` for an answer; it accepts the TLS
/// tests' own certificates (tls.rs checks which one is served).
fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the built binary with `args`; on failure the message shows command and output.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HPCDESK_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the built binary with `args` and `stdin`.
pub fn run_cli_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("HPCDESK_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The account whose shell start-up files and job output the tests make misbehave
/// (`ci/test.sh` creates it; the sshd test nodes let it in).
pub const FLOOD_USER: &str = "hdflood";

/// A file of [`FLOOD_USER`]'s home replaced for a test, put back when dropped.
pub struct HomeFile {
    path: PathBuf,
    before: Option<Vec<u8>>,
}

impl HomeFile {
    /// Replaces `~FLOOD_USER/<rel>` with `content` (owned by that account).
    pub fn replace(rel: &str, content: &[u8]) -> HomeFile {
        let user = nix::unistd::User::from_name(FLOOD_USER).unwrap().unwrap();
        let path = user.dir.join(rel);
        let before = std::fs::read(&path).ok();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
            let _ = nix::unistd::chown(parent, Some(user.uid), Some(user.gid));
        }
        let _ = std::fs::remove_dir_all(&path);
        std::fs::write(&path, content).unwrap();
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        HomeFile { path, before }
    }
}

impl Drop for HomeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(b) = &self.before {
            let _ = std::fs::write(&self.path, b);
        }
    }
}

/// Whether [`FLOOD_USER`] exists; skips loudly outside CI, fails in CI.
pub fn flood_user(test: &str) -> bool {
    if nix::unistd::User::from_name(FLOOD_USER)
        .ok()
        .flatten()
        .is_some()
    {
        return true;
    }
    let msg = format!("{test}: no account {FLOOD_USER} (ci/test.sh creates it as root)");
    assert!(!in_ci(), "{msg} — required in CI");
    eprintln!("SKIPPED {msg}");
    false
}

/// The audit lines about `user`, as `hpcdesk audit --json` prints them.
pub fn audit(app: &TestApp, user: &str) -> Vec<Value> {
    let (ok, out, err) = run_cli(
        &[
            "--config",
            &path_of(&app.config),
            "audit",
            "--user",
            user,
            "--json",
        ],
        &[],
    );
    assert!(ok, "audit: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The `kind` of each audit line.
pub fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A create in a thread of its own (so that others can run meanwhile): its answer, `None`
/// if the connection died (the server was killed), and how long it took.
pub fn create_in_background(
    app: &TestApp,
    token: &str,
) -> std::thread::JoinHandle<(Option<Value>, Duration)> {
    let (base, token) = (app.base.clone(), token.to_owned());
    std::thread::spawn(move || {
        let started = Instant::now();
        let answer = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap()
            .put(format!("{base}/hpc/openapi/v2/desktop/vnc"))
            .header("token", token)
            .send()
            .ok()
            .and_then(|r| r.json().ok());
        (answer, started.elapsed())
    })
}

/// A desktop's directory in the compute user's home (`~/.hpcdesk/desktops/<node>-<display>`).
pub fn desktop_dir(node: &str, display: u64) -> PathBuf {
    let home = nix::unistd::User::from_name(&compute_user())
        .unwrap()
        .unwrap()
        .dir;
    home.join(format!(".hpcdesk/desktops/{node}-{display}"))
}

/// `program` run as the compute user (through `runuser` as root, directly otherwise).
pub fn as_compute_user(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", &compute_user(), "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The marker of a running desktop of `display`, from its Xvnc's environment.
pub fn marker_of_display(display: u64) -> String {
    for p in procs() {
        let argv = cmdline(p);
        if !zombie(p)
            && argv.first().is_some_and(|a| a.contains("Xvnc"))
            && argv.iter().any(|a| a == &format!(":{display}"))
            && let Some(v) = environ(p)
                .iter()
                .find_map(|kv| kv.strip_prefix("HPCDESK_DESKTOP=").map(str::to_owned))
        {
            return v.rsplit_once('-').unwrap().1.to_owned();
        }
    }
    panic!("no Xvnc on :{display}");
}

/// Copies `text` into the desktop's clipboard as an X client of it (as an application the
/// user copies from would), or prints what the clipboard holds (`text` `None`).
pub fn desktop_clipboard(node: &str, display: u64, text: Option<&str>) -> String {
    use std::io::Write;
    let xauth = desktop_dir(node, display).join("Xauthority");
    let mut cmd = as_compute_user("xclip");
    cmd.args(["-selection", "clipboard"])
        .env("DISPLAY", format!(":{display}"))
        .env("XAUTHORITY", xauth)
        .stderr(std::process::Stdio::null());
    match text {
        Some(t) => {
            // xclip -i stays in the background to serve the selection (and keeps whatever
            // output it was given open): give it none, and wait only for its parent.
            let mut child = cmd
                .arg("-i")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("xclip (apt-get install xclip)");
            child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success(), "xclip -i failed");
            String::new()
        }
        None => {
            let out = cmd.arg("-o").output().expect("xclip");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    }
}

/// The value of one line of `/metrics` (`name` with its labels, as printed).
pub fn metric(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::blocking::get(app.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// The gateway path of a launch URL (`/vncws?token=…&mm=…`): a plain GET checks the link.
pub fn link_path(novnc_url: &str) -> String {
    novnc_url
        .split("path=")
        .nth(1)
        .unwrap()
        .split("&resize")
        .next()
        .unwrap()
        .to_owned()
}
