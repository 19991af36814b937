//! The `local` launcher: desktops on the machine hpcdesk runs on.
//!
//! It runs the node agent (`hpcdesk node …`, normally this very binary) as the desktop's
//! user: when hpcdesk runs as root it switches to that account; otherwise it only serves
//! its own account. The agent detaches the desktop, so desktops outlive hpcdesk.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hpcdesk_core::{DisplayNumber, NodeName};
use nix::unistd::Uid;
use serde::{Deserialize, Serialize};

use crate::agent::{AgentError, ErrorKind, LiveDesktop, StartedDesktop};
use crate::process::{Account, Cmd, ProcessError};
use crate::{LaunchError, Launched, Launcher, Liveness, Orphan, StartRequest, Survey, Target};

/// Settings of the local launcher.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The `hpcdesk` binary that serves as node agent; must be executable by every user.
    pub agent: PathBuf,
    /// This machine's name in session ids.
    pub node: NodeName,
    pub xvnc: String,
    pub desktop: Option<String>,
    pub depth: u8,
    pub display_min: u32,
    pub display_max: u32,
    pub start_timeout: Duration,
    /// `PATH` given to the agent and the desktop.
    pub path: String,
}

/// What the local launcher stores per session.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    pid: i32,
    marker: String,
}

#[derive(Debug)]
pub struct LocalLauncher {
    cfg: LocalConfig,
}

impl LocalLauncher {
    pub fn new(cfg: LocalConfig) -> Self {
        LocalLauncher { cfg }
    }

