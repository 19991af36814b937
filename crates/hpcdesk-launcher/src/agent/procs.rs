//! Reading `/proc`: which processes are alive, which belong to a desktop, and which are
//! hpcdesk's Xvnc servers. Linux only, like the rest of the agent.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that marks every process of one desktop. Its value is unique
/// per desktop, so `stop` finds processes that left the desktop's process group.
pub const MARKER_VAR: &str = "HPCDESK_DESKTOP";

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces and parentheses.
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_none_or(|state| state == "Z" || state == "X")
}

/// The parent of `pid`, if it is alive and readable (field 4 of `/proc/<pid>/stat`).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is a descendant of `ancestor`, following `parent_of` up at most 32 levels.
/// Xvnc runs helpers of its own (`sh -c xkbcomp …` while it starts), which inherit its
/// environment and so its desktop marker; they are not the desktop's session.
pub fn descends_from(pid: i32, ancestor: i32, parent_of: impl Fn(i32) -> Option<i32>) -> bool {
    let mut p = pid;
    for _ in 0..32 {
        match parent_of(p) {
            Some(up) if up == ancestor => return true,
            Some(up) if up > 1 && up != p => p = up,
            _ => return false,
        }
    }
    false
}

fn pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn owner(pid: i32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The argv of `pid`, if readable.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The value of [`MARKER_VAR`] in `pid`'s environment, if readable.
pub fn marker_of(pid: i32) -> Option<String> {
    env_var(pid, MARKER_VAR)
}

/// The value of the variable `name` in `pid`'s environment, if readable.
pub fn env_var(pid: i32, name: &str) -> Option<String> {
    use std::io::Read;
    // A process's environment is bounded by the kernel's argument limit; read no more.
    let mut env = Vec::new();
    fs::File::open(format!("/proc/{pid}/environ"))
        .ok()?
        .take(4 << 20)
        .read_to_end(&mut env)
        .ok()?;
    let prefix = format!("{name}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn has_marker(pid: i32, marker: &str) -> bool {
    marker_of(pid).is_some_and(|m| m == marker)
}

/// Every live process that carries a desktop marker: (pid, uid, marker).
pub fn all_marked() -> Vec<(i32, u32, String)> {
    pids()
        .into_iter()
        .filter_map(|p| Some((p, owner(p)?, marker_of(p)?)))
        .filter(|(p, _, _)| alive(*p))
        .collect()
}

/// The marker an agent's argv names if it is a start in progress (`… node start …
/// --marker M`).
pub fn start_marker(argv: &[String]) -> Option<String> {
    let start = argv.windows(2).any(|w| w[0] == "node" && w[1] == "start");
    let marker = argv
        .iter()
        .position(|a| a == "--marker")
        .and_then(|i| argv.get(i + 1))?;
    start.then(|| marker.clone())
}

/// Starts in progress on this machine: (uid, marker) of each running `node start`.
pub fn starting_agents() -> Vec<(u32, String)> {
    pids()
        .into_iter()
        .filter_map(|p| {
            let marker = start_marker(&cmdline(p)?)?;
            alive(p).then_some(())?;
            Some((owner(p)?, marker))
        })
        .collect()
}

/// Live processes owned by `uid` that carry the desktop's marker.
pub fn marked(uid: u32, marker: &str) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|p| owner(*p) == Some(uid) && has_marker(*p, marker) && alive(*p))
        .collect()
}

/// An Xvnc started by an hpcdesk agent, as seen in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XvncProcess {
    pub pid: i32,
    pub uid: u32,
    pub display: u32,
    pub port: Option<u16>,
    pub password_file: String,
}

