//! Slurm jobs telling hpcdesk their desktop is ready, whole: the [`ReadyCall`] a job is
//! given (where to call, and a token bound to its session's marker), checking a call, and
//! the wake-up it causes ([`JobWakes`]).
//!
//! Without it hpcdesk finds out by asking (squeue, then the job's report) on a timer: every
//! 500 ms while a create waits, every 2 s in the background. With it, the job's agent calls
//! `POST /hpcdesk/v1/jobs/ready?marker=…&token=…` as soon as its report is written, and
//! whatever waits for a queued desktop asks at once. The call carries nothing hpcdesk
//! trusts beyond "look now": the report is still read by hpcdesk itself. Its token (128 bits
//! of HMAC-SHA256 of the marker under a key derived from the server secret) only keeps
//! anyone else from making hpcdesk ask over and over.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hpcdesk_core::seal::ServerKey;
use hpcdesk_launcher::agent::job::ReadyCall;
use subtle::ConstantTimeEq;

/// Bytes of the HMAC kept in a job's token.
const TOKEN_LEN: usize = 16;

/// The path jobs call, under the URL in `Settings::job_ready_url`.
pub const READY_PATH: &str = "/hpcdesk/v1/jobs/ready";

/// The token of the job of the session with `marker`.
fn token(key: &ServerKey, marker: &str) -> String {
    URL_SAFE_NO_PAD.encode(&key.job_ready_tag(marker)[..TOKEN_LEN])
}

/// What the job of the session with `marker` is given, when jobs call at all.
pub fn ready_call(url: Option<&String>, key: &ServerKey, marker: &str) -> Option<ReadyCall> {
    url.map(|url| ReadyCall {
        url: url.clone(),
        token: token(key, marker),
    })
}

/// Whether `token` is the one given to the job of the session with `marker`.
pub fn check(key: &ServerKey, marker: &str, token: &str) -> bool {
    let expected = self::token(key, marker);
    token.len() == expected.len() && bool::from(token.as_bytes().ct_eq(expected.as_bytes()))
}

/// Wake-ups from jobs: every waiter for a queued desktop holds a receiver and looks again
/// when it changes. A counter in a `watch` rather than a `Notify`: a wake-up that comes
/// while a waiter is busy asking is not lost, it makes that waiter ask once more.
#[derive(Debug)]
pub struct JobWakes(tokio::sync::watch::Sender<u64>);

impl Default for JobWakes {
    fn default() -> Self {
        JobWakes(tokio::sync::watch::Sender::new(0))
    }
}

impl JobWakes {
    /// Wakes every waiter.
    pub fn wake(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees the wake-ups from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_token_opens_only_its_own_marker_under_its_own_secret() {
        let key = ServerKey::from_secret(b"s");
        let url = "http://login1:65106/hpcdesk/v1/jobs/ready".to_owned();
        let call = ready_call(Some(&url), &key, "m1").unwrap();
        assert_eq!(call.url, url);
        assert_eq!(call.token.len(), 22);
        assert!(check(&key, "m1", &call.token));
        assert!(!check(&key, "m2", &call.token));
        assert!(!check(&ServerKey::from_secret(b"t"), "m1", &call.token));
        assert!(!check(&key, "m1", &call.token[..21]));
        assert!(!check(&key, "m1", ""));
        assert_eq!(ready_call(None, &key, "m1"), None);
    }

    #[tokio::test]
    async fn a_wake_up_while_a_waiter_is_busy_is_not_lost() {
        let wakes = JobWakes::default();
        let mut rx = wakes.subscribe();
        wakes.wake();
        wakes.wake();
        // Both seen as one change, however late the waiter comes to look.
        rx.changed().await.unwrap();
        assert!(!rx.has_changed().unwrap());
        wakes.wake();
        assert!(rx.has_changed().unwrap());
    }
}
