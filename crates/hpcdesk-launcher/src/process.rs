//! The one wrapper through which hpcdesk runs every external program.
//!
//! - argv only, never a shell string;
//! - optionally as another account (root drops to the user: supplementary groups, gid, uid,
//!   in that order, in the child before `exec`);
//! - a timeout for everything that is waited for; the child is killed when it expires;
//! - exit code and the tail of stderr captured into a typed [`ProcessError`];
//! - detached spawns (new session, no controlling terminal, output to a log file) for the
//!   long-lived processes of a desktop, which must outlive the agent that started them.
//!
//! This module holds the crate's only `unsafe`: the `pre_exec` hook that changes identity.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};
use tokio::io::AsyncWriteExt;

use crate::capped::{self, StreamError};

/// At most this much of a failed command's stderr is kept for messages.
const STDERR_TAIL: usize = 2048;

/// Why an external program did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}", humantime::format_duration(*.after))]
    Timeout { program: String, after: Duration },
    #[error("{program} failed ({}): {stderr_tail}", how_it_ended(*.exit, *.signal))]
    Failed {
        program: String,
        /// The exit code, if it exited.
        exit: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// The last [`capped::TAIL`] bytes of what it printed.
        stdout: String,
        stderr_tail: String,
    },
    /// It printed more than [`capped::STREAM_LIMIT`] (e.g. a shell start-up file that prints
    /// forever) and was stopped.
    #[error(
        "{program} printed more than {}; it was stopped",
        capped::human_bytes(capped::STREAM_LIMIT)
    )]
    TooMuchOutput { program: String },
    #[error("no such account {0:?} on this machine")]
    NoSuchUser(String),
    #[error("cannot look up account {user:?}: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
}

/// "exit code 3", "signal 9": how a failed program ended, for [`ProcessError::Failed`].
pub(crate) fn how_it_ended(exit: Option<i32>, signal: Option<i32>) -> String {
    match (exit, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "no exit status".to_owned(),
    }
}

/// An account to run as, resolved before any fork (NSS lookups are not fork-safe).
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    pub fn lookup(name: &str) -> Result<Account, ProcessError> {
        let user = User::from_name(name)
            .map_err(|source| ProcessError::UserLookup {
                user: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ProcessError::NoSuchUser(name.to_owned()))?;
        let cname = CString::new(name).map_err(|_| ProcessError::NoSuchUser(name.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(|source| {
            ProcessError::UserLookup {
                user: name.to_owned(),
                source,
            }
        })?;
        Ok(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell: user.shell,
        })
    }

    /// The account this process runs as.
    pub fn current() -> Result<Account, ProcessError> {
        let uid = Uid::current();
        let user = User::from_uid(uid)
            .map_err(|source| ProcessError::UserLookup {
                user: uid.to_string(),
                source,
            })?
            .ok_or_else(|| ProcessError::NoSuchUser(uid.to_string()))?;
        Account::lookup(&user.name)
    }
}

/// A program and its arguments, plus how to run it. Its `Debug` never shows what goes to
/// stdin (passwords travel there).
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    clear_env: bool,
    cwd: Option<PathBuf>,
    run_as: Option<Account>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmd")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("clear_env", &self.clear_env)
            .field("cwd", &self.cwd)
            .field("run_as", &self.run_as.as_ref().map(|a| &a.name))
            .field(
                "stdin",
                &self.stdin.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            run_as: None,
            stdin: None,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts from an empty environment (only what [`Cmd::env`] adds).
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs the program as `account`. Switching needs root; as the same account it is a no-op.
    pub fn run_as(mut self, account: Account) -> Self {
        self.run_as = Some(account);
        self
    }

    /// Bytes written to the program's stdin (which is then closed). Used for secrets, which
    /// must never be in argv (visible to every user in `ps`).
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn program_name(&self) -> String {
        Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    fn std_command(&self, new_session: bool) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        if self.clear_env {
            c.env_clear();
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        let switch = self
            .run_as
            .as_ref()
            .filter(|a| a.uid != Uid::effective())
            .map(|a| (a.uid, a.gid, a.groups.clone()));
        // std changes directory before any pre_exec hook, i.e. still as root: a home that root
        // may not enter (NFS with root_squash, mode 0700) would fail. When switching accounts
        // the directory is entered after the switch, as the user.
        let cwd_after_switch = match (&self.cwd, &switch) {
            (Some(dir), Some(_)) => {
                use std::os::unix::ffi::OsStrExt;
                CString::new(dir.as_os_str().as_bytes()).ok()
            }
            (Some(dir), None) => {
                c.current_dir(dir);
                None
            }
            (None, _) => None,
        };
        install_pre_exec(&mut c, switch, new_session, cwd_after_switch);
        c
    }

    /// Runs the program to completion and returns its stdout. A non-zero exit is an error
    /// carrying stdout too (the agent reports structured failures there).
    ///
    /// What it prints is the user's to control when it runs as the user (through their shell
    /// start-up files, over ssh): stdout and stderr are read through [`capped`], keeping
    /// their last [`capped::TAIL`] bytes, and a program that prints more than
    /// [`capped::STREAM_LIMIT`] is killed. The timeout covers the whole run.
    pub async fn output(&self) -> Result<String, ProcessError> {
        let program = self.program_name();
        let mut cmd = tokio::process::Command::from(self.std_command(false));
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let feed = async {
                if let (Some(bytes), Some(mut pipe)) = (&self.stdin, stdin) {
                    // A program that exits without reading its stdin is not an error here;
                    // its exit status tells what happened.
                    let _ = pipe.write_all(bytes).await;
                }
            };
            let ((), out, err) = tokio::join!(feed, read_pipe(stdout), read_pipe(stderr));
            (out, err)
        };
        let outcome = tokio::time::timeout(self.timeout, async {
            let (out, err) = run.await;
            if matches!(out, Err(StreamError::TooLong)) || matches!(err, Err(StreamError::TooLong))
            {
                return Err(ProcessError::TooMuchOutput {
                    program: program.clone(),
                });
            }
            let status = child.wait().await.map_err(|source| ProcessError::Spawn {
                program: program.clone(),
                source,
            })?;
            Ok((status, out, err))
        })
        .await;
        let (status, out, err) = match outcome {
            Ok(Ok(done)) => done,
            // Dropping the child (kill_on_drop) kills it.
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ProcessError::Timeout {
                    program,
                    after: self.timeout,
                });
            }
        };
        let text = |t: Result<capped::Tail, StreamError>| t.map(|t| t.text()).unwrap_or_default();
        let stdout = text(out);
        if status.success() {
            Ok(stdout)
        } else {
            Err(ProcessError::Failed {
                program,
                exit: status.code(),
                signal: std::os::unix::process::ExitStatusExt::signal(&status),
                stdout,
                stderr_tail: tail(&text(err)),
            })
        }
    }

    /// Starts the program detached: a new session (so it survives whoever started it and
    /// gets no terminal signals), stdin from /dev/null, stdout and stderr appended to `log`.
    /// Returns the child so a starter can watch it during start-up; dropping it does not
    /// kill the process.
    pub fn spawn_detached(&self, log: &Path) -> Result<std::process::Child, ProcessError> {
        let program = self.program_name();
        let spawn_err = |source| ProcessError::Spawn {
            program: program.clone(),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut c = self.std_command(true);
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        c.spawn().map_err(spawn_err)
    }
}

