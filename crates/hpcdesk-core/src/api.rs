//! The SCNet response envelope and its error codes (DESIGN §2.1).
//!
//! Every API answer is `{"code": "...", "msg": "...", "data": ...}` with HTTP 200; clients
//! look at `code`. This module owns the list of codes and their default messages so the
//! server maps errors to codes in exactly one place.

use serde::{Deserialize, Serialize};

/// The business codes of the SCNet OpenAPI that hpcdesk answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCode {
    Success,
    Internal,
    MissingParameter,
    InvalidParameter,
    PermissionDenied,
    UnsupportedVersion,
    RoleMapping,
    TooFrequent,
    TooLarge,
    NoNodeAvailable,
    DesktopService,
    SessionNotFound,
}

impl ApiCode {
    /// The code as it travels in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiCode::Success => "0",
            ApiCode::Internal => "10001",
            ApiCode::MissingParameter => "10003",
            ApiCode::InvalidParameter => "10004",
            ApiCode::PermissionDenied => "10008",
            ApiCode::UnsupportedVersion => "10009",
            ApiCode::RoleMapping => "10010",
            ApiCode::TooFrequent => "10011",
            ApiCode::TooLarge => "10012",
            ApiCode::NoNodeAvailable => "815201",
            ApiCode::DesktopService => "815008",
            ApiCode::SessionNotFound => "815010",
        }
    }

    /// Parses a code received from a server (used by the CLI client).
    pub fn parse(code: &str) -> Option<ApiCode> {
        ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The message used when nothing more specific is known.
    pub fn default_msg(self) -> &'static str {
        match self {
            ApiCode::Success => "success",
            ApiCode::Internal => "internal error",
            ApiCode::MissingParameter => "missing parameters",
            ApiCode::InvalidParameter => "invalid parameter",
            ApiCode::PermissionDenied => "insufficient permission",
            ApiCode::UnsupportedVersion => "unsupported version",
            ApiCode::RoleMapping => "role mapping error",
            ApiCode::TooFrequent => "calls too frequent",
            ApiCode::TooLarge => "content size over limit",
            ApiCode::NoNodeAvailable => {
                "all VNC nodes overloaded or SSH unreachable; session creation failed"
            }
            ApiCode::DesktopService => "desktop service error",
            ApiCode::SessionNotFound => "desktop session does not exist",
        }
    }
}

impl ApiCode {
    /// Every code, for documentation checks and parsing.
    pub const ALL: [ApiCode; 12] = ALL;
}

const ALL: [ApiCode; 12] = [
    ApiCode::Success,
    ApiCode::Internal,
    ApiCode::MissingParameter,
    ApiCode::InvalidParameter,
    ApiCode::PermissionDenied,
    ApiCode::UnsupportedVersion,
    ApiCode::RoleMapping,
    ApiCode::TooFrequent,
    ApiCode::TooLarge,
    ApiCode::NoNodeAvailable,
    ApiCode::DesktopService,
    ApiCode::SessionNotFound,
];

/// Where a failure came from, in the manner of pingora's `ErrorSource`: the log line of every
/// failure says it, so an operator knows at once whether to look at the request, a node,
/// Slurm, the database or hpcdesk itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// What the portal, the browser or the user sent (or who they are).
    Client,
    /// A node: its agent, its VNC server, the user's account or files there, ssh to it.
    Node,
    /// The Slurm controller or its commands.
    Slurm,
    /// The database.
    Store,
    /// hpcdesk itself: a broken invariant, a failed task.
    Internal,
}

impl ErrorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Client => "client",
            ErrorSource::Node => "node",
            ErrorSource::Slurm => "slurm",
            ErrorSource::Store => "store",
            ErrorSource::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code", "msg", "data"}`. Failures carry `data: ""` as the real service does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    pub code: String,
    pub msg: String,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn success(data: T) -> Self {
        Envelope {
            code: ApiCode::Success.as_str().to_owned(),
            msg: ApiCode::Success.default_msg().to_owned(),
            data,
        }
    }
}

impl Envelope<String> {
    pub fn failure(code: ApiCode, msg: impl Into<String>) -> Self {
        Envelope {
            code: code.as_str().to_owned(),
            msg: msg.into(),
            data: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_to_itself() {
        for c in ALL {
            assert_eq!(ApiCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ApiCode::parse("42"), None);
    }

    #[test]
    fn failure_envelope_has_empty_string_data() {
        let e = Envelope::failure(ApiCode::SessionNotFound, "no such session");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "815010", "msg": "no such session", "data": ""})
        );
    }
}
