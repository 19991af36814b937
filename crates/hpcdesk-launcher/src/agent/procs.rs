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

fn has_marker(pid: i32, marker: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{MARKER_VAR}={marker}");
    env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes())
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
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0));
        assert!(!alive(-1));
    }
}
