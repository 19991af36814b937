//! Abuse limits (10011 with `Retry-After`): request rates per user, per calling organisation
//! and per client address (GCRA, keyed, lock-free: `governor`), and failed-login lock-outs.
//!
//! Lock-outs must not be a weapon: failures count per (user name, client address), so
//! guessing from one place locks only that place out (`limits.login_failures`). Each client
//! address also has its own, higher, limit over every name it tries
//! (`login_failures_per_address`), and each name a much higher one over every address
//! (`login_failures_per_user`), which slows a guesser spread over many addresses without
//! letting one client lock an account out for everyone.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::error::ApiError;

fn quota(per_second: u32, burst: u32) -> Quota {
    let nz = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nz(per_second)).allow_burst(nz(burst))
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// What failed logins are counted against, with the threshold of each.
fn failure_keys(limits: &Limits, user: &str, peer: &str) -> [(String, u32); 3] {
    [
        (format!("pair:{user}@{peer}"), limits.max_failures),
        (format!("peer:{peer}"), limits.max_failures_per_address),
        (format!("user:{user}"), limits.max_failures_per_user),
    ]
}

pub struct Limits {
    users: DefaultKeyedRateLimiter<String>,
    invokers: DefaultKeyedRateLimiter<String>,
    peers: DefaultKeyedRateLimiter<String>,
    screenshots: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// Failed logins per key (see [`failure_keys`]). A plain mutex: held for a lookup,
    /// never across an await.
    failures: Mutex<HashMap<String, Failures>>,
    max_failures: u32,
    max_failures_per_address: u32,
    max_failures_per_user: u32,
    window: Duration,
    lockout: Duration,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

fn too_frequent(what: &str, wait: Duration) -> ApiError {
    ApiError::TooFrequent {
        msg: format!(
            "calls too frequent for {what}; retry in {} s",
            wait.as_secs_f64().ceil().max(1.0)
        ),
        retry_after: wait,
    }
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Limits {
            users: RateLimiter::keyed(quota(cfg.user_per_second, cfg.user_burst)),
            invokers: RateLimiter::keyed(quota(cfg.invoker_per_second, cfg.invoker_burst)),
            peers: RateLimiter::keyed(quota(cfg.peer_per_second, cfg.peer_burst)),
            screenshots: RateLimiter::keyed(quota(cfg.screenshot_per_second, cfg.screenshot_burst)),
            clock: DefaultClock::default(),
            failures: Mutex::new(HashMap::new()),
            max_failures: cfg.login_failures.max(1),
            max_failures_per_address: cfg.login_failures_per_address.max(1),
            max_failures_per_user: cfg.login_failures_per_user.max(1),
            window: cfg.login_window.0,
            lockout: cfg.login_lockout.0,
        }
    }

