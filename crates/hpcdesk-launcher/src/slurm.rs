//! The `slurm` launcher: each desktop is a Slurm batch job.
//!
//! - **Submit**: as the user, hpcdesk stores the VNC password in the user's job directory
//!   (`hpcdesk node job-prepare`, 0600, in the shared home) and pipes a two-line script to
//!   `sbatch` (partition, account, time limit, CPUs, memory from the configuration). The script
//!   `exec`s the node agent (`hpcdesk node job`), which starts the desktop in the foreground,
//!   reports where it listens through the job directory, and traps TERM so no X lock is left.
//! - **Progress**: `squeue` gives the state and Slurm's pending reason (shown as the session's
//!   `statusReason`); once the job runs, `job-report` tells when the desktop is ready.
//! - **Stop**: `scancel`, then wait for the job to leave the queue.
//! - **Reconcile**: a job that ended turns its session `stopped` (cancelled, completed) or
//!   `failed` (failed, timeout, node failure…) with Slurm's state and reason.
//!
//! The session id keeps the shape `{name}--{user}--SIG--{n}` from submission on, with `name`
//! the configured id prefix and `n` derived from the job id; the real node and display show
//! in `hostName` and `displayNumber` once the desktop runs.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, HumanDuration, NodeName, SessionId};
use serde::{Deserialize, Serialize};

use crate::agent::Probe;
use crate::agent::cli::{DesktopOpts, NodeCommand};
use crate::agent::job::{JobReport, Prepared};
use crate::local::{account_for, as_user};
use crate::process::{Cmd, ProcessError, last_line};
use crate::remote::{self, DesktopSettings, agent_reply};
use crate::{
    Launch, LaunchError, Launched, Launcher, Liveness, NodeReport, Orphan, Progress, Queued,
    Recovery, StartRequest, Survey, Target,
};

/// The `[launcher.slurm]` section of the configuration, as the launcher uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmOptions {
    /// Path of the `hpcdesk` binary on the compute nodes.
    pub agent: String,
    /// The node part of Slurm session ids (`slurm--user--SIG--n`).
    pub id_prefix: NodeName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The job's time limit at submission (`sbatch --time`).
    pub time_limit: String,
    /// The most an extension may bring a desktop's job to, in all (the partition's MaxTime
    /// bounds it too).
    pub max_time_limit: HumanDuration,
    pub cpus: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// More `sbatch` options, one argv word each.
    pub extra_args: Vec<String>,
    /// Where Xvnc listens in the job: `hostname` (the node's address), `localhost` (hpcdesk
    /// runs on the compute node itself) or an address.
    pub listen: String,
    pub sbatch: String,
    pub squeue: String,
    pub scancel: String,
    pub scontrol: String,
    pub sinfo: String,
    /// How long a job hpcdesk submitted may stay in the queue after its session ended (or
    /// without its id recorded, after a crash) before reconcile cancels it.
    pub orphan_grace: HumanDuration,
    /// Where the compute nodes reach this hpcdesk (`http(s)://host:port[/prefix]`), for a job
    /// to say its desktop is ready; unset: `server.listen` (this host's name when it listens
    /// on every address; `https` with `server.tls_cert`); `""`: jobs do not call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_url: Option<String>,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            agent: "/usr/local/bin/hpcdesk".into(),
            id_prefix: NodeName::parse("slurm").expect("a valid node name"),
            partition: None,
            account: None,
            time_limit: "8:00:00".into(),
            max_time_limit: HumanDuration::secs(24 * 3600),
            cpus: 1,
            memory: None,
            extra_args: Vec::new(),
            listen: "hostname".into(),
            sbatch: "sbatch".into(),
            squeue: "squeue".into(),
            scancel: "scancel".into(),
            scontrol: "scontrol".into(),
            sinfo: "sinfo".into(),
            orphan_grace: HumanDuration::secs(120),
            ready_url: None,
        }
    }
}

