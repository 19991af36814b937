//! [`FakeLauncher`], for in-process tests and benchmarks (cargo feature `fake`): desktops
//! that are only addresses, whose every start, failure, queue and stop a test decides and
//! can see afterwards. It runs nothing and touches no account; its time is Tokio's, so tests
//! under `tokio::time::pause()` control it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId};

use crate::{
    Launch, LaunchError, Launched, Launcher, Liveness, NodeReport, Orphan, Progress, Queued,
    Recovery, StartRequest, Survey, Target,
};

/// What a start of one account does.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Ready (after the launcher's delay) at `127.0.0.1:port`.
    Ready { port: u16 },
    /// Fails with this error.
    Fail(LaunchError),
    /// Queued like a Slurm job: [`Launcher::progress`] answers `steps` in turn (the last
    /// one again and again).
    Queued { steps: Vec<Progress> },
    /// The start panics (a bug inside a launcher).
    Panic,
}

/// What the launcher was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start { user: String, marker: String },
    Progress { key: String },
    Stop { key: String },
}

#[derive(Debug, Default)]
struct State {
    plans: HashMap<String, Plan>,
    refused: HashSet<String>,
    calls: Vec<Call>,
    next_display: u32,
    /// Progress still to report, by session marker (the job's handle).
    queues: HashMap<String, VecDeque<Progress>>,
    /// Liveness by session key (alive when not set).
    liveness: HashMap<String, Liveness>,
    stop_fails: bool,
}

/// A launcher whose desktops are whatever the test says (see the module).
#[derive(Debug)]
pub struct FakeLauncher {
    node: NodeName,
    delay: Duration,
    default_plan: Plan,
    state: Mutex<State>,
}

impl Default for FakeLauncher {
    fn default() -> Self {
        FakeLauncher::new(Plan::Ready { port: 5901 })
    }
}

impl FakeLauncher {
    /// Every account's start follows `plan` unless told otherwise ([`Self::plan`]).
    pub fn new(default_plan: Plan) -> Self {
        FakeLauncher {
            node: NodeName::parse("fake").expect("a valid node name"),
            delay: Duration::ZERO,
            default_plan,
            state: Mutex::new(State::default()),
        }
    }

    /// Each start takes this long (Tokio time).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts of `user` follow `plan`.
    pub fn plan(&self, user: &str, plan: Plan) {
        self.lock().plans.insert(user.to_owned(), plan);
    }

    /// `user` may not run desktops (10008).
    pub fn refuse(&self, user: &str) {
        self.lock().refused.insert(user.to_owned());
    }

    /// What reconcile will hear about the session `key`.
    pub fn set_liveness(&self, key: &str, l: Liveness) {
        self.lock().liveness.insert(key.to_owned(), l);
    }

    /// Whether stops fail (the node is unreachable).
    pub fn fail_stops(&self, fail: bool) {
        self.lock().stop_fails = fail;
    }

    /// Everything asked so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many starts were asked for.
    pub fn starts(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Start { .. }))
            .count()
    }

    fn launched(&self, display: DisplayNumber, port: u16, marker: &str) -> Launched {
        Launched {
            node: self.node.clone(),
            display,
            host: "127.0.0.1".into(),
            port,
            handle: marker.to_owned(),
            warnings: Vec::new(),
            tls_pin: None,
            ends_at: None,
        }
    }
}

#[async_trait]
impl Launcher for FakeLauncher {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn admit(&self, user: &ComputeUser) -> Result<(), LaunchError> {
        if self.lock().refused.contains(user.as_str()) {
            return Err(LaunchError::Refused(format!(
                "account {user} may not run desktops"
            )));
        }
        Ok(())
    }

    async fn start(&self, req: StartRequest) -> Result<Launch, LaunchError> {
        let (plan, display) = {
            let mut s = self.lock();
            s.calls.push(Call::Start {
                user: req.compute_user.to_string(),
                marker: req.marker.clone(),
            });
            s.next_display += 1;
            let plan = s
                .plans
                .get(req.compute_user.as_str())
                .cloned()
                .unwrap_or_else(|| self.default_plan.clone());
            let display = DisplayNumber::new(s.next_display).expect("few displays");
            (plan, display)
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match plan {
            Plan::Ready { port } => Ok(Launch::Ready(self.launched(display, port, &req.marker))),
            Plan::Fail(e) => Err(e),
            Plan::Queued { steps } => {
                self.lock()
                    .queues
                    .insert(req.marker.clone(), steps.into_iter().collect());
                Ok(Launch::Queued(Queued {
                    session_id: SessionId::new(self.node.clone(), req.compute_user, display),
                    handle: req.marker,
                    reason: "Priority".into(),
                }))
            }
            Plan::Panic => panic!("the fake launcher was told to panic"),
        }
    }

    async fn progress(&self, target: &Target) -> Result<Progress, LaunchError> {
        let mut s = self.lock();
        s.calls.push(Call::Progress {
            key: target.key.clone(),
        });
        let queue = s
            .queues
            .get_mut(&target.handle)
            .ok_or_else(|| LaunchError::Scheduler("no such job".into()))?;
        let step = if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        };
        step.ok_or_else(|| LaunchError::Scheduler("the job has no steps".into()))
    }

    async fn stop(&self, target: &Target) -> Result<(), LaunchError> {
        let mut s = self.lock();
        s.calls.push(Call::Stop {
            key: target.key.clone(),
        });
        if s.stop_fails {
            return Err(LaunchError::Desktop("the node does not answer".into()));
        }
        Ok(())
    }

    fn home_node(&self) -> Option<NodeName> {
        None
    }

    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError> {
        let s = self.lock();
        Ok(Survey {
            targets: targets
                .iter()
                .map(|t| s.liveness.get(&t.key).cloned().unwrap_or(Liveness::Alive))
                .collect(),
            orphans: Vec::new(),
        })
    }

    async fn stop_orphan(&self, _: &Orphan) -> Result<(), LaunchError> {
        Ok(())
    }

    async fn recover(&self, _: &Target) -> Result<Recovery, LaunchError> {
        Ok(Recovery::Gone("the fake launcher keeps nothing".into()))
    }

    async fn nodes(&self, _: &ComputeUser) -> Vec<NodeReport> {
        Vec::new()
    }
}
