//! The node agent: `hpcdesk node start|stop|list|probe`, run on the node **as the user**.
//!
//! Every launcher runs this same code (directly, over SSH, inside a Slurm job), so this is the
//! one place that knows how to start TigerVNC:
//! - `start`: pick a free display, write a 0600 VNC password file (password read from stdin)
//!   and an Xauthority cookie, start `Xvnc` detached with VncAuth on loopback (or one
//!   interface), wait until it answers the RFB banner *and* accepts an X11 connection, then
//!   start the desktop command. Each desktop lives in `~/.hpcdesk/desktops/<node>-<display>/`.
//! - `stop`: end every process of one desktop (found by its marker variable), remove stale
//!   X locks and the desktop directory.
//! - `list`: the hpcdesk Xvnc servers alive on this node.
//! - `probe`: load, memory and desktop count, for placement.
//!
//! Its command line is [`cli::NodeCommand`], which launchers render and the binary parses;
//! replies are one JSON line on stdout ([`protocol`]); errors are JSON too, with exit code 1.

pub mod cli;
mod display;
pub mod job;
pub mod procs;
pub mod protocol;
mod session;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::capped;
use crate::process::{Account, Cmd, last_line};
use crate::x11::{self, Cookie, SetupOutcome};
pub use protocol::{
    AgentError, ErrorKind, Listing, LiveDesktop, Probe, StartInProgress, StartedDesktop, Stopped,
};

/// Every desktop directory path contains this, which is how `list` tells hpcdesk's Xvnc
/// servers from others.
pub const DESKTOPS_DIR_MARK: &str = "/.hpcdesk/desktops/";

/// How Xvnc listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Loopback only (`-localhost`): the gateway runs on the same machine.
    Localhost,
    /// One address of the node (`-interface`), reachable by the gateway.
    Interface(IpAddr),
}

impl Listen {
    /// `localhost`, an IP address, or `hostname` (this machine's first non-loopback address,
    /// for desktops on nodes whose address is not known in advance, like Slurm's).
    pub fn parse(s: &str) -> Result<Listen, String> {
        match s {
            "localhost" => Ok(Listen::Localhost),
            "hostname" => own_address().map(Listen::Interface),
            _ => s.parse().map(Listen::Interface).map_err(|_| {
                format!("--listen must be \"localhost\", \"hostname\" or an IP address, not {s:?}")
            }),
        }
    }

    fn connect_addr(self) -> IpAddr {
        match self {
            Listen::Localhost => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Listen::Interface(a) => a,
        }
    }
}

/// This machine's short host name (up to the first dot): the default node name.
pub fn short_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| {
            h.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// This machine's address as its host name resolves, preferring IPv4, never loopback.
fn own_address() -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    let host = nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name: {e}"))?
        .to_string_lossy()
        .into_owned();
    let addrs: Vec<IpAddr> = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address other than loopback"))
}

/// Everything `start` needs besides the password.
#[derive(Debug, Clone)]
pub struct StartArgs {
    pub node: String,
    pub xvnc: String,
    /// The desktop's command lines (split like a shell would, but never run by one), the
    /// session first; empty picks a window manager and an xterm.
    pub desktop: Vec<String>,
    pub geometry: String,
    pub depth: u8,
    pub display_min: u32,
    pub display_max: u32,
    pub listen: Listen,
    pub timeout: Duration,
    /// Speak TLS with a certificate of the desktop's own (VeNCrypt X509Vnc) instead of plain
    /// VNC authentication: for desktops the gateway reaches over the network.
    pub tls: bool,
    /// The session's marker, chosen by hpcdesk and stored before this start: every process
    /// of the desktop carries it (`HPCDESK_DESKTOP={node}-{display}-{marker}`), so the desktop
    /// is found again after a crash. `None` (a hand-run start) draws a random one.
    pub marker: Option<String>,
}