/// Everything the `slurm` launcher runs on: its section of the configuration and what
/// start-up decides.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    pub options: SlurmOptions,
    /// The `hpcdesk` binary here (run as the user for the job directory).
    pub local_agent: PathBuf,
    pub desktop: DesktopSettings,
    /// `PATH` for commands run as the user.
    pub path: String,
    /// Slurm client environment passed to commands run as the user (e.g. `SLURM_CONF`).
    pub env: Vec<(String, String)>,
    /// Which accounts may run desktops.
    pub policy: crate::policy::Policy,
}

/// What the slurm launcher stores per session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    job: u64,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
}

#[derive(Debug)]
pub struct SlurmLauncher {
    cfg: SlurmConfig,
    /// hpcdesk's jobs seen without a running session, and when first seen: reconcile
    /// cancels those whose session ended only after a grace period, measured from here.
    unowned_since: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
}

/// The name of the job of the session with `marker`: how the job is found again after a
/// crash between `sbatch` and recording its id.
fn job_name(marker: &str) -> String {
    format!("hpcdesk-{marker}")
}

/// A job's state as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobState {
    state: String,
    reason: String,
    nodes: String,
    /// `EndTime` (the start plus the time limit, once it runs).
    end: Option<chrono::DateTime<chrono::Utc>>,
}

/// How a job that left the queue ended.
enum JobEnd {
    /// Completed or cancelled (→ stopped).
    Orderly(String),
    /// Killed at its time limit (→ stopped, "time limit reached").
    TimeLimit(String),
    /// Anything else (→ failed).
    Failed(String),
}

/// The reason of a session whose job reached its time limit.
fn timed_out(job: u64) -> String {
    format!("time limit reached (Slurm job {job}: TIMEOUT)")
}

fn slurm_err(program: &str, e: ProcessError) -> LaunchError {
    match e {
        ProcessError::Failed { stderr_tail, .. } => {
            LaunchError::Scheduler(format!("{program}: {}", last_line(&stderr_tail)))
        }
        other => LaunchError::Scheduler(other.to_string()),
    }
}

fn handle_of(t: &Target) -> Result<Handle, LaunchError> {
    serde_json::from_str(&t.handle)
        .map_err(|_| LaunchError::Desktop("the session has no Slurm job recorded".into()))
}

impl SlurmLauncher {
    pub fn new(cfg: SlurmConfig) -> Self {
        SlurmLauncher {
            cfg,
            unowned_since: Default::default(),
        }
    }

