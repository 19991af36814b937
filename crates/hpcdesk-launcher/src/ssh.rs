//! The `ssh` launcher: desktops on a pool of "VNC nodes" reached with OpenSSH.
//!
//! - **Login**: `ssh` as the desktop's user (BatchMode, strict host keys, bounded timeouts,
//!   one ControlMaster per node and user, reused for `launcher.ssh.control_persist`). Sites
//!   make hpcdesk's key work for every user (an `AuthorizedKeysFile` it is listed in,
//!   host-based authentication or certificates); the site's ssh_config is honoured.
//! - **The remote command** is the node agent's argv joined with POSIX shell quoting, because
//!   ssh hands commands to the user's login shell; every word comes from the configuration
//!   or from validated ids, never from a client. Secrets go on stdin.
//! - **Placement**: a service account (`launcher.ssh.probe_user`) probes every node in the
//!   background every `probe_every` ([`Launcher::maintain`]): reachable, load per core, free
//!   memory, desktops. A create never waits on probes and no user's shell start-up files
//!   ever feed them (a user could otherwise make every node look full, or empty, for
//!   everyone). Nodes under their limits are ranked by load plus a share per desktop and the
//!   start is tried on each in turn; a start counts one more desktop on its node until the
//!   next probe. None left → 815201 naming every node and why.
//! - Xvnc listens on the node's configured address (`-interface`), where the gateway connects:
//!   never an address the (user-run) agent reports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, HumanDuration, NodeName};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::agent::{Listing, Probe, StartedDesktop, Stopped};
use crate::process::{Cmd, ProcessError, last_line};
use crate::remote::{self, DesktopSettings, Found, agent_reply};
use crate::{
    Launch, LaunchError, Launcher, Liveness, NodeReport, Orphan, Recovery, StartRequest, Survey,
    Target,
};

/// One VNC node of the pool: a `[[launcher.nodes]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's name in session ids.
    pub name: NodeName,
    /// Where ssh connects, and where Xvnc listens for the gateway.
    pub address: String,
    #[serde(default = "NodeSpec::default_ssh_port")]
    pub ssh_port: u16,
    #[serde(default = "NodeSpec::default_max_sessions")]
    pub max_sessions: u32,
    #[serde(default = "NodeSpec::default_max_load")]
    pub max_load_per_core: f64,
    #[serde(default = "NodeSpec::default_min_free")]
    pub min_free_mem_mib: u64,
}

impl NodeSpec {
    fn default_ssh_port() -> u16 {
        22
    }
    fn default_max_sessions() -> u32 {
        20
    }
    fn default_max_load() -> f64 {
        2.0
    }
    fn default_min_free() -> u64 {
        512
    }
}

/// The `[launcher.ssh]` section of the configuration, as the launcher uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshOptions {
    /// Path of the `hpcdesk` binary on the nodes.
    pub agent: String,
    /// The OpenSSH client.
    pub ssh: String,
    /// Private key hpcdesk logs in with (as each user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    /// known_hosts file with the nodes' host keys (strict checking is always on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// An ssh_config file to use instead of the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    pub connect_timeout: HumanDuration,
    /// How long an idle ControlMaster connection is kept.
    pub control_persist: HumanDuration,
    /// How often a service account probes every node for placement (`probe_cache` is the
    /// old name of this key).
    #[serde(alias = "probe_cache")]
    pub probe_every: HumanDuration,
    /// Concurrent commands per node (sshd's MaxSessions is 10 by default).
    pub max_channels: usize,
    /// The service account that probes the nodes (required with `kind = "ssh"`): placement
    /// must not rest on what any user's shell prints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_user: Option<ComputeUser>,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            agent: "/usr/local/bin/hpcdesk".into(),
            ssh: "ssh".into(),
            identity: None,
            known_hosts: None,
            config_file: None,
            connect_timeout: HumanDuration::secs(5),
            control_persist: HumanDuration::secs(60),
            probe_every: HumanDuration::secs(10),
            max_channels: 8,
            probe_user: None,
        }
    }
}