/// Whether `m` can be a session marker: 8 to 64 letters and digits.
pub fn valid_marker(m: &str) -> bool {
    (8..=64).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The session marker in a value of `HPCDESK_DESKTOP` (`{node}-{display}-{marker}`).
pub fn marker_token(value: &str) -> Option<&str> {
    value
        .rsplit_once('-')
        .map(|(_, m)| m)
        .filter(|m| valid_marker(m))
}

/// A pause at one point of `start`, for the tests that kill hpcdesk in the middle of a start
/// (`HPCDESK_TEST_START_PAUSE=<point>:<milliseconds>`, point `xvnc`, `desktop` or `reply`).
/// Unset in production.
pub const TEST_PAUSE_VAR: &str = "HPCDESK_TEST_START_PAUSE";

/// How long to pause at `point`, if [`TEST_PAUSE_VAR`] asks for it.
pub fn test_pause_at(point: &str) -> Option<Duration> {
    let v = std::env::var(TEST_PAUSE_VAR).ok()?;
    let (p, ms) = v.split_once(':')?;
    let ms = ms.parse::<u64>().ok()?;
    (p == point).then(|| Duration::from_millis(ms.min(60_000)))
}

/// Whether whoever started this agent has stopped listening for its answer (its stdout is a
/// closed pipe): hpcdesk gave up on the start (a timeout, output cut off) or died. Then the
/// agent starts nothing more, so no desktop comes up that no session is waiting for. Probes
/// by writing an empty line, which replies ignore.
fn caller_gone() -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(b"\n").and_then(|()| out.flush()).is_err()
}

fn test_pause(point: &str) {
    if let Some(d) = test_pause_at(point) {
        std::thread::sleep(d);
    }
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError {
        kind,
        error: msg.into(),
        display: None,
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    err(
        ErrorKind::Failed,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

/// A desktop's VNC passwords: full access, and optionally view-only (Xvnc lets a viewer that
/// authenticates with the second one watch, with no input and no clipboard either way).
#[derive(Clone, PartialEq, Eq)]
pub struct Passwords {
    pub full: Vec<u8>,
    pub view_only: Option<Vec<u8>>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(<redacted>)")
    }
}

impl Passwords {
    /// The VNC password file: the obfuscated full-access password, then the view-only one.
    pub fn file(&self) -> Vec<u8> {
        let mut out = hpcdesk_rfb::obfuscated_password_file(&self.full).to_vec();
        if let Some(v) = &self.view_only {
            out.extend_from_slice(&hpcdesk_rfb::obfuscated_password_file(v));
        }
        out
    }
}

/// Reads the VNC passwords from stdin: one line, the full-access password, and optionally a
/// second line, the view-only password.
pub fn read_password(mut input: impl Read) -> Result<Passwords, AgentError> {
    let mut raw = Vec::new();
    input
        .by_ref()
        .take(256)
        .read_to_end(&mut raw)
        .map_err(|e| err(ErrorKind::Usage, format!("cannot read the password: {e}")))?;
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    let short = || {
        err(
            ErrorKind::Usage,
            "a VNC password (on stdin) must have at least 6 characters",
        )
    };
    let full = lines
        .next()
        .filter(|l| l.len() >= 6)
        .ok_or_else(short)?
        .to_vec();
    let view_only = match lines.next() {
        Some(l) if l.len() >= 6 => Some(l.to_vec()),
        Some(_) => return Err(short()),
        None => None,
    };
    Ok(Passwords { full, view_only })
}

fn desktops_root(home: &Path) -> PathBuf {
    home.join(".hpcdesk").join("desktops")
}

fn desktop_dir(home: &Path, node: &str, display: u32) -> PathBuf {
    desktops_root(home).join(format!("{node}-{display}"))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let _ = fs::remove_file(path);
    let mut f = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    f.write_all(bytes).map_err(|e| io_err("write", path, e))
}

pub(crate) fn make_private_dir(path: &Path) -> Result<(), AgentError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io_err("create directory", path, e))
}

/// The state file of a desktop, read back by `stop` and `list`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct DesktopState {
    display: u32,
    port: u16,
    xvnc_pid: i32,
    marker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_pin: Option<String>,
}