    /// hpcdesk's jobs in the queue (any user's): (job, user, marker).
    async fn hpcdesk_jobs(&self) -> Result<Vec<(u64, ComputeUser, String)>, LaunchError> {
        let out = Cmd::new(&self.cfg.options.squeue)
            .args(["-h", "-o", "%i|%u|%j"])
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .map_err(|e| slurm_err("squeue", e))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|').map(str::trim);
                let job = f.next()?.parse().ok()?;
                let user = ComputeUser::parse(f.next()?).ok()?;
                let marker = f.next()?.strip_prefix("hpcdesk-")?;
                crate::agent::valid_marker(marker).then(|| (job, user, marker.to_owned()))
            })
            .collect())
    }

    fn user_cmd(&self, program: &str, user: &str) -> Result<Cmd, LaunchError> {
        let account = account_for(user, &self.cfg.options.id_prefix)?;
        let mut cmd = as_user(std::path::Path::new(program), &account, &self.cfg.path);
        for (k, v) in &self.cfg.env {
            cmd = cmd.env(k, v);
        }
        Ok(cmd)
    }

    fn local_agent(&self, user: &str) -> Result<Cmd, LaunchError> {
        let agent = self.cfg.local_agent.display().to_string();
        self.user_cmd(&agent, user)
    }

    /// The batch script: the agent, `exec`ed so Slurm's signals reach it.
    /// The job directory is keyed by the session's marker.
    fn script(&self, req: &StartRequest) -> String {
        let job = NodeCommand::Job {
            key: req.marker.clone(),
            desktop: DesktopOpts::new(None, &self.cfg.desktop, req, &self.cfg.options.listen),
        };
        let mut argv = Vec::new();
        if let Some(call) = &req.ready {
            argv.push("env".to_owned());
            argv.extend(call.env_args());
        }
        argv.push(self.cfg.options.agent.clone());
        argv.extend(job.to_args());
        format!("#!/bin/sh\nexec {}\n", shell_words::join(argv))
    }

    /// States of jobs (`None` for those Slurm no longer lists).
    async fn states(&self, jobs: &[u64]) -> Result<Vec<Option<JobState>>, LaunchError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let list = jobs
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let out = Cmd::new(&self.cfg.options.squeue)
            .args(["-h", "-j", &list, "-o", "%i|%T|%r|%N|%e"])
            .timeout(Duration::from_secs(20))
            .output()
            .await;
        let text = match out {
            Ok(t) => t,
            // squeue refuses a list whose jobs all left the queue.
            Err(ProcessError::Failed { stderr_tail, .. })
                if stderr_tail.contains("Invalid job id") =>
            {
                String::new()
            }
            Err(e) => return Err(slurm_err("squeue", e)),
        };
        let mut found = std::collections::HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('|').collect();
            if let [id, state, reason, nodes, end] = f.as_slice()
                && let Ok(id) = id.trim().parse::<u64>()
            {
                found.insert(
                    id,
                    JobState {
                        state: state.trim().to_owned(),
                        reason: reason.trim().to_owned(),
                        nodes: nodes.trim().to_owned(),
                        end: crate::slurm_time::parse_end(end),
                    },
                );
            }
        }
        Ok(jobs.iter().map(|j| found.remove(j)).collect())
    }

    /// How a job that left the queue ended, with the reason to show.
    async fn ending(&self, job: u64) -> JobEnd {
        let out = Cmd::new(&self.cfg.options.scontrol)
            .args(["show", "job", "-o", &job.to_string()])
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .unwrap_or_default();
        let field = |name: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_owned()
        };
        let state = field("JobState");
        let reason = field("Reason");
        if state == "TIMEOUT" {
            return JobEnd::TimeLimit(timed_out(job));
        }
        let text = match (state.as_str(), reason.as_str()) {
            ("", _) => format!("Slurm job {job} ended"),
            (s, "None" | "") => format!("Slurm job {job} ended: {s}"),
            (s, r) => format!("Slurm job {job} ended: {s} ({r})"),
        };
        match state.as_str() {
            "" | "COMPLETED" | "CANCELLED" => JobEnd::Orderly(text),
            _ => JobEnd::Failed(text),
        }
    }

    /// The session id of a job: `{id_prefix}--{user}--SIG--{job mod 10000}`.
    fn session_id(&self, user: &ComputeUser, job: u64) -> SessionId {
        let n = DisplayNumber::new((job % u64::from(DisplayNumber::MAX + 1)) as u32)
            .expect("in range by construction");
        SessionId::new(self.cfg.options.id_prefix.clone(), user.clone(), n)
    }

    /// Where the gateway reaches the desktop of a job running on `nodes` (Slurm's word): the
    /// node's address as Slurm knows it (or loopback with `listen = "localhost"`), never what
    /// the job, which runs as the user, reports.
    async fn address(&self, node: &NodeName) -> Result<String, LaunchError> {
        if self.cfg.options.listen == "localhost" {
            return Ok("127.0.0.1".into());
        }
        let out = Cmd::new(&self.cfg.options.scontrol)
            .args(["show", "node", "-o", node.as_str()])
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .map_err(|e| slurm_err("scontrol show node", e))?;
        let addr = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("NodeAddr="))
            .filter(|a| !a.is_empty() && !a.starts_with('-'))
            .unwrap_or(node.as_str());
        Ok(addr.to_owned())
    }

    async fn launched(
        &self,
        h: &Handle,
        d: crate::agent::StartedDesktop,
        nodes: &str,
    ) -> Result<Launched, LaunchError> {
        // One node per desktop job: Slurm lists it by name.
        let node = NodeName::parse(nodes.split(',').next().unwrap_or("").trim())
            .map_err(|e| LaunchError::Scheduler(format!("Slurm reported node {nodes:?}: {e}")))?;
        let host = self.address(&node).await?;
        let mut l = remote::launched(d, &node, &host)?;
        let started: remote::Handle = serde_json::from_str(&l.handle).expect("own handle");
        l.handle = serde_json::to_string(&Handle {
            job: h.job,
            key: h.key.clone(),
            pid: Some(started.pid),
            marker: Some(started.marker),
        })
        .expect("handle serialises");
        Ok(l)
    }
}