    /// The account to run the agent as, or why that is not possible.
    fn account_for(&self, user: &str) -> Result<Account, LaunchError> {
        let account = Account::lookup(user).map_err(|e| match e {
            ProcessError::NoSuchUser(_) => {
                LaunchError::Desktop(format!("there is no account {user:?} on {}", self.cfg.node))
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

    fn agent_cmd(&self, account: Option<&Account>) -> Cmd {
        let mut cmd = Cmd::new(&self.cfg.agent)
            .env_clear()
            .env("PATH", &self.cfg.path)
            .env(
                "LANG",
                std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
            );
        if let Some(a) = account {
            cmd = cmd
                .env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name)
                .env("SHELL", &a.shell)
                .current_dir(&a.home)
                .run_as(a.clone());
        }
        cmd.arg("node")
    }
}

/// Parses the agent's reply: its JSON on success, its JSON error otherwise. An error that
/// names a display is placed on `node`.
fn agent_reply<T: for<'de> Deserialize<'de>>(
    result: Result<String, ProcessError>,
    node: &NodeName,
) -> Result<T, LaunchError> {
    let last_json = |s: &str| {
        s.lines()
            .rev()
            .find(|l| l.trim_start().starts_with(['{', '[']))
            .map(str::to_owned)
    };
    match result {
        Ok(stdout) => {
            let line = last_json(&stdout).unwrap_or_default();
            serde_json::from_str(&line).map_err(|e| {
                LaunchError::Desktop(format!("the node agent gave an unreadable reply: {e}"))
            })
        }
        Err(ProcessError::Failed {
            stdout,
            stderr_tail,
            status,
            ..
        }) => match last_json(&stdout).and_then(|l| serde_json::from_str::<AgentError>(&l).ok()) {
            Some(AgentError {
                kind: ErrorKind::NoDisplay,
                error,
                ..
            }) => Err(LaunchError::NoCapacity(error)),
            Some(AgentError {
                error,
                display: Some(d),
                ..
            }) => match DisplayNumber::new(d) {
                Ok(display) => Err(LaunchError::FailedAt {
                    reason: error,
                    node: node.clone(),
                    display,
                }),
                Err(_) => Err(LaunchError::Desktop(error)),
            },
            Some(e) => Err(LaunchError::Desktop(e.error)),
            None => Err(LaunchError::Desktop(format!(
                "the node agent failed ({status}): {}",
                crate::process::last_line(&stderr_tail)
            ))),
        },
        Err(e) => Err(LaunchError::Desktop(format!(
            "the node agent did not run: {e}"
        ))),
    }
}

#[async_trait]
impl Launcher for LocalLauncher {
    fn kind(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %req.compute_user))]
    async fn start(&self, req: StartRequest) -> Result<Launched, LaunchError> {
        let account = self.account_for(req.compute_user.as_str())?;
        let mut cmd = self
            .agent_cmd(Some(&account))
            .arg("start")
            .args(["--node", self.cfg.node.as_str()])
            .args(["--xvnc", &self.cfg.xvnc])
            .args(["--geometry", &req.geometry])
            .args(["--depth", &self.cfg.depth.to_string()])
            .args(["--display-min", &self.cfg.display_min.to_string()])
            .args(["--display-max", &self.cfg.display_max.to_string()])
            .args(["--listen", "localhost"])
            .args([
                "--timeout".to_owned(),
                humantime::format_duration(self.cfg.start_timeout).to_string(),
            ]);
        if let Some(d) = &self.cfg.desktop {
            cmd = cmd.args(["--desktop", d]);
        }
        let mut stdin = req.password.clone();
        stdin.push(b'\n');
        let cmd = cmd
            .stdin(stdin)
            .timeout(self.cfg.start_timeout + Duration::from_secs(10));
        let started: StartedDesktop = agent_reply(cmd.output().await, &self.cfg.node)?;
        let display = DisplayNumber::new(started.display)
            .map_err(|e| LaunchError::Desktop(format!("the node agent reported {e}")))?;
        let handle = serde_json::to_string(&Handle {
            pid: started.xvnc_pid,
            marker: started.marker,
        })
        .expect("handle serialises");
        Ok(Launched {
            node: self.cfg.node.clone(),
            display,
            host: started.host,
            port: started.port,
            handle,
            warnings: started.warnings,
        })
    }

    #[tracing::instrument(level = "debug", skip(self), fields(user = %target.compute_user, display = %target.display))]
    async fn stop(&self, target: &Target) -> Result<(), LaunchError> {
        let account = self.account_for(target.compute_user.as_str())?;
        let cmd = self
            .agent_cmd(Some(&account))
            .arg("stop")
            .args(["--node", self.cfg.node.as_str()])
            .args(["--display", &target.display.to_string()])
            .timeout(Duration::from_secs(20));
        let _: crate::agent::Stopped = agent_reply(cmd.output().await, &self.cfg.node)?;
        Ok(())
    }

    async fn survey(&self, targets: &[Target]) -> Result<Survey, LaunchError> {
        let cmd = self
            .agent_cmd(None)
            .arg("list")
            .args(["--node", self.cfg.node.as_str()])
            .timeout(Duration::from_secs(20));
        let live: Vec<LiveDesktop> = agent_reply(cmd.output().await, &self.cfg.node)?;
        Ok(match_survey(&self.cfg.node, targets, &live))
    }

    async fn stop_orphan(&self, orphan: &Orphan) -> Result<(), LaunchError> {
        let target = Target {
            key: String::new(),
            compute_user: hpcdesk_core::ComputeUser::parse(&orphan.user)
                .map_err(|e| LaunchError::Desktop(e.to_string()))?,
            node: orphan.node.clone(),
            display: DisplayNumber::new(orphan.display)
                .map_err(|e| LaunchError::Desktop(e.to_string()))?,
            handle: String::new(),
        };
        self.stop(&target).await
    }
}

/// Matches what the agent sees alive against what the store believes.
fn match_survey(node: &NodeName, targets: &[Target], live: &[LiveDesktop]) -> Survey {
    let pid_of = |t: &Target| {
        serde_json::from_str::<Handle>(&t.handle)
            .ok()
            .map(|h| h.pid)
    };
    let owns = |t: &Target, l: &LiveDesktop| {
        l.display == t.display.get()
            && l.user == t.compute_user.as_str()
            && pid_of(t).is_none_or(|p| p == l.pid)
    };
    let statuses = targets
        .iter()
        .map(|t| {
            if live.iter().any(|l| owns(t, l)) {
                Liveness::Alive
            } else {
                Liveness::Gone(format!(
                    "the VNC server of display :{} on {} is no longer running",
                    t.display, t.node
                ))
            }
        })
        .collect();
    let orphans = live
        .iter()
        .filter(|l| !targets.iter().any(|t| owns(t, l)))
        .map(|l| Orphan {
            node: node.clone(),
            user: l.user.clone(),
            display: l.display,
            pid: l.pid,
        })
        .collect();
    Survey {
        targets: statuses,
        orphans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcdesk_core::ComputeUser;

    fn target(user: &str, display: u32, pid: i32) -> Target {
        Target {
            key: format!("k{display}"),
            compute_user: ComputeUser::parse(user).unwrap(),
            node: NodeName::parse("n").unwrap(),
            display: DisplayNumber::new(display).unwrap(),
            handle: format!("{{\"pid\":{pid},\"marker\":\"m\"}}"),
        }
    }

    fn live(user: &str, display: u32, pid: i32) -> LiveDesktop {
        LiveDesktop {
            user: user.into(),
            display,
            port: Some(5900 + display as u16),
            pid,
        }
    }

    #[test]
    fn a_survey_tells_alive_gone_and_orphans_apart() {
        let node = NodeName::parse("n").unwrap();
        let targets = [target("a", 1, 10), target("b", 2, 20), target("c", 3, 30)];
        // b's display is held by another pid (Xvnc restarted by someone else): b is gone.
        let seen = [live("a", 1, 10), live("b", 2, 99), live("d", 4, 40)];
        let s = match_survey(&node, &targets, &seen);
        assert_eq!(s.targets[0], Liveness::Alive);
        assert!(matches!(s.targets[1], Liveness::Gone(_)));
        assert!(matches!(s.targets[2], Liveness::Gone(_)));
        let orphan_displays: Vec<u32> = s.orphans.iter().map(|o| o.display).collect();
        assert_eq!(orphan_displays, vec![2, 4]);
    }

    #[test]
    fn agent_errors_map_to_capacity_or_desktop_failures() {
        let failed = |json: &str| {
            Err(ProcessError::Failed {
                program: "hpcdesk".into(),
                status: "exit status: 1".into(),
                stdout: json.into(),
                stderr_tail: String::new(),
            })
        };
        let n = NodeName::parse("n").unwrap();
        let r: Result<StartedDesktop, _> = agent_reply(
            failed(r#"{"kind":"no_display","error":"no free display"}"#),
            &n,
        );
        assert_eq!(
            r.unwrap_err(),
            LaunchError::NoCapacity("no free display".into())
        );
        let r: Result<StartedDesktop, _> =
            agent_reply(failed(r#"{"kind":"failed","error":"no such user"}"#), &n);
        assert_eq!(r.unwrap_err(), LaunchError::Desktop("no such user".into()));
        let r: Result<StartedDesktop, _> = agent_reply(
            failed(r#"{"kind":"failed","error":"Xvnc exited: bad option","display":4}"#),
            &n,
        );
        assert_eq!(
            r.unwrap_err(),
            LaunchError::FailedAt {
                reason: "Xvnc exited: bad option".into(),
                node: n.clone(),
                display: DisplayNumber::new(4).unwrap()
            }
        );
        let r: Result<StartedDesktop, _> = agent_reply(Ok("garbage".into()), &n);
        assert!(matches!(r.unwrap_err(), LaunchError::Desktop(_)));
    }
}