/// Makes the desktop's own TLS certificate and key (self-signed, named after the node) in
/// `dir`, both 0600; returns the certificate's SHA-256, which the gateway pins.
fn make_certificate(dir: &Path, node: &str) -> Result<String, AgentError> {
    let made = rcgen::generate_simple_self_signed(vec![node.to_owned()]).map_err(|e| {
        err(
            ErrorKind::Failed,
            format!("cannot make the desktop's certificate: {e}"),
        )
    })?;
    write_private(&dir.join("cert.pem"), made.cert.pem().as_bytes())?;
    write_private(
        &dir.join("key.pem"),
        made.signing_key.serialize_pem().as_bytes(),
    )?;
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(made.cert.der())))
}

/// Starts a desktop. On success the desktop's processes run detached; on failure nothing
/// of it is left running.
pub fn start(args: &StartArgs, password: &Passwords) -> Result<StartedDesktop, AgentError> {
    if let Err(e) = args.geometry.parse::<crate::desktops::Geometry>() {
        return Err(err(ErrorKind::Usage, e));
    }
    if args.display_min > args.display_max || args.display_max > hpcdesk_core::DisplayNumber::MAX {
        return Err(err(ErrorKind::Usage, "invalid display range"));
    }
    if let Some(m) = &args.marker
        && !valid_marker(m)
    {
        return Err(err(
            ErrorKind::Usage,
            "--marker must be 8 to 64 letters and digits",
        ));
    }
    let desktop = desktop_argvs(&args.desktop)?;
    let me = Account::current().map_err(|e| err(ErrorKind::Failed, e.to_string()))?;
    let root = desktops_root(&me.home);
    make_private_dir(&root)?;
    let deadline = Instant::now() + args.timeout;
    let listen_ip = match args.listen {
        Listen::Localhost => None,
        Listen::Interface(a) => Some(a),
    };
    for d in args.display_min..=args.display_max {
        let port = 5900 + d as u16;
        // Another start of this account may be trying the same display right now: only the
        // one holding its lock may touch its directory. Held until this start is over (the
        // X server's own lock guards the display from then on). Taken before the display is
        // checked: a start that held it may have just finished there, and a check made
        // before its claim was let go would not see that desktop, whose directory this
        // start would then wipe.
        let Some(_claim) = claim_display(&root, &args.node, d) else {
            continue;
        };
        if !display::is_free(d, port, listen_ip) {
            continue;
        }
        match try_display(args, &me, d, port, password, &desktop, deadline) {
            Ok(started) => return Ok(started),
            Err(Attempt::Taken) => continue,
            Err(Attempt::Failed(mut e)) => {
                e.display = Some(d);
                return Err(e);
            }
        }
    }
    Err(err(
        ErrorKind::NoDisplay,
        format!(
            "no free display between :{} and :{} on {}",
            args.display_min, args.display_max, args.node
        ),
    ))
}

/// Takes this account's lock on `display` of `node` (`<root>/.{node}-{display}.lock`), or
/// `None` if another of its starts holds it.
fn claim_display(root: &Path, node: &str, display: u32) -> Option<nix::fcntl::Flock<fs::File>> {
    let path = root.join(format!(".{node}-{display}.lock"));
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
}

enum Attempt {
    Taken,
    Failed(AgentError),
}