#[async_trait]
impl Launcher for SlurmLauncher {
    fn admit(&self, user: &ComputeUser) -> Result<(), LaunchError> {
        Ok(self.cfg.policy.check(user)?)
    }

    fn kind(&self) -> &'static str {
        "slurm"
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %req.compute_user))]
    async fn start(&self, req: StartRequest) -> Result<Launch, LaunchError> {
        if let Some(d) = crate::agent::test_pause_at("launch") {
            tokio::time::sleep(d).await;
        }
        let user = req.compute_user.as_str();
        // The job directory and the job's name carry the session's marker, stored before
        // this call: a crash before the job id is recorded loses nothing.
        let key = req.marker.clone();
        let pw = req.stdin();
        let prepared: Prepared = agent_reply(
            self.local_agent(user)?
                .args(NodeCommand::JobPrepare { key: key.clone() }.to_args())
                .stdin(pw)
                .timeout(Duration::from_secs(20))
                .output()
                .await,
            &self.cfg.options.id_prefix,
        )?;
        let mut sbatch = self
            .user_cmd(&self.cfg.options.sbatch, user)?
            .args(["--parsable", "--job-name", &job_name(&key)])
            .arg("--output")
            .arg(format!("{}/slurm-%j.out", prepared.dir))
            .args(["--time", &self.cfg.options.time_limit])
            .arg("--cpus-per-task")
            .arg(self.cfg.options.cpus.to_string());
        if let Some(p) = &self.cfg.options.partition {
            sbatch = sbatch.args(["--partition", p]);
        }
        if let Some(a) = &self.cfg.options.account {
            sbatch = sbatch.args(["--account", a]);
        }
        if let Some(m) = &self.cfg.options.memory {
            sbatch = sbatch.args(["--mem", m]);
        }
        let script = self.script(&req);
        let out = sbatch
            .args(&self.cfg.options.extra_args)
            .stdin(script.into_bytes())
            .timeout(Duration::from_secs(60))
            .output()
            .await
            .map_err(|e| slurm_err("sbatch refused the job", e))?;
        let job: u64 = out
            .trim()
            .split(';')
            .next()
            .and_then(|j| j.parse().ok())
            .ok_or_else(|| LaunchError::Scheduler(format!("sbatch said {:?}", out.trim())))?;
        tracing::info!(user, job, "desktop submitted to Slurm");
        if let Some(d) = crate::agent::test_pause_at("submitted") {
            tokio::time::sleep(d).await;
        }
        Ok(Launch::Queued(Queued {
            session_id: self.session_id(&req.compute_user, job),
            handle: serde_json::to_string(&Handle {
                job,
                key,
                pid: None,
                marker: None,
            })
            .expect("handle serialises"),
            reason: format!("submitted as Slurm job {job}"),
        }))
    }

    async fn progress(&self, target: &Target) -> Result<Progress, LaunchError> {
        let h = handle_of(target)?;
        let state = self.states(&[h.job]).await?.pop().flatten();
        let Some(state) = state else {
            return Ok(match self.ending(h.job).await {
                JobEnd::Orderly(why) | JobEnd::TimeLimit(why) => Progress::Ended(why),
                JobEnd::Failed(why) => Progress::Failed(self.with_log(target, &h, why).await),
            });
        };
        match state.state.as_str() {
            "PENDING" | "REQUEUED" | "SUSPENDED" | "RESV_DEL_HOLD" | "REQUEUE_HOLD" => Ok(
                Progress::Pending(format!("queued in Slurm (job {}): {}", h.job, state.reason)),
            ),
            "CONFIGURING" | "RUNNING" => {
                let report: JobReport = agent_reply(
                    self.local_agent(target.compute_user.as_str())?
                        .args(NodeCommand::JobReport { key: h.key.clone() }.to_args())
                        .timeout(Duration::from_secs(20))
                        .output()
                        .await,
                    &self.cfg.options.id_prefix,
                )?;
                match report.desktop {
                    Some(d) => {
                        let mut l = self.launched(&h, d, &state.nodes).await?;
                        l.ends_at = state.end;
                        Ok(Progress::Ready(l))
                    }
                    None => Ok(Progress::Starting(format!(
                        "Slurm job {} runs on {}; the desktop is starting",
                        h.job, state.nodes
                    ))),
                }
            }
            "TIMEOUT" => Ok(Progress::Ended(timed_out(h.job))),
            "COMPLETING" | "COMPLETED" | "CANCELLED" => Ok(Progress::Ended(format!(
                "Slurm job {} ended: {}",
                h.job, state.state
            ))),
            other => Ok(Progress::Failed(
                self.with_log(
                    target,
                    &h,
                    format!("Slurm job {} {other}: {}", h.job, state.reason),
                )
                .await,
            )),
        }
    }

    async fn stop(&self, target: &Target) -> Result<(), LaunchError> {
        let h = handle_of(target)?;
        let out = Cmd::new(&self.cfg.options.scancel)
            .arg(h.job.to_string())
            .timeout(Duration::from_secs(20))
            .output()
            .await;
        match out {
            Ok(_) => {}
            Err(ProcessError::Failed { stderr_tail, .. })
                if stderr_tail.contains("Invalid job id")
                    || stderr_tail.contains("already completing or completed") => {}
            Err(e) => return Err(slurm_err("scancel", e)),
        }
        // Wait for the job (and with it the desktop) to leave the queue.
        for _ in 0..100 {
            match self.states(&[h.job]).await?.pop().flatten() {
                None => break,
                Some(s) if s.state == "CANCELLED" || s.state == "COMPLETED" => break,
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let _ = self
            .local_agent(target.compute_user.as_str())?
            .args(NodeCommand::JobClean { key: h.key.clone() }.to_args())
            .timeout(Duration::from_secs(20))
            .output()
            .await;
        Ok(())
    }

    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError> {
        let handles: Vec<Option<Handle>> = targets.iter().map(|t| handle_of(t).ok()).collect();
        let jobs: Vec<u64> = handles.iter().flatten().map(|h| h.job).collect();
        let mut found = self.states(&jobs).await?;
        // A cancelled job shows only COMPLETING until its processes are gone; give it a few
        // seconds, so the reason can say how it ended (CANCELLED, TIMEOUT…).
        for _ in 0..15 {
            if !found
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s.state == "COMPLETING"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            found = self.states(&jobs).await?;
        }
        let mut states = found.into_iter();
        let mut out = Vec::with_capacity(targets.len());
        for h in &handles {
            let Some(h) = h else {
                out.push(Liveness::Gone(
                    "the session has no Slurm job recorded".into(),
                ));
                continue;
            };
            out.push(match states.next().flatten() {
                Some(s) if s.state == "RUNNING" || s.state == "CONFIGURING" => Liveness::Alive,
                Some(s) if s.state == "COMPLETING" => {
                    Liveness::Ended(format!("Slurm job {} is ending", h.job))
                }
                Some(s) if s.state == "TIMEOUT" => Liveness::TimeLimit(timed_out(h.job)),
                Some(s) if matches!(s.state.as_str(), "COMPLETED" | "CANCELLED") => {
                    Liveness::Ended(format!("Slurm job {} ended: {}", h.job, s.state))
                }
                Some(s) => {
                    Liveness::Gone(format!("Slurm job {} is {}: {}", h.job, s.state, s.reason))
                }
                None => match self.ending(h.job).await {
                    JobEnd::TimeLimit(why) => Liveness::TimeLimit(why),
                    JobEnd::Orderly(why) => Liveness::Ended(why),
                    JobEnd::Failed(why) => Liveness::Gone(why),
                },
            });
        }
        // hpcdesk's jobs that no running session has: the server decides which are orphans
        // (a queued session owns its job too) from their markers.
        let owned: Vec<u64> = handles.iter().flatten().map(|h| h.job).collect();
        let queue = self.hpcdesk_jobs().await?;
        let mut since = self.unowned_since.lock().unwrap_or_else(|p| p.into_inner());
        since.retain(|job, _| queue.iter().any(|(j, _, _)| j == job) && !owned.contains(job));
        let orphans = queue
            .into_iter()
            .filter(|(job, _, _)| !owned.contains(job))
            .map(|(job, user, marker)| {
                let first = *since.entry(job).or_insert_with(std::time::Instant::now);
                Orphan {
                    node: self.cfg.options.id_prefix.clone(),
                    user,
                    display: 0,
                    pid: 0,
                    marker: Some(marker),
                    job: Some((job, first.elapsed())),
                }
            })
            .collect();
        Ok(Survey {
            targets: out,
            orphans,
        })
    }

    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError> {
        let Some((job, _)) = orphan.job else {
            return Ok(());
        };
        // Only that user's job: `--user` makes scancel refuse a job id of anyone else.
        let out = Cmd::new(&self.cfg.options.scancel)
            .arg(format!("--user={}", orphan.user))
            .arg(job.to_string())
            .timeout(Duration::from_secs(20))
            .output()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(ProcessError::Failed { stderr_tail, .. })
                if stderr_tail.contains("Invalid job id")
                    || stderr_tail.contains("already completing or completed") =>
            {
                Ok(())
            }
            Err(e) => Err(slurm_err("scancel", e)),
        }
    }

    async fn recover(&self, start: &Target) -> Result<Recovery, LaunchError> {
        let user = start.compute_user.as_str();
        if start.marker.is_empty() {
            return Ok(Recovery::Gone(
                "the desktop start was interrupted before its job was submitted".into(),
            ));
        }
        let jobs = self.hpcdesk_jobs().await?;
        let job = jobs
            .iter()
            .find(|(_, u, m)| u.as_str() == user && *m == start.marker)
            .map(|(j, _, _)| *j);
        let Some(job) = job else {
            let _ = self
                .local_agent(user)?
                .args(
                    NodeCommand::JobClean {
                        key: start.marker.clone(),
                    }
                    .to_args(),
                )
                .timeout(Duration::from_secs(20))
                .output()
                .await;
            return Ok(Recovery::Gone(
                "the desktop start was interrupted before its job was submitted".into(),
            ));
        };
        Ok(Recovery::Queued(Queued {
            session_id: self.session_id(&start.compute_user, job),
            handle: serde_json::to_string(&Handle {
                job,
                key: start.marker.clone(),
                pid: None,
                marker: None,
            })
            .expect("handle serialises"),
            reason: format!("submitted as Slurm job {job}"),
        }))
    }

    async fn nodes(&self, _user: &ComputeUser) -> Vec<NodeReport> {
        let out = Cmd::new(&self.cfg.options.sinfo)
            .args(["-h", "-N", "-o", "%N|%T|%c|%O|%m|%e"])
            .timeout(Duration::from_secs(20))
            .output()
            .await;
        match out {
            Err(e) => vec![NodeReport {
                name: "slurm".into(),
                address: String::new(),
                probe: Err(slurm_err("sinfo", e).to_string()),
                accepting: Err("sinfo failed".into()),
            }],
            Ok(text) => text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('|').map(str::trim).collect();
                    let [name, state, cpus, load, mem, free] = f.as_slice() else {
                        return None;
                    };
                    let probe = Probe {
                        node: (*name).to_owned(),
                        cores: cpus.parse().unwrap_or(0),
                        load1: load.parse().unwrap_or(0.0),
                        mem_total_kib: mem.parse::<u64>().unwrap_or(0) * 1024,
                        mem_available_kib: free.parse::<u64>().unwrap_or(0) * 1024,
                        desktops: 0,
                    };
                    let usable = matches!(*state, "idle" | "mixed" | "allocated" | "completing");
                    Some(NodeReport {
                        name: (*name).to_owned(),
                        address: String::new(),
                        probe: Ok(probe),
                        accepting: if usable {
                            Ok(())
                        } else {
                            Err(format!("Slurm state {state}"))
                        },
                    })
                })
                .collect(),
        }
    }

    /// `scontrol update JobId=… TimeLimit=…` as hpcdesk's own account, once the job is seen
    /// to be the session's user's, within `max_time_limit` and the partition's MaxTime.
    async fn extend(
        &self,
        target: &Target,
        by: Duration,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, LaunchError> {
        use crate::slurm_time::{format_duration, minutes_up, parse_duration};
        let h = handle_of(target)?;
        let job = h.job.to_string();
        let (user, limit, partition, state) = self.job_limits(&job).await?;
        if user != target.compute_user.as_str() {
            return Err(LaunchError::Refused(format!(
                "Slurm job {job} is not {}'s",
                target.compute_user
            )));
        }
        if !matches!(state.as_str(), "RUNNING" | "PENDING" | "CONFIGURING") {
            return Err(LaunchError::Desktop(format!(
                "Slurm job {job} is {state}; only a queued or running desktop can be extended"
            )));
        }
        let current = parse_duration(&limit)
            .map_err(|e| LaunchError::Scheduler(format!("squeue: {e}")))?
            .ok_or_else(|| LaunchError::OverLimit(format!("Slurm job {job} has no time limit")))?;
        // Slurm counts in whole minutes.
        let wanted = Duration::from_secs(minutes_up(current + by) * 60);
        let mut most = (
            self.cfg.options.max_time_limit.0,
            "launcher.slurm.max_time_limit".to_owned(),
        );
        if let Some(p) = self.partition_max(&partition).await?
            && p < most.0
        {
            most = (p, format!("the MaxTime of partition {partition}"));
        }
        if wanted > most.0 {
            let left = most.0.saturating_sub(current);
            return Err(LaunchError::OverLimit(format!(
                "a desktop may have at most {} in all ({}); this one has {}, so it can be \
                 extended by at most {}",
                format_duration(most.0),
                most.1,
                format_duration(current),
                format_duration(left)
            )));
        }
        Cmd::new(&self.cfg.options.scontrol)
            .args(["update", &format!("JobId={job}")])
            .arg(format!("TimeLimit={}", minutes_up(wanted)))
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .map_err(|e| slurm_err("scontrol", e))?;
        let state = self.states(&[h.job]).await?.pop().flatten();
        match state.and_then(|s| s.end) {
            Some(end) => Ok(Some(end)),
            None => Err(LaunchError::Scheduler(format!(
                "Slurm job {job} was extended, but squeue gives no end time for it"
            ))),
        }
    }
}

