//! Where desktops run.
//!
//! - this file: the [`Launcher`] trait the server talks to, and its request/reply types.
//! - [`local`]: desktops on this machine, by running the node agent as the user.
//! - [`ssh`]: desktops on a pool of nodes reached with OpenSSH, placed by probed load.
//! - [`slurm`]: desktops as Slurm jobs; [`slurm_time`]: Slurm's durations and end times.
//! - [`remote`]: running the agent and reading its replies, shared by the launchers.
//! - [`agent`]: the node agent itself (`hpcdesk node …`): the one place that starts and stops
//!   TigerVNC, shared by every launcher.
//! - [`policy`]: which Linux accounts may run desktops (checked through `Launcher::admit`).
//! - [`process`]: the one wrapper through which every external program runs.
//! - [`capped`]: the one reader for what users control (command output, files in homes).
//! - [`x11`]: Xauthority cookies and the X11 readiness check.
//! - `fake` (feature `fake`): a launcher for in-process tests and benchmarks.
#![deny(unsafe_code)]

pub mod agent;
pub mod capped;
pub mod desktops;
#[cfg(feature = "fake")]
pub mod fake;
pub mod local;
pub mod policy;
pub mod process;
pub mod remote;
pub mod slurm;
pub mod slurm_time;
pub mod ssh;
pub mod x11;

use std::time::Duration;

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId};

pub use agent::Probe;
pub use local::{LocalConfig, LocalLauncher};
pub use slurm::{SlurmConfig, SlurmLauncher, SlurmOptions};
pub use ssh::{NodeSpec, SshConfig, SshLauncher, SshOptions};

/// Why a launcher could not do what was asked. The text is shown to the API caller
/// (`msg` of 815201 / 815008), so it names the cause but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// No node has room (all displays taken, overloaded, unreachable): 815201.
    #[error("{0}")]
    NoCapacity(String),
    /// The desktop could not be started or stopped (on its node): 815008.
    #[error("{0}")]
    Desktop(String),
    /// Slurm could not be asked or refused the job: 815008.
    #[error("{0}")]
    Scheduler(String),
    /// The account may not run desktops (`policy`): 10008.
    #[error("{0}")]
    Refused(String),
    /// A longer time limit than the site allows was asked for (an extension): 10004, the
    /// message says the most that is allowed.
    #[error("{0}")]
    OverLimit(String),
    /// The desktop was tried on a display of a node and failed there: 815008. The session
    /// keeps that place in its id so its `statusReason` can be listed.
    #[error("{reason}")]
    FailedAt {
        reason: String,
        node: NodeName,
        display: DisplayNumber,
    },
}

impl LaunchError {
    /// Where the failure came from (the server's error map turns the variant into a code).
    pub fn origin(&self) -> hpcdesk_core::ErrorSource {
        use hpcdesk_core::ErrorSource;
        match self {
            LaunchError::NoCapacity(_) | LaunchError::Desktop(_) | LaunchError::FailedAt { .. } => {
                ErrorSource::Node
            }
            LaunchError::Scheduler(_) => ErrorSource::Slurm,
            LaunchError::Refused(_) | LaunchError::OverLimit(_) => ErrorSource::Client,
        }
    }
}

/// A request to start one desktop.
#[derive(Clone)]
pub struct StartRequest {
    pub compute_user: ComputeUser,
    /// The session's VNC password (8 characters). Passed to the agent on stdin only.
    pub password: Vec<u8>,
    /// Its view-only password (8 characters), for view-only launch URLs.
    pub view_password: Option<Vec<u8>>,
    pub geometry: String,
    /// The command lines of the chosen desktop ([`desktops::DesktopChoice::command`]);
    /// empty: the agent's own fallback (a window manager and an xterm).
    pub desktop: Vec<String>,
    /// The session's marker, already stored with it: the desktop carries it (and a Slurm
    /// job its name), so that it can be found after a crash ([`Launcher::recover`]).
    pub marker: String,
    /// How a desktop that starts later, in a Slurm job, tells hpcdesk it is ready; `None`:
    /// hpcdesk finds out by asking (launchers that start at once ignore it).
    pub ready: Option<agent::job::ReadyCall>,
}

