//! The session lifecycle (DESIGN §4).
//!
//! `pending` (queued, e.g. in Slurm) → `starting` (VNC server being started) → `running`
//! → `stopped` (deleted or swept) or `failed` (with a reason). `stopped` is final; `failed`
//! can only be cleared to `stopped`. A session is *live* while it may still hold a desktop:
//! pending, starting or running. One user holds at most one live session.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Pending,
    Starting,
    Running,
    Failed,
    Stopped,
}

impl SessionState {
    pub const LIVE: [SessionState; 3] = [
        SessionState::Pending,
        SessionState::Starting,
        SessionState::Running,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Failed => "failed",
            SessionState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        Some(match s {
            "pending" => SessionState::Pending,
            "starting" => SessionState::Starting,
            "running" => SessionState::Running,
            "failed" => SessionState::Failed,
            "stopped" => SessionState::Stopped,
            _ => return None,
        })
    }

    /// Pending, starting or running: the session may hold a desktop.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, next),
            (Pending, Starting | Running | Failed | Stopped)
                | (Starting, Running | Failed | Stopped)
                | (Running, Failed | Stopped)
                | (Failed, Stopped)
        )
    }
}

/// Most characters a `statusReason` keeps: the reasons come from places users control
/// (their shell's output, their job's output), so they are bounded before they are stored.
pub const MAX_REASON_CHARS: usize = 500;

/// `text` as a `statusReason`: one line per line of it, control characters dropped, at
/// most [`MAX_REASON_CHARS`] characters (the end cut and marked with `…`).
pub fn status_reason(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if clean.chars().count() <= MAX_REASON_CHARS {
        return clean;
    }
    let mut out: String = clean.chars().take(MAX_REASON_CHARS - 1).collect();
    out.push('…');
    out
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::{self, *};

    const ALL: [SessionState; 5] = [Pending, Starting, Running, Failed, Stopped];

    #[test]
    fn stopped_is_final() {
        for s in ALL {
            assert!(!Stopped.can_become(s));
        }
    }

    #[test]
    fn a_failed_session_can_only_be_cleared() {
        for s in ALL {
            assert_eq!(Failed.can_become(s), s == Stopped);
        }
    }

    #[test]
    fn nothing_goes_back_to_pending() {
        for s in ALL {
            assert!(!s.can_become(Pending));
        }
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        use super::{MAX_REASON_CHARS, status_reason};
        assert_eq!(status_reason(" Xvnc exited\n"), "Xvnc exited");
        assert_eq!(status_reason("a\nb\x1b[31m"), "a b[31m");
        let long = "é".repeat(10_000);
        let r = status_reason(&long);
        assert_eq!(r.chars().count(), MAX_REASON_CHARS);
        assert!(r.ends_with('…'));
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionState::parse("RUNNING"), None);
    }
}