impl SlurmLauncher {
    /// A job's user, time limit, partition and state (`squeue`).
    async fn job_limits(&self, job: &str) -> Result<(String, String, String, String), LaunchError> {
        let out = Cmd::new(&self.cfg.options.squeue)
            .args(["-h", "-j", job, "-o", "%u|%l|%P|%T"])
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .map_err(|e| slurm_err("squeue", e))?;
        let line = out.lines().next().unwrap_or("");
        match line
            .split('|')
            .map(str::trim)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [user, limit, partition, state] => Ok((
                (*user).to_owned(),
                (*limit).to_owned(),
                (*partition).to_owned(),
                (*state).to_owned(),
            )),
            _ => Err(LaunchError::Desktop(format!(
                "Slurm no longer lists job {job}"
            ))),
        }
    }

    /// The MaxTime of `partition` (`None`: unlimited).
    async fn partition_max(&self, partition: &str) -> Result<Option<Duration>, LaunchError> {
        let out = Cmd::new(&self.cfg.options.scontrol)
            .args(["show", "partition", partition, "-o"])
            .timeout(Duration::from_secs(20))
            .output()
            .await
            .map_err(|e| slurm_err("scontrol", e))?;
        let max = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("MaxTime="))
            .unwrap_or("UNLIMITED");
        crate::slurm_time::parse_duration(max)
            .map_err(|e| LaunchError::Scheduler(format!("scontrol show partition: {e}")))
    }

    /// Adds the tail of the job's output to a failure reason.
    async fn with_log(&self, target: &Target, h: &Handle, why: String) -> String {
        let report: Option<JobReport> = match self.local_agent(target.compute_user.as_str()) {
            Ok(cmd) => agent_reply(
                cmd.args(NodeCommand::JobReport { key: h.key.clone() }.to_args())
                    .timeout(Duration::from_secs(20))
                    .output()
                    .await,
                &self.cfg.options.id_prefix,
            )
            .ok(),
            Err(_) => None,
        };
        match report
            .map(|r| last_line(&r.log_tail))
            .filter(|l| !l.is_empty())
        {
            Some(line) => format!("{why}; job output: {line}"),
            None => why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_script_execs_the_agent_with_quoted_words() {
        let l = SlurmLauncher::new(SlurmConfig {
            options: SlurmOptions {
                agent: "/opt/hpc desk/hpcdesk".into(),
                ..SlurmOptions::default()
            },
            local_agent: "/usr/local/bin/hpcdesk".into(),
            desktop: DesktopSettings {
                xvnc: "Xvnc".into(),
                depth: 24,
                display_min: 1,
                display_max: 99,
                start_timeout: Duration::from_secs(30),
                tls: true,
            },
            path: "/usr/bin:/bin".into(),
            env: Vec::new(),
            policy: Default::default(),
        });
        let s = l.script(&crate::test_request(
            "1024x768",
            &["xterm -e 'top; bash'"],
            "abc12345",
        ));
        assert!(
            s.starts_with(
                "#!/bin/sh\nexec '/opt/hpc desk/hpcdesk' node job --key abc12345 --marker abc12345 "
            ),
            "{s}"
        );
        assert!(s.contains("--listen hostname"), "{s}");
        assert!(
            s.contains("--desktop 'xterm -e '\\''top; bash'\\'''"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 2);

        // With a readiness call: in the agent's environment, not its command line.
        let mut req = crate::test_request("1024x768", &[], "abc12345");
        req.ready = Some(crate::agent::job::ReadyCall {
            url: "http://login1:8080/hpcdesk/v1/jobs/ready".into(),
            token: "0123abcd".into(),
        });
        let s = l.script(&req);
        assert!(
            s.starts_with(
                "#!/bin/sh\nexec env 'HPCDESK_READY_URL=http://login1:8080/hpcdesk/v1/jobs/ready' \
                 'HPCDESK_READY_TOKEN=0123abcd' '/opt/hpc desk/hpcdesk' node job --key abc12345 "
            ),
            "{s}"
        );
        assert!(
            !format!("{req:?}").contains("0123abcd"),
            "the token is never printed"
        );
    }
}
