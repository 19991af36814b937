//! JSON shapes of the desktop API, shared by the server and the CLI client (DESIGN §2.3).

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A time as the API and the CLI show it: ISO 8601 in the server's time zone, to the second,
/// with its offset (`2026-12-01T22:37:15+08:00`), as the real service answers.
pub fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// One desktop session as the API shows it (`data` of create, elements of list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionItem {
    pub session_id: String,
    pub host_name: String,
    /// The compute user the desktop runs as.
    pub user_name: String,
    pub display_number: u32,
    /// `pending` | `starting` | `running` | `failed` | `stopped`.
    pub status: String,
    /// Why the session is not running, when it is not; empty otherwise.
    pub status_reason: String,
    /// ISO 8601 with offset.
    pub create_time: String,
    /// ISO 8601 with offset: the last client input, or the creation time.
    pub last_active_time: String,
    /// Open viewer connections.
    pub connections: u32,
    pub geometry: String,
    /// The desktop chosen at create (a name from `GET /hpcdesk/v1/desktops`); empty for the
    /// node's own default.
    #[serde(default)]
    pub desktop: String,
    /// ISO 8601 with offset: when the desktop ends by its time limit (a Slurm job's end, or
    /// `lifecycle.max_lifetime` and extensions); empty when there is no limit.
    #[serde(default)]
    pub end_time: String,
}

/// One element of `data` of `GET /hpcdesk/v1/desktops`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesktopEntry {
    /// What a create names (`{"desktop": "xfce"}`).
    pub name: String,
    pub title: String,
    /// The desktop of a create that names none.
    pub default: bool,
}

/// `data` of the launch-URL call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchUrl {
    pub novnc_url: String,
    /// `true` when `novncUrl` is absolute; otherwise the portal prefixes the region's `hpcUrls`.
    pub with_domain: bool,
}

/// One element of the `data` array of the token endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEntry {
    pub cluster_name: String,
    pub cluster_id: String,
    /// `null` for a suspended account, as the AC platform answers.
    pub token: Option<String>,
}

/// `data` of `GET /ac/openapi/v2/center`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Center {
    pub id: String,
    pub name: String,
    pub description: String,
    pub cluster_user_info: ClusterUserInfo,
    pub hpc_urls: Vec<ServiceUrl>,
    pub efile_urls: Vec<ServiceUrl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUserInfo {
    pub user_name: String,
    pub home_path: String,
}

/// A service address of a region (the AC platform writes the flags as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUrl {
    pub url: String,
    pub enable: String,
    pub is_manager: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
}