/// Everything the `ssh` launcher runs on: its section of the configuration, the nodes, and
/// what start-up decides.
#[derive(Debug, Clone)]
pub struct SshConfig {
    pub options: SshOptions,
    pub nodes: Vec<NodeSpec>,
    /// Private directory (0700) for ControlMaster sockets.
    pub control_dir: PathBuf,
    pub desktop: DesktopSettings,
    /// Which accounts may run desktops.
    pub policy: crate::policy::Policy,
}

type Probed = (Instant, Result<Probe, String>);

pub struct SshLauncher {
    cfg: SshConfig,
    /// The account that probes the nodes (`options.probe_user`, required).
    probe_user: ComputeUser,
    /// The last probe of each node, written by `maintain` and read by every placement. A
    /// std mutex, not tokio's: it is held only to copy or replace one entry, never while
    /// a probe runs, so placement never waits on a slow node's ssh.
    probes: Mutex<HashMap<String, Probed>>,
    /// Bounds concurrent ssh channels per node: one ControlMaster serves at most sshd's
    /// MaxSessions channels, and a node should not be flooded by a burst of creates.
    channels: HashMap<String, Arc<Semaphore>>,
}

impl std::fmt::Debug for SshLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshLauncher")
            .field("nodes", &self.cfg.nodes.len())
            .finish_non_exhaustive()
    }
}

/// The message for an account whose login printed without end.
fn account_flood(node: &NodeName, e: &ProcessError) -> String {
    format!(
        "logging in to {node} as this account printed without end ({e}); check the \
         account's shell start-up files (~/.bashrc, ~/.profile)"
    )
}