/// Reads a child's output pipe through the capped reader.
async fn read_pipe(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
) -> Result<capped::Tail, StreamError> {
    match pipe {
        Some(p) => capped::read_stream(p, capped::TAIL, capped::STREAM_LIMIT).await,
        None => Ok(capped::Tail::new(0)),
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes of `s`, trimmed, on a char boundary.
pub fn tail(s: &str) -> String {
    let s = s.trim();
    if s.len() <= STDERR_TAIL {
        return s.to_owned();
    }
    let mut start = s.len() - STDERR_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// The last non-empty line of `s`: usually the one that says what went wrong.
pub fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned()
}

#[allow(unsafe_code)]
fn install_pre_exec(
    c: &mut std::process::Command,
    switch: Option<(Uid, Gid, Vec<Gid>)>,
    new_session: bool,
    cwd: Option<CString>,
) {
    use std::os::unix::process::CommandExt;
    if switch.is_none() && !new_session {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, setgroups, setgid, setuid, chdir) on data
    // prepared before the fork; it allocates nothing. Order matters: groups and gid must
    // change while we are still root, so std's own uid/gid setters (which run before
    // pre_exec hooks) are not used; the directory is entered last, as the user.
    unsafe {
        c.pre_exec(move || {
            if new_session {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
            }
            if let Some((uid, gid, groups)) = &switch {
                nix::unistd::setgroups(groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(std::io::Error::from)?;
            }
            if let Some(dir) = &cwd {
                nix::unistd::chdir(dir.as_c_str()).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdout_and_stdin_travel_without_a_shell() {
        let out = Cmd::new("cat")
            .stdin(b"a b; echo c".to_vec())
            .output()
            .await;
        assert_eq!(out.unwrap(), "a b; echo c");
        let out = Cmd::new("echo").arg("$(id)").output().await.unwrap();
        assert_eq!(out, "$(id)\n");
    }

    #[tokio::test]
    async fn a_failure_carries_status_and_stderr() {
        let err = Cmd::new("sh")
            .args([
                "-c",
                "echo out; echo first >&2; echo 'the reason' >&2; exit 3",
            ])
            .output()
            .await
            .unwrap_err();
        match err {
            ProcessError::Failed {
                exit,
                signal,
                stdout,
                stderr_tail,
                ..
            } => {
                assert_eq!((exit, signal), (Some(3), None));
                assert_eq!(stdout, "out\n");
                assert_eq!(last_line(&stderr_tail), "the reason");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_program_that_prints_forever_is_stopped_at_the_limit() {
        let started = std::time::Instant::now();
        for stream in ["yes", "yes >&2"] {
            let err = Cmd::new("sh")
                .args(["-c", stream])
                .timeout(Duration::from_secs(60))
                .output()
                .await
                .unwrap_err();
            assert!(matches!(err, ProcessError::TooMuchOutput { .. }), "{err:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn only_the_tail_of_a_long_output_is_kept() {
        let out = Cmd::new("sh")
            .args([
                "-c",
                "head -c 1000000 /dev/zero | tr '\\0' 'x'; echo; echo '{\"ok\":1}'",
            ])
            .output()
            .await
            .unwrap();
        assert!(out.len() <= capped::TAIL, "{}", out.len());
        assert_eq!(last_line(&out), "{\"ok\":1}");
    }

    #[tokio::test]
    async fn a_slow_program_is_killed_at_the_timeout() {
        let started = std::time::Instant::now();
        let err = Cmd::new("sleep")
            .arg("10")
            .timeout(Duration::from_millis(200))
            .output()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn debug_never_shows_stdin() {
        let c = Cmd::new("agent").arg("start").stdin(b"s3cretpw\n".to_vec());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cretpw"), "{dbg}");
        assert!(dbg.contains("<9 bytes>") && dbg.contains("start"), "{dbg}");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = Cmd::new("/nonexistent/hpcdesk-nothing")
            .output()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let s = "é".repeat(STDERR_TAIL);
        let t = tail(&s);
        assert!(t.len() <= STDERR_TAIL);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
