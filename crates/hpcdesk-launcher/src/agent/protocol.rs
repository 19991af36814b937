//! What the node agent prints: one JSON object on stdout, shared by the agent and the
//! launchers that parse it.

use serde::{Deserialize, Serialize};

/// Why the agent failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad arguments: a configuration problem.
    Usage,
    /// Every display in the range is taken: the node is full.
    NoDisplay,
    /// The desktop could not be started or stopped.
    Failed,
}

/// An agent failure: `{"kind": ..., "error": "...", "display": N?}`, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct AgentError {
    pub kind: ErrorKind,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<u32>,
}

/// Reply of `node start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedDesktop {
    pub node: String,
    pub display: u32,
    pub port: u16,
    /// Address the gateway connects to.
    pub host: String,
    pub xvnc_pid: i32,
    /// The value of `HPCDESK_DESKTOP` in every process of this desktop.
    pub marker: String,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// With TLS: the SHA-256 (hex) of the desktop's own certificate, which the gateway pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<String>,
}

/// Reply of `node stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub display: u32,
    /// Processes that were signalled.
    pub processes: usize,
}

/// One desktop in the reply of `node list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDesktop {
    pub user: String,
    pub display: u32,
    pub port: Option<u16>,
    pub pid: i32,
    /// The session's marker the desktop carries (the token hpcdesk chose before launching
    /// it), when its `HPCDESK_DESKTOP` could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    /// Whether processes of the desktop other than its Xvnc run (its session was started):
    /// a desktop whose agent died between Xvnc and the desktop command is not.
    #[serde(default)]
    pub complete: bool,
    /// Its certificate's pin, when it speaks TLS (listed only for the agent's own account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<String>,
}

/// A start in progress on the node: an agent (`node start --marker …`) still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartInProgress {
    pub user: String,
    pub marker: String,
}

/// Reply of `node list`: hpcdesk's desktops alive on the node, and starts in progress.
/// (Agents before markers replied with the bare array of desktops; it still parses.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub desktops: Vec<LiveDesktop>,
    pub starting: Vec<StartInProgress>,
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Full {
            desktops: Vec<LiveDesktop>,
            #[serde(default)]
            starting: Vec<StartInProgress>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Full(Full),
            Bare(Vec<LiveDesktop>),
        }
        Ok(match Either::deserialize(d)? {
            Either::Full(f) => Listing {
                desktops: f.desktops,
                starting: f.starting,
            },
            Either::Bare(desktops) => Listing {
                desktops,
                starting: Vec::new(),
            },
        })
    }
}

/// Reply of `node probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub node: String,
    pub cores: u32,
    pub load1: f64,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub desktops: u32,
}