/// Why one node was not used.
fn joined(reasons: &[(String, String)]) -> String {
    reasons
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a failed command failed in ssh itself (exit 255 without an agent reply).
fn ssh_failure(e: &ProcessError) -> Option<String> {
    match e {
        ProcessError::Failed {
            exit: Some(255),
            stdout,
            stderr_tail,
            ..
        } if !stdout.contains('{') => Some(last_line(stderr_tail)),
        ProcessError::Timeout { .. } | ProcessError::Spawn { .. } => Some(e.to_string()),
        _ => None,
    }
}

/// Ranks a probed node for placement: lower is better; `Err` says why it is not eligible.
pub fn assess(spec: &NodeSpec, p: &Probe) -> Result<f64, String> {
    let per_core = p.load1 / f64::from(p.cores.max(1));
    if p.desktops >= spec.max_sessions {
        return Err(format!(
            "{} desktops, the limit is {}",
            p.desktops, spec.max_sessions
        ));
    }
    if per_core > spec.max_load_per_core {
        return Err(format!(
            "load {per_core:.2} per core is over {:.2}",
            spec.max_load_per_core
        ));
    }
    let free_mib = p.mem_available_kib / 1024;
    if free_mib < spec.min_free_mem_mib {
        return Err(format!(
            "{free_mib} MiB free, {} MiB needed",
            spec.min_free_mem_mib
        ));
    }
    // A desktop weighs like a fifth of a busy core, so equal nodes take turns.
    Ok(per_core + 0.2 * f64::from(p.desktops))
}

impl SshLauncher {
    pub fn new(cfg: SshConfig) -> Result<Self, LaunchError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.control_dir)
            .map_err(|e| {
                LaunchError::Desktop(format!("cannot create {}: {e}", cfg.control_dir.display()))
            })?;
        let channels = cfg
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.to_string(),
                    Arc::new(Semaphore::new(cfg.options.max_channels.max(1))),
                )
            })
            .collect();
        let probe_user = cfg.options.probe_user.clone().ok_or_else(|| {
            LaunchError::Desktop("launcher.ssh.probe_user is required by the ssh launcher".into())
        })?;
        Ok(SshLauncher {
            cfg,
            probe_user,
            probes: Mutex::new(HashMap::new()),
            channels,
        })
    }

    fn node(&self, name: &NodeName) -> Result<&NodeSpec, LaunchError> {
        self.cfg
            .nodes
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| LaunchError::Desktop(format!("node {name} is not in launcher.nodes")))
    }

    /// `ssh … user@node -- '<agent>' <args…>`, each word shell-quoted.
    fn ssh(&self, node: &NodeSpec, user: &str, agent_args: Vec<String>) -> Cmd {
        // Test runs only: the pause inside a start reaches the agent through `env`
        // (multiplexed ssh sessions do not pass SetEnv on).
        let pause = std::env::var(crate::agent::TEST_PAUSE_VAR)
            .ok()
            .map(|v| {
                vec![
                    "env".to_owned(),
                    format!("{}={v}", crate::agent::TEST_PAUSE_VAR),
                ]
            })
            .unwrap_or_default();
        let remote = shell_words::join(
            pause
                .into_iter()
                .chain(std::iter::once(self.cfg.options.agent.clone()))
                .chain(agent_args),
        );
        let secs = self.cfg.options.connect_timeout.0.as_secs().max(1);
        let mut cmd = Cmd::new(&self.cfg.options.ssh);
        if let Some(f) = &self.cfg.options.config_file {
            cmd = cmd.arg("-F").arg(f);
        }
        if let Some(k) = &self.cfg.options.identity {
            cmd = cmd.arg("-i").arg(k).args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(k) = &self.cfg.options.known_hosts {
            cmd = cmd
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", k.display()));
        }
        cmd.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={secs}"))
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"])
            .args(["-o", "ControlMaster=auto"])
            .arg("-o")
            .arg(format!("ControlPath={}/%C", self.cfg.control_dir.display()))
            .arg("-o")
            .arg(format!(
                "ControlPersist={}",
                self.cfg.options.control_persist.0.as_secs().max(1)
            ))
            .args(["-o", "LogLevel=ERROR"])
            .arg("-p")
            .arg(node.ssh_port.to_string())
            .arg("-l")
            .arg(user)
            .arg("--")
            .arg(&node.address)
            .arg(remote)
    }

    /// Runs an agent command on `node` as `user`, within the node's channel limit.
    async fn run(
        &self,
        node: &NodeSpec,
        user: &str,
        agent_args: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<String, ProcessError> {
        let gate = self.channels.get(node.name.as_str()).cloned();
        let _permit = match &gate {
            Some(g) => g.acquire().await.ok(),
            None => None,
        };
        let mut cmd = self
            .ssh(node, user, agent_args)
            .timeout(timeout + self.cfg.options.connect_timeout.0);
        if let Some(bytes) = stdin {
            cmd = cmd.stdin(bytes);
        }
        cmd.output().await
    }

    /// Probes `node` now as the probe account and keeps the result for placement.
    async fn probe(&self, node: &NodeSpec) -> Result<Probe, String> {
        let out = self
            .run(
                node,
                self.probe_user.as_str(),
                remote::probe_args(&node.name),
                None,
                Duration::from_secs(10),
            )
            .await;
        let result = match &out {
            Err(e @ ProcessError::TooMuchOutput { .. }) => Err(account_flood(&node.name, e)),
            Err(e) if ssh_failure(e).is_some() => Err(format!(
                "ssh unreachable ({})",
                ssh_failure(e).unwrap_or_default()
            )),
            _ => agent_reply::<Probe>(out, &node.name).map_err(|e| e.to_string()),
        };
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.name.to_string(), (Instant::now(), result.clone()));
        result
    }

    /// The last probe of `node`, as placement sees it.
    fn cached_probe(&self, node: &NodeSpec) -> Result<Probe, String> {
        match self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node.name.as_str())
        {
            Some((_, p)) => p.clone(),
            None => Err("not probed yet".into()),
        }
    }

    /// Counts a desktop just started on `node` in its probe, until the next probe says.
    fn count_desktop(&self, node: &NodeSpec) {
        if let Some((_, Ok(p))) = self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(node.name.as_str())
        {
            p.desktops += 1;
        }
    }

    /// Whether the desktop's VNC port answers (from here, as the gateway would connect).
    async fn answers(host: &str, port: u16) -> bool {
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

#[async_trait]
impl Launcher for SshLauncher {
    fn admit(&self, user: &ComputeUser) -> Result<(), LaunchError> {
        Ok(self.cfg.policy.check(user)?)
    }

    fn kind(&self) -> &'static str {
        "ssh"
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %req.compute_user))]
    async fn start(&self, req: StartRequest) -> Result<Launch, LaunchError> {
        if let Some(d) = crate::agent::test_pause_at("launch") {
            tokio::time::sleep(d).await;
        }
        let user = req.compute_user.as_str();
        let mut refused: Vec<(String, String)> = Vec::new();
        let mut ranked: Vec<(f64, &NodeSpec)> = Vec::new();
        for node in &self.cfg.nodes {
            match self.cached_probe(node).and_then(|p| assess(node, &p)) {
                Ok(score) => ranked.push((score, node)),
                Err(why) => refused.push((node.name.to_string(), why)),
            }
        }
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let stdin = req.stdin();
        for (_, node) in ranked {
            let out = self
                .run(
                    node,
                    user,
                    remote::start_args(&node.name, &self.cfg.desktop, &req, &node.address),
                    Some(stdin.clone()),
                    self.cfg.desktop.start_timeout + Duration::from_secs(10),
                )
                .await;
            if let Err(e @ ProcessError::TooMuchOutput { .. }) = &out {
                return Err(LaunchError::Desktop(account_flood(&node.name, e)));
            }
            if let Err(e) = &out
                && let Some(why) = ssh_failure(e)
            {
                refused.push((node.name.to_string(), format!("ssh unreachable ({why})")));
                continue;
            }
            match agent_reply::<StartedDesktop>(out, &node.name) {
                Ok(started) => {
                    tracing::info!(node = %node.name, user, display = started.display, "desktop placed");
                    let launched = remote::launched(started, &node.name, &node.address)?;
                    self.count_desktop(node);
                    return Ok(Launch::Ready(launched));
                }
                Err(LaunchError::NoCapacity(why)) => refused.push((node.name.to_string(), why)),
                Err(other) => return Err(other),
            }
        }
        Err(LaunchError::NoCapacity(format!(
            "all VNC nodes overloaded or SSH unreachable: {}",
            joined(&refused)
        )))
    }

    async fn stop(&self, target: &Target) -> Result<(), LaunchError> {
        let (name, display) = target.place()?;
        let node = self.node(name)?;
        let out = self
            .run(
                node,
                target.compute_user.as_str(),
                remote::stop_args(name, display, Some(&target.marker)),
                None,
                Duration::from_secs(20),
            )
            .await;
        if let Err(e) = &out
            && let Some(why) = ssh_failure(e)
        {
            // A node that is gone took its desktops with it.
            let host = target.host.as_deref().unwrap_or(&node.address);
            if let Some(port) = target.port
                && !Self::answers(host, port).await
            {
                return Ok(());
            }
            return Err(LaunchError::Desktop(format!(
                "cannot reach {name} to stop the desktop: {why}"
            )));
        }
        let _: Stopped = agent_reply(out, name)?;
        Ok(())
    }

    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError> {
        // One listing per (node, user) pair, in parallel. A target with no node yet (a start
        // that ended before it was placed) is looked for on every node.
        let mut groups: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            let nodes: Vec<String> = match &t.node {
                Some(n) => vec![n.to_string()],
                None => self.cfg.nodes.iter().map(|n| n.name.to_string()).collect(),
            };
            for node in nodes {
                groups
                    .entry((node, t.compute_user.to_string()))
                    .or_default()
                    .push(i);
            }
        }
        let mut result = Survey {
            targets: vec![Liveness::Unknown("not checked".into()); targets.len()],
            orphans: Vec::new(),
        };
        let checks = groups.iter().map(|((node, user), idx)| async move {
            let Some(spec) = self.cfg.nodes.iter().find(|n| n.name.as_str() == node) else {
                return (
                    idx,
                    Err(format!("node {node} is no longer in launcher.nodes")),
                );
            };
            let out = self
                .run(
                    spec,
                    user,
                    remote::list_args(&spec.name),
                    None,
                    Duration::from_secs(20),
                )
                .await;
            if let Err(e) = &out
                && let Some(why) = ssh_failure(e)
            {
                return (idx, Err(format!("node {node} is unreachable ({why})")));
            }
            (
                idx,
                agent_reply::<Listing>(out, &spec.name)
                    .map(|live| (spec.name.clone(), live.desktops))
                    .map_err(|e| e.to_string()),
            )
        });
        for (idx, outcome) in futures_util::future::join_all(checks).await {
            match outcome {
                Ok((node, live)) => {
                    let subset: Vec<Target> = idx.iter().map(|i| targets[*i].clone()).collect();
                    let s = remote::match_survey(&node, &subset, &live);
                    for (i, l) in idx.iter().zip(s.targets) {
                        result.targets[*i] = l;
                    }
                    for o in s.orphans {
                        if !result.orphans.contains(&o) {
                            result.orphans.push(o);
                        }
                    }
                }
                Err(why) => {
                    for i in idx {
                        let t = &targets[*i];
                        let answers = match (&t.host, t.port) {
                            (Some(h), Some(p)) => Self::answers(h, p).await,
                            _ => false,
                        };
                        result.targets[*i] = if answers {
                            Liveness::Unknown(why.clone())
                        } else {
                            Liveness::Gone(format!("{why} and its VNC server does not answer"))
                        };
                    }
                }
            }
        }
        // Another user's desktops seen on a node are not orphans of this listing.
        let owned: Vec<(String, ComputeUser, u32)> = targets
            .iter()
            .filter_map(|t| {
                Some((
                    t.node.as_ref()?.to_string(),
                    t.compute_user.clone(),
                    t.display?.get(),
                ))
            })
            .collect();
        result
            .orphans
            .retain(|o| !owned.contains(&(o.node.to_string(), o.user.clone(), o.display)));
        Ok(result)
    }

    async fn notify(&self, target: &Target, message: &str) {
        let Ok((name, display)) = target.place() else {
            return;
        };
        let Ok(node) = self.node(name) else {
            return;
        };
        let args = crate::agent::cli::NodeCommand::notify(name, display, message).to_args();
        let _ = self
            .run(
                node,
                target.compute_user.as_str(),
                args,
                None,
                Duration::from_secs(10),
            )
            .await;
    }

    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError> {
        let node = self.node(&orphan.node)?;
        let display =
            DisplayNumber::new(orphan.display).map_err(|e| LaunchError::Desktop(e.to_string()))?;
        let out = self
            .run(
                node,
                orphan.user.as_str(),
                remote::stop_args(&orphan.node, display, orphan.marker.as_deref()),
                None,
                Duration::from_secs(20),
            )
            .await;
        let _: Stopped = agent_reply(out, &orphan.node)?;
        Ok(())
    }

    async fn recover(&self, start: &Target) -> Result<Recovery, LaunchError> {
        // Which node the start went to was not recorded before it ran: ask every node, as the
        // session's account, which sees only its own desktops there.
        let user = start.compute_user.as_str();
        let listings = futures_util::future::join_all(self.cfg.nodes.iter().map(|n| async move {
            let out = self
                .run(
                    n,
                    user,
                    remote::list_args(&n.name),
                    None,
                    Duration::from_secs(20),
                )
                .await;
            (n, agent_reply::<Listing>(out, &n.name))
        }))
        .await;
        let mut unreachable = Vec::new();
        for (node, listing) in &listings {
            let listing = match listing {
                Ok(l) => l,
                Err(e) => {
                    unreachable.push(format!("{}: {e}", node.name));
                    continue;
                }
            };
            match remote::find_start(start, &node.name, &node.address, listing) {
                Found::Ready(l) => return Ok(Recovery::Ready(l)),
                Found::InProgress => return Ok(Recovery::InProgress),
                Found::Partial(display) => {
                    let mut t = start.clone();
                    t.node = Some(node.name.clone());
                    t.display = Some(display);
                    self.stop(&t).await?;
                    return Ok(Recovery::Gone(format!(
                        "the desktop start was interrupted half-way; what had started on \
                         {} display :{display} was stopped",
                        node.name
                    )));
                }
                Found::Nothing => {}
            }
        }
        if !unreachable.is_empty() {
            // It may be on a node that does not answer: decide when it does.
            return Err(LaunchError::Desktop(format!(
                "cannot look for an interrupted start on every node: {}",
                unreachable.join("; ")
            )));
        }
        Ok(Recovery::Gone(
            "the desktop start was interrupted before its desktop ran".into(),
        ))
    }

    /// Probes the nodes whose probe is older than `probe_every`, all at once.
    async fn maintain(&self) {
        let due: Vec<&NodeSpec> = {
            let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            self.cfg
                .nodes
                .iter()
                .filter(|n| {
                    probes
                        .get(n.name.as_str())
                        .is_none_or(|(at, _)| at.elapsed() >= self.cfg.options.probe_every.0)
                })
                .collect()
        };
        futures_util::future::join_all(due.into_iter().map(|n| self.probe(n))).await;
    }

    /// Probes every node now (as the probe account, whoever asks).
    async fn nodes(&self, _user: &ComputeUser) -> Vec<NodeReport> {
        let probes =
            futures_util::future::join_all(self.cfg.nodes.iter().map(|n| self.probe(n))).await;
        self.cfg
            .nodes
            .iter()
            .zip(probes)
            .map(|(n, probe)| NodeReport {
                name: n.name.to_string(),
                address: n.address.clone(),
                accepting: match &probe {
                    Ok(p) => assess(n, p).map(|_| ()),
                    Err(e) => Err(e.clone()),
                },
                probe,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: NodeName::parse("n1").unwrap(),
            address: "10.0.0.2".into(),
            ssh_port: 22,
            max_sessions: 3,
            max_load_per_core: 1.5,
            min_free_mem_mib: 512,
        }
    }

    fn probe(load1: f64, desktops: u32, free_mib: u64) -> Probe {
        Probe {
            node: "n1".into(),
            cores: 4,
            load1,
            mem_total_kib: 8 << 20,
            mem_available_kib: free_mib * 1024,
            desktops,
        }
    }

    #[test]
    fn placement_prefers_idle_nodes_and_refuses_full_ones() {
        let s = spec();
        assert!(
            assess(&s, &probe(0.0, 0, 4096)).unwrap() < assess(&s, &probe(2.0, 0, 4096)).unwrap()
        );
        assert!(
            assess(&s, &probe(0.0, 0, 4096)).unwrap() < assess(&s, &probe(0.0, 1, 4096)).unwrap()
        );
        assert!(
            assess(&s, &probe(0.0, 3, 4096))
                .unwrap_err()
                .contains("limit is 3")
        );
        assert!(
            assess(&s, &probe(7.0, 0, 4096))
                .unwrap_err()
                .contains("per core")
        );
        assert!(
            assess(&s, &probe(0.0, 0, 100))
                .unwrap_err()
                .contains("MiB free")
        );
    }

    #[test]
    fn the_remote_command_is_shell_quoted() {
        let l = SshLauncher::new(SshConfig {
            options: SshOptions {
                agent: "/opt/hpc desk/hpcdesk".into(),
                probe_user: Some(ComputeUser::parse("hpcprobe").unwrap()),
                ..SshOptions::default()
            },
            control_dir: std::env::temp_dir()
                .join(format!("hpcdesk-ssh-test-{}", std::process::id())),
            nodes: vec![spec()],
            desktop: DesktopSettings {
                xvnc: "Xvnc".into(),
                depth: 24,
                display_min: 1,
                display_max: 9,
                start_timeout: Duration::from_secs(30),
                tls: true,
            },
            policy: Default::default(),
        })
        .unwrap();
        let cmd = l.ssh(
            &spec(),
            "alice",
            remote::start_args(
                &spec().name,
                &l.cfg.desktop,
                &crate::test_request("800x600", &["xterm -e 'a; b'"], "mark0001"),
                "10.0.0.2",
            ),
        );
        let dbg = format!("{cmd:?}");
        assert!(
            dbg.contains("'/opt/hpc desk/hpcdesk' node start --node n1"),
            "{dbg}"
        );
        assert!(
            dbg.contains("--desktop 'xterm -e '\\\\''a; b'\\\\'''"),
            "{dbg}"
        );
        assert!(
            dbg.contains("\"-l\", \"alice\", \"--\", \"10.0.0.2\""),
            "{dbg}"
        );
    }
}
