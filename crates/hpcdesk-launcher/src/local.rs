//! The `local` launcher: desktops on the machine hpcdesk runs on.
//!
//! It runs the node agent (`hpcdesk node …`, normally this very binary) as the desktop's
//! user: when hpcdesk runs as root it switches to that account; otherwise it only serves
//! its own account. The agent detaches the desktop, so desktops outlive hpcdesk.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName};
use nix::unistd::Uid;

use crate::agent::{Listing, Probe, StartedDesktop};
use crate::process::{Account, Cmd, ProcessError};
use crate::remote::{self, DesktopSettings, Found, agent_reply};
use crate::{
    Launch, LaunchError, Launcher, NodeReport, Orphan, Recovery, StartRequest, Survey, Target,
};

/// Settings of the local launcher.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `hpcdesk` binary that serves as node agent; must be executable by every user.
    pub agent: PathBuf,
    /// This machine's name in session ids.
    pub node: NodeName,
    pub desktop: DesktopSettings,
    /// `PATH` given to the agent and the desktop.
    pub path: String,
    /// Which accounts may run desktops.
    pub policy: crate::policy::Policy,
}

#[derive(Debug)]
pub struct LocalLauncher {
    cfg: LocalConfig,
}

/// The account to run a user's agent as, or why that is not possible: root switches to any
/// non-root account; anyone else only serves itself.
pub fn account_for(user: &str, node: &NodeName) -> Result<Account, LaunchError> {
    let account = Account::lookup(user).map_err(|e| match e {
        ProcessError::NoSuchUser(_) => {
            LaunchError::Desktop(format!("there is no account {user:?} on {node}"))
        }
        other => LaunchError::Desktop(other.to_string()),
    })?;
    if account.uid.is_root() {
        return Err(LaunchError::Desktop(
            "desktops are never started as root".to_owned(),
        ));
    }
    if !Uid::effective().is_root() && account.uid != Uid::effective() {
        let me = Account::current()
            .map(|a| a.name)
            .unwrap_or_else(|_| Uid::effective().to_string());
        return Err(LaunchError::Desktop(format!(
            "hpcdesk runs as {me:?} and can only start desktops for that account, not \
             {user:?}; run it as root to serve other accounts"
        )));
    }
    Ok(account)
}

/// A command run as `account` with a clean environment for it.
pub fn as_user(program: &std::path::Path, account: &Account, path: &str) -> Cmd {
    let cmd = Cmd::new(program)
        .env_clear()
        .env("PATH", path)
        .env(
            "LANG",
            std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        )
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", &account.shell)
        .current_dir(&account.home)
        .run_as(account.clone());
    match std::env::var_os(crate::agent::TEST_PAUSE_VAR) {
        Some(v) => cmd.env(crate::agent::TEST_PAUSE_VAR, v),
        None => cmd,
    }
}

impl LocalLauncher {
    pub fn new(cfg: LocalConfig) -> Self {
        LocalLauncher { cfg }
    }

    fn agent_as(&self, user: &str) -> Result<Cmd, LaunchError> {
        let account = account_for(user, &self.cfg.node)?;
        Ok(as_user(&self.cfg.agent, &account, &self.cfg.path))
    }

    /// The agent as hpcdesk's own account (listing and probing need no switch).
    fn agent_here(&self) -> Cmd {
        Cmd::new(&self.cfg.agent)
            .env_clear()
            .env("PATH", &self.cfg.path)
    }

    /// The agent's listing of this machine (as hpcdesk's own account, which sees everyone's
    /// desktops when it is root).
    async fn listing(&self) -> Result<Listing, LaunchError> {
        let cmd = self
            .agent_here()
            .args(remote::list_args(&self.cfg.node))
            .timeout(Duration::from_secs(20));
        agent_reply(cmd.output().await, &self.cfg.node)
    }
}

