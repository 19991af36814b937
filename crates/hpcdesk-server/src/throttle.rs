//! Abuse limits (10011 with `Retry-After`): request rates per user, per calling organisation
//! and per client address (GCRA, keyed, lock-free: `governor`), and failed-login lock-outs per
//! user name and per client address.

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

pub struct Limits {
    users: DefaultKeyedRateLimiter<String>,
    invokers: DefaultKeyedRateLimiter<String>,
    peers: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// Failed logins per key (`user:NAME`, `peer:ADDR`). A plain mutex: held for a lookup,
    /// never across an await.
    failures: Mutex<HashMap<String, Failures>>,
    max_failures: u32,
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
            clock: DefaultClock::default(),
            failures: Mutex::new(HashMap::new()),
            max_failures: cfg.login_failures.max(1),
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

    /// One request to a token endpoint from `peer`.
    pub fn check_peer(&self, peer: &str) -> Result<(), ApiError> {
        self.check(&self.peers, peer, "this address")
    }

    fn with_failures<R>(&self, f: impl FnOnce(&mut HashMap<String, Failures>) -> R) -> R {
        f(&mut self.failures.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Refuses a login attempt while any of `keys` is locked out.
    pub fn login_allowed(&self, keys: &[String]) -> Result<(), ApiError> {
        let now = Instant::now();
        let wait = self.with_failures(|m| {
            keys.iter()
                .filter_map(|k| m.get(k)?.locked_until)
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

    pub fn login_failed(&self, keys: &[String]) {
        let now = Instant::now();
        self.with_failures(|m| {
            for k in keys {
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
                if f.count >= self.max_failures {
                    f.locked_until = Some(now + self.lockout);
                }
            }
        });
    }

    pub fn login_succeeded(&self, key: &str) {
        self.with_failures(|m| {
            m.remove(key);
        });
    }

    /// Forgets idle rate-limit keys and old failures (called periodically).
    pub fn forget_old(&self) {
        self.users.retain_recent();
        self.invokers.retain_recent();
        self.peers.retain_recent();
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
    fn failed_logins_lock_the_name_and_success_resets_it() {
        let l = limits(100, 100);
        let keys = ["user:a".to_owned(), "peer:1.2.3.4".to_owned()];
        for _ in 0..2 {
            l.login_allowed(&keys).unwrap();
            l.login_failed(&keys);
        }
        l.login_succeeded("user:a");
        l.login_failed(&keys);
        l.login_allowed(&["user:a".to_owned()]).unwrap();
        // The address reached three failures.
        assert_eq!(l.login_allowed(&keys).unwrap_err().code().as_str(), "10011");
    }
}