    fn check(
        &self,
        limiter: &DefaultKeyedRateLimiter<String>,
        key: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| too_frequent(what, not_until.wait_time_from(self.clock.now())))
    }

    /// One request by an authenticated caller.
    pub fn check_caller(&self, user: &str, invoker: &str) -> Result<(), ApiError> {
        self.check(&self.users, user, "this user")?;
        if !invoker.is_empty() {
            self.check(&self.invokers, invoker, "this organisation")?;
        }
        Ok(())
    }

    /// One screenshot of the session stored under `session_key`.
    pub fn check_screenshot(&self, session_key: &str) -> Result<(), ApiError> {
        self.check(
            &self.screenshots,
            session_key,
            "screenshots of this desktop",
        )
    }

    /// One request to a token endpoint from `peer`.
    pub fn check_peer(&self, peer: &str) -> Result<(), ApiError> {
        self.check(&self.peers, peer, "this address")
    }

    fn with_failures<R>(&self, f: impl FnOnce(&mut HashMap<String, Failures>) -> R) -> R {
        f(&mut self.failures.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Refuses a login attempt for `user` from `peer` while it is locked out.
    pub fn login_allowed(&self, user: &str, peer: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let keys = failure_keys(self, user, peer);
        let wait = self.with_failures(|m| {
            keys.iter()
                .filter_map(|(k, _)| m.get(k)?.locked_until)
                .filter(|until| *until > now)
                .map(|until| until - now)
                .max()
        });
        match wait {
            Some(w) => Err(ApiError::TooFrequent {
                msg: format!(
                    "too many failed logins; retry in {} s",
                    w.as_secs_f64().ceil().max(1.0)
                ),
                retry_after: w,
            }),
            None => Ok(()),
        }
    }

    /// Counts a failed login for `user` from `peer`.
    pub fn login_failed(&self, user: &str, peer: &str) {
        let now = Instant::now();
        let keys = failure_keys(self, user, peer);
        self.with_failures(|m| {
            for (k, max) in &keys {
                let f = m.entry(k.clone()).or_insert(Failures {
                    count: 0,
                    since: now,
                    locked_until: None,
                });
                if now - f.since > self.window {
                    *f = Failures {
                        count: 0,
                        since: now,
                        locked_until: None,
                    };
                }
                f.count += 1;
                if f.count >= *max {
                    f.locked_until = Some(now + self.lockout);
                }
            }
        });
    }

    /// A successful login clears the failures of that name from that address.
    pub fn login_succeeded(&self, user: &str, peer: &str) {
        let [(pair, _), ..] = failure_keys(self, user, peer);
        self.with_failures(|m| {
            m.remove(&pair);
        });
    }

    /// Forgets idle rate-limit keys and old failures (called periodically).
    pub fn forget_old(&self) {
        self.users.retain_recent();
        self.invokers.retain_recent();
        self.peers.retain_recent();
        self.screenshots.retain_recent();
        let now = Instant::now();
        self.with_failures(|m| {
            m.retain(|_, f| now - f.since <= self.window || f.locked_until.is_some_and(|u| u > now))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn limits(per_second: u32, burst: u32) -> Limits {
        Limits::new(&LimitsConfig {
            user_per_second: per_second,
            user_burst: burst,
            invoker_per_second: 1000,
            invoker_burst: 1000,
            login_failures: 3,
            login_window: HumanDuration(Duration::from_secs(60)),
            login_lockout: HumanDuration(Duration::from_secs(60)),
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn a_user_gets_the_burst_then_10011_with_a_wait() {
        let l = limits(1, 3);
        for _ in 0..3 {
            l.check_caller("u", "org").unwrap();
        }
        match l.check_caller("u", "org").unwrap_err() {
            ApiError::TooFrequent { retry_after, .. } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        // Another user is not affected.
        l.check_caller("v", "org").unwrap();
    }

    #[test]
    fn failures_lock_a_name_from_one_address_only_and_success_resets_them() {
        let l = limits(100, 100);
        for _ in 0..2 {
            l.login_allowed("a", "1.2.3.4").unwrap();
            l.login_failed("a", "1.2.3.4");
        }
        l.login_succeeded("a", "1.2.3.4");
        for _ in 0..3 {
            l.login_failed("a", "1.2.3.4");
        }
        assert_eq!(
            l.login_allowed("a", "1.2.3.4").unwrap_err().code().as_str(),
            "10011"
        );
        // The same name from elsewhere, and another name from there, are not locked.
        l.login_allowed("a", "5.6.7.8").unwrap();
        l.login_allowed("b", "1.2.3.4").unwrap();
    }

    #[test]
    fn an_address_and_a_name_have_higher_limits_of_their_own() {
        let l = Limits::new(&LimitsConfig {
            login_failures: 3,
            login_failures_per_address: 5,
            login_failures_per_user: 7,
            ..LimitsConfig::default()
        });
        // One address trying many names is stopped at five failures.
        for n in 0..5 {
            l.login_failed(&format!("name{n}"), "9.9.9.9");
        }
        assert!(l.login_allowed("fresh", "9.9.9.9").is_err());
        // One name tried from many addresses is stopped at seven.
        for a in 0..7 {
            l.login_failed("target", &format!("10.0.0.{a}"));
        }
        assert!(l.login_allowed("target", "10.0.1.1").is_err());
    }
}