#[async_trait]
impl Launcher for LocalLauncher {
    fn admit(&self, user: &ComputeUser) -> Result<(), LaunchError> {
        Ok(self.cfg.policy.check(user)?)
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %req.compute_user))]
    async fn start(&self, req: StartRequest) -> Result<Launch, LaunchError> {
        if let Some(d) = crate::agent::test_pause_at("launch") {
            tokio::time::sleep(d).await;
        }
        let stdin = req.stdin();
        let cmd = self
            .agent_as(req.compute_user.as_str())?
            .args(remote::start_args(
                &self.cfg.node,
                &self.cfg.desktop,
                &req,
                "localhost",
            ))
            .stdin(stdin)
            .timeout(self.cfg.desktop.start_timeout + Duration::from_secs(10));
        let started: StartedDesktop = agent_reply(cmd.output().await, &self.cfg.node)?;
        Ok(Launch::Ready(remote::launched(
            started,
            &self.cfg.node,
            "127.0.0.1",
        )?))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %target.compute_user))]
    async fn stop(&self, target: &Target) -> Result<(), LaunchError> {
        let (node, display) = target.place()?;
        let cmd = self
            .agent_as(target.compute_user.as_str())?
            .args(remote::stop_args(node, display, Some(&target.marker)))
            .timeout(Duration::from_secs(20));
        let _: crate::agent::Stopped = agent_reply(cmd.output().await, &self.cfg.node)?;
        Ok(())
    }

    fn home_node(&self) -> Option<NodeName> {
        Some(self.cfg.node.clone())
    }

    async fn notify(&self, target: &Target, message: &str) {
        let Ok((node, display)) = target.place() else {
            return;
        };
        let Ok(cmd) = self.agent_as(target.compute_user.as_str()) else {
            return;
        };
        let args = crate::agent::cli::NodeCommand::notify(node, display, message).to_args();
        let _ = cmd
            .args(args)
            .timeout(Duration::from_secs(10))
            .output()
            .await;
    }

    /// This machine's desktops only (and starts with no node recorded, from before nodes
    /// were recorded at creation).
    fn watches(&self, target: &Target) -> bool {
        target.node.as_ref().is_none_or(|n| n == &self.cfg.node)
    }

    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError> {
        let live = self.listing().await?;
        Ok(remote::match_survey(
            &self.cfg.node,
            targets,
            &live.desktops,
        ))
    }

    async fn recover(&self, start: &Target) -> Result<Recovery, LaunchError> {
        let listing = self.listing().await?;
        match remote::find_start(start, &self.cfg.node, "127.0.0.1", &listing) {
            Found::Ready(l) => Ok(Recovery::Ready(l)),
            Found::InProgress => Ok(Recovery::InProgress),
            Found::Nothing => Ok(Recovery::Gone(
                "the desktop start was interrupted before its desktop ran".into(),
            )),
            Found::Partial(display) => {
                let mut t = start.clone();
                t.node = Some(self.cfg.node.clone());
                t.display = Some(display);
                self.stop(&t).await?;
                Ok(Recovery::Gone(format!(
                    "the desktop start was interrupted half-way; what had started on display \
                     :{display} was stopped"
                )))
            }
        }
    }

    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError> {
        let target = Target {
            key: String::new(),
            compute_user: orphan.user.clone(),
            node: Some(orphan.node.clone()),
            display: Some(
                DisplayNumber::new(orphan.display)
                    .map_err(|e| LaunchError::Desktop(e.to_string()))?,
            ),
            host: None,
            port: None,
            handle: String::new(),
            marker: orphan.marker.clone().unwrap_or_default(),
        };
        self.stop(&target).await
    }

    async fn nodes(&self, _user: &ComputeUser) -> Vec<NodeReport> {
        let cmd = self
            .agent_here()
            .args(remote::probe_args(&self.cfg.node))
            .timeout(Duration::from_secs(20));
        let probe: Result<Probe, String> =
            agent_reply(cmd.output().await, &self.cfg.node).map_err(|e| e.to_string());
        vec![NodeReport {
            name: self.cfg.node.to_string(),
            address: "127.0.0.1".into(),
            accepting: probe.as_ref().map(|_| ()).map_err(Clone::clone),
            probe,
        }]
    }
}
