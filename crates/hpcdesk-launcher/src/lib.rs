//! Where desktops run.
//!
//! - this file: the [`Launcher`] trait the server talks to, and its request/reply types.
//! - [`local`]: desktops on this machine, by running the node agent as the user.
//! - [`agent`]: the node agent itself (`hpcdesk node …`): the one place that starts and stops
//!   TigerVNC, shared by every launcher.
//! - [`process`]: the one wrapper through which every external program runs.
//! - [`x11`]: Xauthority cookies and the X11 readiness check.
#![deny(unsafe_code)]

pub mod agent;
pub mod local;
pub mod process;
pub mod x11;

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName};

pub use local::{LocalConfig, LocalLauncher};

/// Why a launcher could not do what was asked. The text is shown to the API caller
/// (`msg` of 815201 / 815008), so it names the cause but never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// No node has room (all displays taken, overloaded, unreachable): 815201.
    #[error("{0}")]
    NoCapacity(String),
    /// The desktop could not be started or stopped: 815008.
    #[error("{0}")]
    Desktop(String),
    /// The desktop was tried on a display of a node and failed there: 815008. The session
    /// keeps that place in its id so its `statusReason` can be listed.
    #[error("{reason}")]
    FailedAt {
        reason: String,
        node: NodeName,
        display: DisplayNumber,
    },
}

/// A request to start one desktop.
#[derive(Clone)]
pub struct StartRequest {
    pub compute_user: ComputeUser,
    /// The session's VNC password (8 characters). Passed to the agent on stdin only.
    pub password: Vec<u8>,
    pub geometry: String,
}

impl std::fmt::Debug for StartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRequest")
            .field("compute_user", &self.compute_user)
            .field("password", &"<redacted>")
            .field("geometry", &self.geometry)
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
}

/// A desktop the store believes exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    pub compute_user: ComputeUser,
    pub node: NodeName,
    pub display: DisplayNumber,
    pub handle: String,
}

/// What a launcher found out about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Certainly gone, with the reason shown as the session's `statusReason`.
    Gone(String),
    /// Could not be checked this time (node unreachable…); try again later.
    Unknown(String),
}

/// A desktop process no session owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub node: NodeName,
    pub user: String,
    pub display: u32,
    pub pid: i32,
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

    /// Starts a desktop and waits until it is ready (RFB answering, X display usable).
    async fn start(&self, req: StartRequest) -> Result<Launched, LaunchError>;

    /// Stops a desktop and every process of it. Stopping one that is gone succeeds.
    async fn stop(&self, target: &Target) -> Result<(), LaunchError>;

    /// Checks which targets are alive, and reports desktops nobody owns.
    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError>;

    /// Stops a desktop no session owns.
    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError>;
}