impl StartRequest {
    /// What the agent reads on stdin: the password, then the view-only one, a line each.
    pub fn stdin(&self) -> Vec<u8> {
        let mut out = self.password.clone();
        out.push(b'\n');
        if let Some(v) = &self.view_password {
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }
}

/// A request for unit tests of how launchers render it.
#[cfg(test)]
pub(crate) fn test_request(geometry: &str, desktop: &[&str], marker: &str) -> StartRequest {
    StartRequest {
        compute_user: hpcdesk_core::ComputeUser::parse("alice").unwrap(),
        password: b"12345678".to_vec(),
        view_password: None,
        geometry: geometry.into(),
        desktop: desktop.iter().map(|d| d.to_string()).collect(),
        marker: marker.into(),
        ready: None,
    }
}

impl std::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRequest")
            .field("compute_user", &self.compute_user)
            .field("password", &"<redacted>")
            .field("geometry", &self.geometry)
            .field("desktop", &self.desktop)
            .field("marker", &self.marker)
            .field("ready", &self.ready)
            .finish()
    }
}

/// Where a started desktop can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub node: NodeName,
    pub display: DisplayNumber,
    /// Address the gateway connects to.
    pub host: String,
    pub port: u16,
    /// Launcher-specific handle to store (JSON).
    pub handle: String,
    pub warnings: Vec<String>,
    /// With TLS: the SHA-256 of the desktop's certificate, which the gateway pins.
    pub tls_pin: Option<String>,
    /// When the desktop ends by a time limit of the launcher's own (a Slurm job's end);
    /// `None`: the launcher sets none.
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What [`Launcher::start`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// The desktop is ready.
    Ready(Launched),
    /// The desktop was queued (a Slurm job); [`Launcher::progress`] tells when it is ready.
    Queued(Queued),
}

/// A desktop waiting for resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The session's id from now on (clients keep it while the desktop starts).
    pub session_id: SessionId,
    /// Launcher-specific handle to store (JSON), e.g. the job id.
    pub handle: String,
    /// Why it waits, e.g. Slurm's pending reason.
    pub reason: String,
}

/// Where a queued desktop is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still queued, with the reason.
    Pending(String),
    /// Resources granted; the desktop is starting (e.g. the job runs on a node).
    Starting(String),
    Ready(Launched),
    /// It will not start: the reason.
    Failed(String),
    /// It ended before it was used (e.g. the job was cancelled).
    Ended(String),
}

/// A desktop the store believes exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    pub compute_user: ComputeUser,
    /// Known once the desktop runs (a queued Slurm desktop has none yet).
    pub node: Option<NodeName>,
    pub display: Option<DisplayNumber>,
    /// Where the gateway connects, once known.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub handle: String,
    /// The session's marker (empty for sessions from before markers).
    pub marker: String,
}

impl Target {
    /// Node and display, or the error a launcher that needs them reports.
    pub fn place(&self) -> Result<(&NodeName, DisplayNumber), LaunchError> {
        match (&self.node, self.display) {
            (Some(n), Some(d)) => Ok((n, d)),
            _ => Err(LaunchError::Desktop(
                "the desktop has no node and display recorded".into(),
            )),
        }
    }
}

/// A node's state as `hpcdesk nodes` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    pub name: String,
    pub address: String,
    /// The probe, or why there is none.
    pub probe: Result<Probe, String>,
    /// Whether new desktops would be placed there, and if not why.
    pub accepting: Result<(), String>,
}

/// What a launcher found out about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Certainly gone, with the reason shown as the session's `statusReason` (→ failed).
    Gone(String),
    /// Ended in an orderly way outside hpcdesk, e.g. its Slurm job ended (→ stopped).
    Ended(String),
    /// Ended by its time limit (a Slurm job's TIMEOUT), with the reason (→ stopped).
    TimeLimit(String),
    /// Could not be checked this time (node unreachable…); try again later.
    Unknown(String),
}