fn xvnc_cmd(args: &StartArgs, me: &Account, dir: &Path, d: u32, port: u16, marker: &str) -> Cmd {
    let mut cmd = Cmd::new(&args.xvnc)
        .arg(format!(":{d}"))
        .args(["-rfbport", &port.to_string()]);
    cmd = match args.listen {
        Listen::Localhost => cmd.arg("-localhost"),
        Listen::Interface(a) => cmd.args(["-interface".to_owned(), a.to_string()]),
    };
    cmd = if args.tls {
        // TLS with the desktop's own certificate, then the VNC password inside it; nothing
        // in clear is offered.
        cmd.args(["-SecurityTypes", "X509Vnc", "-X509Cert"])
            .arg(dir.join("cert.pem"))
            .arg("-X509Key")
            .arg(dir.join("key.pem"))
    } else {
        cmd.args(["-SecurityTypes", "VncAuth"])
    };
    cmd.arg("-PasswordFile")
        .arg(dir.join("passwd"))
        .arg("-auth")
        .arg(dir.join("Xauthority"))
        .args([
            "-geometry",
            &args.geometry,
            "-depth",
            &args.depth.to_string(),
        ])
        .args(["-nolisten", "tcp", "-AlwaysShared"])
        // No X screensaver: it would blank the screen of a desktop left open in a tab.
        .args(["-s", "0"])
        // Only the gateway authenticates, always with the right password; a blacklist
        // would let any local account lock every viewer out with five bad attempts.
        .arg("-UseBlacklist=0")
        .args(["-desktop", &format!("{}:{d} ({})", args.node, me.name)])
        .env(procs::MARKER_VAR, marker)
        .current_dir(&me.home)
}