/// Parses an Xvnc argv; `None` unless it is an hpcdesk desktop (its password file lives in
/// an hpcdesk desktop directory).
pub fn parse_xvnc_argv(argv: &[String]) -> Option<(u32, Option<u16>, String)> {
    let prog = Path::new(argv.first()?).file_name()?.to_str()?;
    if !(prog.starts_with("Xvnc") || prog.starts_with("Xtigervnc")) {
        return None;
    }
    let display = argv
        .iter()
        .find_map(|a| a.strip_prefix(':')?.parse::<u32>().ok())?;
    let value_of = |flag: &str| {
        argv.iter()
            .position(|a| a.eq_ignore_ascii_case(flag))
            .and_then(|i| argv.get(i + 1))
    };
    let password_file = value_of("-PasswordFile")?;
    if !password_file.contains(super::DESKTOPS_DIR_MARK) {
        return None;
    }
    let port = value_of("-rfbport").and_then(|p| p.parse().ok());
    Some((display, port, password_file.clone()))
}

/// Every live hpcdesk Xvnc on this machine (of every account whose `/proc` entries we may read).
pub fn hpcdesk_xvnc() -> Vec<XvncProcess> {
    pids()
        .into_iter()
        .filter_map(|pid| {
            let argv = cmdline(pid)?;
            let (display, port, password_file) = parse_xvnc_argv(&argv)?;
            if !alive(pid) {
                return None;
            }
            Some(XvncProcess {
                pid,
                uid: owner(pid)?,
                display,
                port,
                password_file,
            })
        })
        .collect()
}

/// Sends `sig` to each pid, ignoring those already gone.
pub fn signal_all(pids: &[i32], sig: Signal) {
    for p in pids {
        let _ = kill(Pid::from_raw(*p), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn recognises_hpcdesk_xvnc_only() {
        let a = argv(
            "/usr/bin/Xvnc :12 -rfbport 5912 -PasswordFile /home/a/.hpcdesk/desktops/n-12/passwd",
        );
        assert_eq!(
            parse_xvnc_argv(&a),
            Some((
                12,
                Some(5912),
                "/home/a/.hpcdesk/desktops/n-12/passwd".to_owned()
            ))
        );
        assert_eq!(
            parse_xvnc_argv(&argv(
                "Xvnc :5 -rfbport 5905 -PasswordFile /home/a/.vnc/passwd"
            )),
            None
        );
        assert_eq!(
            parse_xvnc_argv(&argv("Xorg :0 -PasswordFile /x/.hpcdesk/desktops/p")),
            None
        );
    }

    #[test]
    fn a_start_in_progress_is_told_by_its_argv() {
        assert_eq!(
            start_marker(&argv(
                "/usr/bin/hpcdesk node start --node n --marker abc12 --xvnc X"
            )),
            Some("abc12".to_owned())
        );
        assert_eq!(
            start_marker(&argv("/usr/bin/hpcdesk node stop --marker abc")),
            None
        );
        assert_eq!(start_marker(&argv("hpcdesk node start --node n")), None);
    }

    #[test]
    fn a_helper_of_xvnc_descends_from_it_and_a_detached_session_does_not() {
        // 10 is Xvnc, 11 its `sh -c`, 12 the xkbcomp of that; 20 a session reparented to 1.
        let tree = |p: i32| match p {
            10 => Some(5),
            11 => Some(10),
            12 => Some(11),
            20 => Some(1),
            _ => None,
        };
        assert!(descends_from(11, 10, tree));
        assert!(descends_from(12, 10, tree));
        assert!(!descends_from(20, 10, tree));
        assert!(!descends_from(10, 10, tree));
        assert!(!descends_from(99, 10, tree));
        // A loop in what /proc said (pids reused while reading) ends.
        assert!(!descends_from(7, 10, |p| Some(if p == 7 { 8 } else { 7 })));
        // And on this machine: a child of this process descends from it.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        assert_eq!(parent(child.id() as i32), Some(me));
        assert!(descends_from(child.id() as i32, me, parent));
        assert!(!descends_from(me, child.id() as i32, parent));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0));
        assert!(!alive(-1));
    }
}