/// A desktop process (or Slurm job) no running session owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub node: NodeName,
    /// The account it runs as, parsed like any account name (a listing is the node's word,
    /// and a user can put odd things in what their agent lists).
    pub user: ComputeUser,
    pub display: u32,
    pub pid: i32,
    /// The session marker it carries, if it was started by an hpcdesk with markers: then
    /// the store knows whose it is.
    pub marker: Option<String>,
    /// The Slurm job it is, with how long ago it was submitted.
    pub job: Option<(u64, std::time::Duration)>,
}

/// What became of a start whose hpcdesk instance died before it recorded the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The desktop was started completely: its session adopts it.
    Ready(Launched),
    /// (Slurm) the job was submitted: its session adopts it as queued.
    Queued(Queued),
    /// The start is still at work (its agent runs): look again later.
    InProgress,
    /// Nothing of it runs (any part that had started was stopped): why.
    Gone(String),
}

/// The result of [`Launcher::survey`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// One entry per target, in the same order.
    pub targets: Vec<Liveness>,
    pub orphans: Vec<Orphan>,
}

/// Starts, stops and watches desktops. Chosen once at start-up (`launcher.kind`).
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// `local`, `ssh` or `slurm`.
    fn kind(&self) -> &'static str;

    /// Whether `user` may run desktops ([`policy::Policy`]), asked before anything is
    /// written or run for them. Blocking: it resolves the account.
    fn admit(&self, user: &ComputeUser) -> Result<(), LaunchError>;

    /// Starts a desktop and waits until it is ready (RFB answering, X display usable), or
    /// queues it.
    async fn start(&self, req: StartRequest) -> Result<Launch, LaunchError>;

    /// Where a queued desktop is. Launchers that never queue never get asked.
    async fn progress(&self, target: &Target) -> Result<Progress, LaunchError> {
        let _ = target;
        Ok(Progress::Failed(
            "this launcher does not queue desktops".into(),
        ))
    }

    /// Stops a desktop and every process of it. Stopping one that is gone succeeds.
    async fn stop(&self, target: &Target) -> Result<(), LaunchError>;

    /// Where desktops will run, when it is known before a start (`local`: this machine). It
    /// is stored with the session before the desktop is launched.
    fn home_node(&self) -> Option<NodeName> {
        None
    }

    /// Whether this launcher can see the target's desktop at all. The `local` launcher sees
    /// only its own machine: an instance on another machine sharing the store must leave
    /// that machine's desktops alone.
    fn watches(&self, target: &Target) -> bool {
        let _ = target;
        true
    }

    /// Background upkeep, called about once a second (the ssh launcher probes its nodes here:
    /// a create never waits for that).
    async fn maintain(&self) {}

    /// Checks which targets are alive, and reports desktops nobody owns.
    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError>;

    /// Stops a desktop no session owns.
    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError>;

    /// Finds what an interrupted start (`start`: a session still `starting`, with its
    /// marker and account, whose instance died) left behind: a complete desktop or a
    /// submitted job to adopt, a start still at work, or nothing (a partial desktop is
    /// stopped first). Only ever adopts or stops what runs as `start.compute_user`.
    async fn recover(&self, start: &Target) -> Result<Recovery, LaunchError>;

    /// Every node's probe, probing as `user` where a login is needed.
    async fn nodes(&self, user: &ComputeUser) -> Vec<NodeReport>;

    /// Extends the time limit the launcher itself keeps for the target's desktop (a Slurm
    /// job's) by `by`, within the site's bounds ([`LaunchError::OverLimit`] past them), and
    /// returns the new end. `Ok(None)`: this launcher keeps no time limit of its own (the
    /// server's `lifecycle.max_lifetime` applies).
    async fn extend(
        &self,
        target: &Target,
        by: Duration,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, LaunchError> {
        let _ = (target, by);
        Ok(None)
    }

    /// Shows `message` inside the target's desktop as a notification, best effort (a
    /// desktop without a notification daemon shows nothing, and that is no error).
    async fn notify(&self, target: &Target, message: &str) {
        let _ = (target, message);
    }
}