fn try_display(
    args: &StartArgs,
    me: &Account,
    d: u32,
    port: u16,
    password: &Passwords,
    desktop: &[Vec<String>],
    deadline: Instant,
) -> Result<StartedDesktop, Attempt> {
    let dir = desktop_dir(&me.home, &args.node, d);
    let _ = fs::remove_dir_all(&dir);
    make_private_dir(&dir).map_err(Attempt::Failed)?;
    let fail = |e: AgentError| Attempt::Failed(e);
    write_private(&dir.join("passwd"), &password.file()).map_err(fail)?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tls_pin = match args.tls {
        true => Some(make_certificate(&dir, &args.node).map_err(fail)?),
        false => None,
    };
    let cookie = Cookie::generate();
    let xauth = dir.join("Xauthority");
    write_private(&xauth, &x11::xauthority(&hostname, d, &cookie)).map_err(fail)?;
    let token = match &args.marker {
        Some(m) => m.clone(),
        None => format!("{:016x}", rand::random::<u64>()),
    };
    let marker = format!("{}-{d}-{token}", args.node);
    let log = dir.join("xvnc.log");
    test_pause("xvnc");
    if caller_gone() {
        let _ = fs::remove_dir_all(&dir);
        return Err(Attempt::Failed(err(
            ErrorKind::Failed,
            "the start was given up by hpcdesk; nothing was started",
        )));
    }
    let mut xvnc = xvnc_cmd(args, me, &dir, d, port, &marker)
        .spawn_detached(&log)
        .map_err(|e| fail(err(ErrorKind::Failed, e.to_string())))?;
    let xvnc_pid = xvnc.id() as i32;

    let cleanup = |why: AgentError| {
        kill_desktop(
            me.uid.as_raw(),
            &marker,
            &[xvnc_pid],
            Duration::from_secs(3),
        );
        let _ = fs::remove_dir_all(&dir);
        Attempt::Failed(why)
    };

    let addr = SocketAddr::new(args.listen.connect_addr(), port);
    let socket = x11::socket_path(d);
    let (mut owned, mut rfb_ok, mut x_ok) = (false, false, false);
    loop {
        if let Ok(Some(status)) = xvnc.try_wait() {
            let text = capped::file_tail(&log, capped::TAIL).unwrap_or_default();
            let _ = fs::remove_dir_all(&dir);
            if display::taken_by_someone_else(&text) {
                return Err(Attempt::Taken);
            }
            let line = xvnc_reason(&text);
            return Err(Attempt::Failed(err(
                ErrorKind::Failed,
                format!("Xvnc exited ({status}) on display :{d}: {line}"),
            )));
        }
        // Until our Xvnc holds the display's lock, whatever answers on its port and socket
        // may be another server that won a race for the same display.
        if !owned {
            match x11::lock_holder(d).pid() {
                Some(pid) if pid == xvnc_pid => owned = true,
                Some(pid) if procs::alive(pid) => {
                    kill_desktop(
                        me.uid.as_raw(),
                        &marker,
                        &[xvnc_pid],
                        Duration::from_secs(3),
                    );
                    let _ = xvnc.try_wait();
                    let _ = fs::remove_dir_all(&dir);
                    return Err(Attempt::Taken);
                }
                _ => {}
            }
        }
        if owned && !rfb_ok {
            rfb_ok = rfb_banner(addr).is_some();
        }
        if rfb_ok && !x_ok {
            match x11::probe_display(&socket, &cookie, Duration::from_secs(2)) {
                Ok(SetupOutcome::Accepted) => x_ok = true,
                Ok(SetupOutcome::Refused(why)) => {
                    return Err(cleanup(err(
                        ErrorKind::Failed,
                        format!("X display :{d} refused our cookie: {why}"),
                    )));
                }
                Err(_) => {}
            }
        }
        if rfb_ok && x_ok {
            break;
        }
        if Instant::now() >= deadline {
            return Err(cleanup(err(
                ErrorKind::Failed,
                format!(
                    "Xvnc on display :{d} was not ready within {} (lock {}, RFB {}, X11 {})",
                    humantime::format_duration(args.timeout),
                    if owned { "held" } else { "not taken" },
                    if rfb_ok { "ok" } else { "not answering" },
                    if x_ok { "ok" } else { "not answering" },
                ),
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    let state = DesktopState {
        display: d,
        port,
        xvnc_pid,
        marker: marker.clone(),
        tls_pin: tls_pin.clone(),
    };
    let state_json = serde_json::to_vec(&state).expect("state serialises");
    if let Err(e) = write_private(&dir.join("state.json"), &state_json) {
        return Err(cleanup(e));
    }

    test_pause("desktop");
    if caller_gone() {
        return Err(cleanup(err(
            ErrorKind::Failed,
            "the start was given up by hpcdesk; what had started was stopped",
        )));
    }
    let desktop_log = dir.join("desktop.log");
    let mut warnings = Vec::new();
    let session_env = match session::prepare(&dir, me.uid.as_raw()) {
        Ok(env) => env,
        Err(e) => return Err(cleanup(e)),
    };
    let path = search_path();
    for (i, argv) in desktop.iter().enumerate() {
        let is_twm = Path::new(&argv[0]).file_name().is_some_and(|n| n == "twm");
        // The first command is the session: it gets the D-Bus session the others share.
        let argv = match i {
            0 => session::in_dbus_session(argv, &path),
            _ => argv.clone(),
        };
        let mut cmd = Cmd::new(&argv[0])
            .args(&argv[1..])
            .env("DISPLAY", format!(":{d}"))
            .env("XAUTHORITY", &xauth)
            .env(procs::MARKER_VAR, &marker)
            .current_dir(&me.home);
        for (k, v) in &session_env {
            cmd = cmd.env(k, v);
        }
        if is_twm {
            // twm cannot load its font set under a UTF-8 locale and exits at once.
            cmd = cmd.env("LANG", "C").env("LC_ALL", "C");
        }
        if let Err(e) = cmd.spawn_detached(&desktop_log) {
            return Err(cleanup(err(
                ErrorKind::Failed,
                format!("desktop command failed to start: {e}"),
            )));
        }
    }
    if desktop.is_empty() {
        warnings.push("no window manager or xterm found; the desktop is empty".to_owned());
    }
    test_pause("reply");
    Ok(StartedDesktop {
        node: args.node.clone(),
        display: d,
        port,
        host: args.listen.connect_addr().to_string(),
        xvnc_pid,
        marker,
        warnings,
        tls_pin,
    })
}

/// The line of an Xvnc log that says why it stopped (X servers print "(EE)" lines).
fn xvnc_reason(log: &str) -> String {
    let errors: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("(EE)") && l.len() > 5)
        .map(|l| l.trim_start_matches("(EE)").trim())
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Please consult")
                && !l.starts_with("Fatal server error")
                && !l.contains("for help")
        })
        .collect();
    match errors.last() {
        Some(l) => (*l).to_owned(),
        None => {
            let l = last_line(log);
            if l.is_empty() {
                "no output".to_owned()
            } else {
                l
            }
        }
    }
}

/// Reads the RFB version banner, e.g. `RFB 003.008`.
pub fn rfb_banner(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut b = [0u8; 12];
    s.read_exact(&mut b).ok()?;
    let text = String::from_utf8_lossy(&b).trim_end().to_owned();
    text.starts_with("RFB ").then_some(text)
}

/// The argv of each desktop process to start: the configured command lines, or the first
/// desktop installed here ([`crate::desktops::installed`]).
fn desktop_argvs(configured: &[String]) -> Result<Vec<Vec<String>>, AgentError> {
    let lines: Vec<String> = match configured.iter().any(|c| !c.trim().is_empty()) {
        true => configured.to_vec(),
        false => crate::desktops::installed(&search_path())
            .into_iter()
            .next()
            .map(|d| d.command)
            .unwrap_or_default(),
    };
    lines
        .iter()
        .filter(|c| !c.trim().is_empty())
        .map(|cmdline| {
            shell_words::split(cmdline).map_err(|e| {
                err(
                    ErrorKind::Usage,
                    format!("cannot split the desktop command {cmdline:?}: {e}"),
                )
            })
        })
        .collect()
}

/// The agent's `PATH` (set by the launcher), where desktop programs are looked up.
fn search_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Signals every process of a desktop, then escalates to SIGKILL after `grace`.
pub(crate) fn kill_desktop(uid: u32, marker: &str, extra: &[i32], grace: Duration) -> usize {
    let mut targets = procs::marked(uid, marker);
    for p in extra {
        if procs::alive(*p) && !targets.contains(p) {
            targets.push(*p);
        }
    }
    let count = targets.len();
    procs::signal_all(&targets, Signal::SIGTERM);
    let until = Instant::now() + grace;
    loop {
        targets.retain(|p| procs::alive(*p));
        if targets.is_empty() {
            return count;
        }
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    procs::signal_all(&targets, Signal::SIGKILL);
    let until = Instant::now() + Duration::from_secs(2);
    while !targets.is_empty() && Instant::now() < until {
        targets.retain(|p| procs::alive(*p));
        std::thread::sleep(Duration::from_millis(20));
    }
    count
}

/// Shows `message` inside the desktop on `display` as a notification: `notify-send` in the
/// desktop's own D-Bus session (found in the environment of one of its processes), within
/// 5 s. Best effort: `false` when there is no such desktop, bus, `notify-send` or daemon.
pub fn notify(node: &str, display: u32, message: &str) -> bool {
    let Ok(me) = Account::current() else {
        return false;
    };
    let dir = desktop_dir(&me.home, node, display);
    let Some(state) = capped::small_file(&dir.join("state.json"), 4096)
        .ok()
        .and_then(|b| serde_json::from_slice::<DesktopState>(&b).ok())
    else {
        return false;
    };
    let Some(bus) = procs::marked(me.uid.as_raw(), &state.marker)
        .into_iter()
        .find_map(|p| procs::env_var(p, "DBUS_SESSION_BUS_ADDRESS"))
    else {
        return false;
    };
    let Some(notify_send) = crate::desktops::find_in(&search_path(), "notify-send") else {
        return false;
    };
    let message: String = message.chars().take(500).collect();
    let child = Cmd::new(notify_send)
        .args([
            "--app-name=hpcdesk",
            "--urgency=critical",
            "--expire-time=30000",
        ])
        .arg("Desktop")
        .arg(message)
        .env("DISPLAY", format!(":{display}"))
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .env(procs::MARKER_VAR, &state.marker)
        .current_dir(&me.home)
        .spawn_detached(&dir.join("desktop.log"));
    let Ok(mut child) = child else {
        return false;
    };
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Stops the desktop on `display`: every process carrying its marker, then its leftovers.
/// Stopping a desktop that is already gone succeeds.
///
/// With `marker` (a session's), only that session's desktop is stopped. Display numbers are
/// reused: a stop decided on an earlier look (a session's record, a listing) finds another
/// desktop there if its own died and a later start took the display, and that one, its
/// directory and its start in progress are left alone.
pub fn stop(node: &str, display: u32, marker: Option<&str>) -> Result<Stopped, AgentError> {
    if let Some(m) = marker
        && !valid_marker(m)
    {
        return Err(err(
            ErrorKind::Usage,
            "--marker must be 8 to 64 letters and digits",
        ));
    }
    let me = Account::current().map_err(|e| err(ErrorKind::Failed, e.to_string()))?;
    let root = desktops_root(&me.home);
    let dir = desktop_dir(&me.home, node, display);
    // Held for the whole stop, as a start holds it: `None` when a start of this account is
    // at work on that display, whose lock, socket and directory are then left to it.
    let claim = claim_display(&root, node, display);
    let state: Option<DesktopState> = capped::small_file(&dir.join("state.json"), 4096)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // The processes of the desktop asked for carry this value (see `try_display`).
    let wanted = marker.map(|m| format!("{node}-{display}-{m}"));
    let theirs = matches!((&wanted, &state), (Some(w), Some(s)) if s.marker != *w);
    let value = wanted
        .clone()
        .or_else(|| state.as_ref().map(|s| s.marker.clone()))
        .unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(s) = state.as_ref().filter(|_| !theirs) {
        extra.push(s.xvnc_pid);
    }
    // Also any Xvnc of ours on that display, in case the state file is gone (with a
    // marker, only one that carries it).
    let dir_text = dir.to_string_lossy().into_owned();
    for x in procs::hpcdesk_xvnc() {
        if x.uid == me.uid.as_raw()
            && x.display == display
            && x.password_file.starts_with(&dir_text)
            && wanted
                .as_ref()
                .is_none_or(|w| procs::marker_of(x.pid).as_ref() == Some(w))
        {
            extra.push(x.pid);
        }
    }
    let killed = if value.is_empty() && extra.is_empty() {
        0
    } else {
        kill_desktop(me.uid.as_raw(), &value, &extra, Duration::from_secs(5))
    };
    if claim.is_some() {
        // A SIGKILLed X server leaves its lock and socket behind; remove them if they are
        // stale (the lock is looked at again before each: an X server locks before it makes
        // its socket).
        for path in [x11::lock_path(display), x11::socket_path(display)] {
            let stale = x11::lock_holder(display)
                .pid()
                .is_none_or(|pid| !procs::alive(pid));
            if stale {
                let _ = fs::remove_file(&path);
            }
        }
        // The directory goes unless it is another desktop's.
        if !theirs {
            let _ = fs::remove_dir_all(&dir);
        }
    }
    drop(claim);
    Ok(Stopped {
        display,
        processes: killed,
    })
}

/// The name of the account `uid`, or the number if it has none.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The hpcdesk desktops alive on this node, and the starts in progress (of every account
/// whose processes this agent may see: all of them as root, its own otherwise).
pub fn list(node: &str) -> Listing {
    // Read in the order a start moves through them (its agent runs, then its desktop
    // command, then its agent exits), so a start is never caught in between: an agent
    // gone from the first read had started its desktop command, or stopped its Xvnc,
    // before the later reads. Read the other way round, a start finishing meanwhile would
    // show an Xvnc with neither its agent nor its desktop command: one cut off half-way,
    // which recovery stops.
    let starting = procs::starting_agents()
        .into_iter()
        .filter(|(_, m)| valid_marker(m))
        .map(|(uid, marker)| StartInProgress {
            user: user_name(uid),
            marker,
        })
        .collect();
    let marked = procs::all_marked();
    let desktops = procs::hpcdesk_xvnc()
        .into_iter()
        .filter(|x| x.password_file.contains(&format!("/{node}-{}/", x.display)))
        .map(|x| {
            let value = marked
                .iter()
                .find(|(pid, _, _)| *pid == x.pid)
                .map(|(_, _, m)| m.clone());
            // Its desktop command runs when another process of the same owner carries the
            // same marker, one that Xvnc did not start itself: its keymap compiler inherits
            // the marker while it starts, before any desktop command runs.
            let complete = value.as_ref().is_some_and(|v| {
                marked.iter().any(|(pid, uid, m)| {
                    *pid != x.pid
                        && *uid == x.uid
                        && m == v
                        && !procs::descends_from(*pid, x.pid, procs::parent)
                })
            });
            // The pin is in the desktop's state file, in the user's home: read only by the
            // user's own agent (as root, hpcdesk reads no user's files).
            let tls_pin = (x.uid == nix::unistd::Uid::current().as_raw())
                .then(|| Path::new(&x.password_file).with_file_name("state.json"))
                .and_then(|p| capped::small_file(&p, 4096).ok())
                .and_then(|b| serde_json::from_slice::<DesktopState>(&b).ok())
                .and_then(|s| s.tls_pin);
            LiveDesktop {
                user: user_name(x.uid),
                display: x.display,
                port: x.port,
                pid: x.pid,
                marker: value.as_deref().and_then(marker_token).map(str::to_owned),
                complete,
                tls_pin,
            }
        })
        .collect();
    Listing { desktops, starting }
}

/// Load and capacity of this node.
pub fn probe(node: &str) -> Probe {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let load1 = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    Probe {
        node: node.to_owned(),
        cores,
        load1,
        mem_total_kib: field("MemTotal:"),
        mem_available_kib: field("MemAvailable:"),
        desktops: list(node).desktops.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_stdin_without_newline() {
        let one = read_password(&b"abcdefgh\n"[..]).unwrap();
        assert_eq!(
            (one.full.as_slice(), &one.view_only),
            (&b"abcdefgh"[..], &None)
        );
        let two = read_password(&b"abcdefgh\r\nviewonly\n"[..]).unwrap();
        assert_eq!(two.view_only.as_deref(), Some(&b"viewonly"[..]));
        assert_eq!(two.file().len(), 16, "two obfuscated passwords");
        assert_eq!(&two.file()[..8], &one.file()[..]);
        assert!(read_password(&b"abc\n"[..]).is_err());
        assert!(read_password(&b"abcdefgh\nabc\n"[..]).is_err());
        assert!(!format!("{two:?}").contains("abcdefgh"));
    }

    #[test]
    fn the_xvnc_reason_is_the_last_error_line() {
        let log = "Xvnc TigerVNC 1.12.0\n(EE) \n(EE) Fatal server error:\n(EE) Cannot open /x/passwd: No such file\n(EE) \n(EE) Please consult the The X.Org Foundation support\n";
        assert_eq!(xvnc_reason(log), "Cannot open /x/passwd: No such file");
        assert_eq!(
            xvnc_reason("Unrecognized option: -bogus\n"),
            "Unrecognized option: -bogus"
        );
        assert_eq!(xvnc_reason(""), "no output");
    }

    #[test]
    fn a_configured_desktop_is_split_without_a_shell() {
        let v = desktop_argvs(&["/usr/bin/xterm -T 'my term' -e 'sleep 1; x'".into()]).unwrap();
        assert_eq!(
            v,
            vec![vec!["/usr/bin/xterm", "-T", "my term", "-e", "sleep 1; x"]]
        );
        assert!(desktop_argvs(&["xterm 'unclosed".into()]).is_err());
    }

    #[test]
    fn markers_are_letters_and_digits_at_the_end_of_the_value() {
        assert!(valid_marker("0123abcdEF"));
        assert!(!valid_marker("short"));
        assert!(!valid_marker("with-dash-0123"));
        assert_eq!(marker_token("gv101-4-0123abcdef"), Some("0123abcdef"));
        assert_eq!(marker_token("gv-1-01-4-0123abcdef"), Some("0123abcdef"));
        assert_eq!(marker_token("n-4-x"), None);
    }

    #[test]
    fn listen_parses_localhost_or_an_address() {
        assert_eq!(Listen::parse("localhost").unwrap(), Listen::Localhost);
        assert!(matches!(
            Listen::parse("10.0.0.2").unwrap(),
            Listen::Interface(_)
        ));
        assert!(Listen::parse("0.0.0.0; rm").is_err());
    }
}
