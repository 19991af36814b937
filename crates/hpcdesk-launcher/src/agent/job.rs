//! The agent inside a Slurm job (`hpcdesk node job …`), and its helpers on the hpcdesk side.
//!
//! The job directory `~/.hpcdesk/jobs/<key>/` (0700) lives in the user's home, which HPC
//! clusters share between login and compute nodes: it is how the job and hpcdesk talk.
//! - `job-prepare` (hpcdesk side, as the user): stores the VNC password (from stdin) 0600;
//! - `job` (in the batch job): takes and deletes the password, starts the desktop exactly as
//!   `start` does, writes `report.json` (where it listens), tells hpcdesk so when the script
//!   gave it a [`ReadyCall`] (so that hpcdesk reads the report at once instead of at its next
//!   look), then stays in the foreground until
//!   the desktop's Xvnc ends or Slurm sends TERM (scancel, time limit) — then it stops every
//!   process of the desktop and removes the X locks before the job ends;
//! - `job-report` (hpcdesk side): whether the report is there, and the job log's tail;
//! - `job-clean`: removes the directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::{AgentError, ErrorKind, StartedDesktop};
use super::{StartArgs, make_private_dir, marker_token, procs, write_private};
use crate::capped;
use crate::process::Account;

fn err(msg: impl Into<String>) -> AgentError {
    AgentError {
        kind: ErrorKind::Failed,
        error: msg.into(),
        display: None,
    }
}

/// A job key: letters and digits only (it names a directory).
fn check_key(key: &str) -> Result<(), AgentError> {
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AgentError {
            kind: ErrorKind::Usage,
            error: "a job key is 1 to 64 letters and digits".into(),
            display: None,
        });
    }
    Ok(())
}

fn job_dir(key: &str) -> Result<PathBuf, AgentError> {
    check_key(key)?;
    let me = Account::current().map_err(|e| err(e.to_string()))?;
    Ok(me.home.join(".hpcdesk").join("jobs").join(key))
}

/// Where and with what token a job tells hpcdesk its desktop is ready: `POST <url>?marker=
/// <the job's key>&token=<token>`. The token is in the job script's environment (readable by
/// the job's user and root only: not in the job's name or command line, which every user
/// sees), and it only wakes hpcdesk up: hpcdesk then reads the job's report itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadyCall {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for ReadyCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyCall")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ReadyCall {
    /// The environment variables the job script sets for the agent.
    pub const URL_ENV: &str = "HPCDESK_READY_URL";
    pub const TOKEN_ENV: &str = "HPCDESK_READY_TOKEN";

    /// `env` arguments that hand this call to the agent.
    pub fn env_args(&self) -> [String; 2] {
        [
            format!("{}={}", Self::URL_ENV, self.url),
            format!("{}={}", Self::TOKEN_ENV, self.token),
        ]
    }

    /// The call the job script handed this process, if any.
    pub fn from_env() -> Option<ReadyCall> {
        let url = std::env::var(Self::URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())?;
        let token = std::env::var(Self::TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())?;
        Some(ReadyCall { url, token })
    }
}

/// Reply of `job-prepare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub dir: String,
}

/// Reply of `job-report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    /// Set once the desktop in the job is ready.
    pub desktop: Option<StartedDesktop>,
    /// The last lines of the job's output (why it failed, when it did).
    pub log_tail: String,
}

pub fn prepare(key: &str, password: &super::Passwords) -> Result<Prepared, AgentError> {
    let dir = job_dir(key)?;
    make_private_dir(&dir)?;
    let mut lines = password.full.clone();
    lines.push(b'\n');
    if let Some(v) = &password.view_only {
        lines.extend_from_slice(v);
        lines.push(b'\n');
    }
    write_private(&dir.join("passwd.in"), &lines)?;
    Ok(Prepared {
        dir: dir.display().to_string(),
    })
}

/// The last lines of the job's output. The file is the user's: it is read through the
/// capped reader (its last 64 KiB, never through a link, only a regular file).
fn log_tail(dir: &Path) -> String {
    let Ok(entries) = fs::read_dir(dir) else {
        return String::new();
    };
    let mut text = String::new();
    for e in entries.flatten().take(64) {
        if e.file_name().to_string_lossy().starts_with("slurm-") {
            text = match capped::file_tail(&e.path(), capped::TAIL) {
                Ok(t) => t,
                Err(why) => format!("(the job output cannot be read: {why})"),
            };
        }
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

pub fn report(key: &str) -> Result<JobReport, AgentError> {
    let dir = job_dir(key)?;
    let desktop = capped::small_file(&dir.join("report.json"), 64 * 1024)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(JobReport {
        desktop,
        log_tail: log_tail(&dir),
    })
}

pub fn clean(key: &str) -> Result<(), AgentError> {
    let dir = job_dir(key)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the desktop of a Slurm job in the foreground until Xvnc ends or TERM arrives.
/// Once the report is written, `tell` is given the job's [`ReadyCall`] (if its script set
/// one) to make; it must be bounded in time, and its failure only costs hpcdesk's next look.
/// Returns the reason it ended.
pub fn run(
    key: &str,
    args: &StartArgs,
    tell: impl FnOnce(&ReadyCall, &str),
) -> Result<String, AgentError> {
    let dir = job_dir(key)?;
    let pw_file = dir.join("passwd.in");
    let password = capped::small_file(&pw_file, 256).map_err(|e| {
        err(format!(
            "cannot read {} (is the home directory shared with this node?): {e}",
            pw_file.display()
        ))
    })?;
    let _ = fs::remove_file(&pw_file);
    let password = super::read_password(&password[..])?;

    // Set by the signal handler (Slurm's scancel and time limit send SIGTERM): a flag the
    // loop below reads, since a handler may do nothing but store to an atomic.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| err(format!("cannot handle signals: {e}")))?;
    }

    let started = super::start(args, &password)?;
    let state_json = serde_json::to_vec(&started).expect("report serialises");
    write_private(&dir.join("report.json.tmp"), &state_json)?;
    fs::rename(dir.join("report.json.tmp"), dir.join("report.json"))
        .map_err(|e| err(format!("cannot write the job report: {e}")))?;
    println!("{}", String::from_utf8_lossy(&state_json));
    if let Some(call) = ReadyCall::from_env() {
        tell(&call, key);
    }

    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "stopped by Slurm (scancel or time limit)".to_owned();
        }
        if !procs::alive(started.xvnc_pid) {
            break "the desktop's VNC server exited".to_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = fs::remove_file(dir.join("report.json"));
    let _ = super::stop(&args.node, started.display, marker_token(&started.marker));
    Ok(reason)
}
