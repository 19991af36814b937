//! What every launcher says to the node agent and how it reads the answer: the argument
//! lists of each command (built from [`NodeCommand`], which owns the command line), the
//! agent's JSON replies, and matching what it sees alive against the store.

use std::time::Duration;

use hpcdesk_core::{DisplayNumber, NodeName};
use serde::{Deserialize, Serialize};

use crate::agent::cli::{DesktopOpts, NodeCommand};
use crate::agent::{AgentError, ErrorKind, Listing, LiveDesktop, StartedDesktop};
use crate::process::ProcessError;
use crate::{LaunchError, Launched, Liveness, Orphan, Survey, Target};

/// How desktops are started, whatever the launcher.
#[derive(Debug, Clone)]
pub struct DesktopSettings {
    pub xvnc: String,
    pub depth: u8,
    pub display_min: u32,
    pub display_max: u32,
    pub start_timeout: Duration,
    /// TLS between the gateway and desktops that do not listen on loopback.
    pub tls: bool,
}

/// `node start --node N --marker M …` (see [`NodeCommand`]).
pub fn start_args(
    node: &NodeName,
    s: &DesktopSettings,
    req: &crate::StartRequest,
    listen: &str,
) -> Vec<String> {
    NodeCommand::Start(DesktopOpts::new(Some(node), s, req, listen)).to_args()
}

pub fn stop_args(node: &NodeName, display: DisplayNumber, marker: Option<&str>) -> Vec<String> {
    NodeCommand::stop(node, display, marker).to_args()
}

pub fn list_args(node: &NodeName) -> Vec<String> {
    NodeCommand::list(node).to_args()
}

pub fn probe_args(node: &NodeName) -> Vec<String> {
    NodeCommand::probe(node).to_args()
}

/// What a launcher stores per desktop the agent started.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handle {
    pub pid: i32,
    pub marker: String,
}

fn last_json(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .find(|l| l.trim_start().starts_with(['{', '[']))
        .map(str::to_owned)
}

/// Parses the agent's reply: its JSON on success, its JSON error otherwise. An error that
/// names a display is placed on `node`.
pub fn agent_reply<T: for<'de> Deserialize<'de>>(
    result: Result<String, ProcessError>,
    node: &NodeName,
) -> Result<T, LaunchError> {
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
            exit,
            signal,
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
                "the node agent on {node} failed ({}): {}",
                crate::process::how_it_ended(exit, signal),
                crate::process::last_line(&stderr_tail)
            ))),
        },
        Err(ProcessError::TooMuchOutput { .. }) => Err(LaunchError::Desktop(format!(
            "the node agent on {node} printed without end and was stopped (more than {}; a \
             shell start-up file of the account may print)",
            crate::capped::human_bytes(crate::capped::STREAM_LIMIT)
        ))),
        Err(e) => Err(LaunchError::Desktop(format!(
            "the node agent on {node} did not run: {e}"
        ))),
    }
}

/// A started desktop as the launcher reports it. The agent runs as the user, whose shell
/// start-up files can make it print anything: only the display number (and Xvnc's pid and
/// marker, for stopping it) are taken from its reply. Where the gateway connects is the
/// launcher's to say — `host`, the node's configured address — and the port is the
/// display's; a reply that claims another port is refused.
pub fn launched(
    started: StartedDesktop,
    node: &NodeName,
    host: &str,
) -> Result<Launched, LaunchError> {
    let display = DisplayNumber::new(started.display)
        .map_err(|e| LaunchError::Desktop(format!("the node agent reported {e}")))?;
    let port = display.default_port();
    if started.port != port {
        return Err(LaunchError::Desktop(format!(
            "the node agent on {node} reported port {} for display :{display}; desktops listen \
             on {port}",
            started.port
        )));
    }
    let handle = serde_json::to_string(&Handle {
        pid: started.xvnc_pid,
        marker: started.marker,
    })
    .expect("handle serialises");
    Ok(Launched {
        node: node.clone(),
        display,
        host: host.to_owned(),
        port,
        handle,
        warnings: started.warnings,
        tls_pin: started.tls_pin,
        ends_at: None,
    })
}

/// Whether `live` (seen by the agent on `node`) is the desktop `t` records: same place and
/// account, and the same marker (or, for desktops from before markers, the same Xvnc pid).
pub fn owns(t: &Target, node: &NodeName, live: &LiveDesktop) -> bool {
    let pid = serde_json::from_str::<Handle>(&t.handle)
        .ok()
        .map(|h| h.pid);
    let same = match (&live.marker, t.marker.is_empty()) {
        (Some(m), false) => *m == t.marker,
        _ => pid.is_none_or(|p| p == live.pid),
    };
    t.node.as_ref() == Some(node)
        && t.display.map(|d| d.get()) == Some(live.display)
        && live.user == t.compute_user.as_str()
        && same
}

/// What the listing of one node shows of an interrupted start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Its desktop runs, complete: where the gateway reaches it.
    Ready(Launched),
    /// Its agent is still at work.
    InProgress,
    /// An Xvnc of it runs, but its agent died before the desktop command started: stop it.
    Partial(DisplayNumber),
    Nothing,
}

/// Looks for the desktop of the interrupted start `t` in `listing` (from `node`, where the
/// gateway connects to `host`). Only desktops of `t`'s own account count.
pub fn find_start(t: &Target, node: &NodeName, host: &str, listing: &Listing) -> Found {
    if t.marker.is_empty() {
        return Found::Nothing;
    }
    let user = t.compute_user.as_str();
    let in_progress = listing
        .starting
        .iter()
        .any(|s| s.user == user && s.marker == t.marker);
    let desktop = listing
        .desktops
        .iter()
        .find(|d| d.user == user && d.marker.as_deref() == Some(t.marker.as_str()));
    // An agent at work may still stop what it started (it does when it finds hpcdesk gone
    // before the desktop command runs): nothing is adopted until it has exited.
    if in_progress {
        return Found::InProgress;
    }
    let Some(d) = desktop else {
        return Found::Nothing;
    };
    let Ok(display) = DisplayNumber::new(d.display) else {
        return Found::Nothing;
    };
    if !d.complete {
        return Found::Partial(display);
    }
    // The port is the display's; one the listing makes up is not believed.
    let port = display.default_port();
    if d.port.is_some_and(|p| p != port) {
        return Found::Partial(display);
    }
    let handle = serde_json::to_string(&Handle {
        pid: d.pid,
        marker: format!("{node}-{}-{}", d.display, t.marker),
    })
    .expect("handle serialises");
    Found::Ready(Launched {
        node: node.clone(),
        display,
        host: host.to_owned(),
        port,
        handle,
        warnings: Vec::new(),
        tls_pin: d.tls_pin.clone(),
        ends_at: None,
    })
}

/// Matches what the agent sees alive on `node` against what the store believes.
pub fn match_survey(node: &NodeName, targets: &[Target], live: &[LiveDesktop]) -> Survey {
    let statuses = targets
        .iter()
        .map(|t| {
            if live.iter().any(|l| owns(t, node, l)) {
                Liveness::Alive
            } else {
                Liveness::Gone(format!(
                    "the VNC server of display :{} on {} is no longer running",
                    t.display.map(|d| d.get()).unwrap_or(0),
                    node
                ))
            }
        })
        .collect();
    let orphans = live
        .iter()
        .filter(|l| !targets.iter().any(|t| owns(t, node, l)))
        .filter_map(|l| {
            Some(Orphan {
                node: node.clone(),
                user: hpcdesk_core::ComputeUser::parse(&l.user).ok()?,
                display: l.display,
                pid: l.pid,
                marker: l.marker.clone(),
                job: None,
            })
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
            node: Some(NodeName::parse("n").unwrap()),
            display: Some(DisplayNumber::new(display).unwrap()),
            host: None,
            port: None,
            handle: format!("{{\"pid\":{pid},\"marker\":\"m\"}}"),
            marker: String::new(),
        }
    }

    fn live(user: &str, display: u32, pid: i32) -> LiveDesktop {
        LiveDesktop {
            user: user.into(),
            display,
            port: Some(5900 + display as u16),
            pid,
            marker: None,
            complete: true,
            tls_pin: None,
        }
    }

    #[test]
    fn an_interrupted_start_is_found_by_its_marker_and_account_only() {
        use crate::agent::StartInProgress;
        let node = NodeName::parse("n").unwrap();
        let mut t = target("a", 1, 0);
        t.node = None;
        t.display = None;
        t.marker = "mark0001".into();
        let mine = LiveDesktop {
            marker: Some("mark0001".into()),
            ..live("a", 7, 70)
        };
        let l = |desktops: Vec<LiveDesktop>, starting: Vec<(&str, &str)>| Listing {
            desktops,
            starting: starting
                .into_iter()
                .map(|(u, m)| StartInProgress {
                    user: u.into(),
                    marker: m.into(),
                })
                .collect(),
        };
        match find_start(&t, &node, "127.0.0.1", &l(vec![mine.clone()], vec![])) {
            Found::Ready(launched) => {
                assert_eq!(launched.display.get(), 7);
                assert_eq!(launched.port, 5907);
                assert_eq!(launched.host, "127.0.0.1");
            }
            other => panic!("{other:?}"),
        }
        // Another account's desktop with the same marker is never taken.
        let theirs = LiveDesktop {
            marker: Some("mark0001".into()),
            ..live("b", 8, 80)
        };
        assert_eq!(
            find_start(&t, &node, "h", &l(vec![theirs], vec![])),
            Found::Nothing
        );
        // Xvnc without its desktop: still starting, or left half-way.
        let partial = LiveDesktop {
            complete: false,
            ..mine.clone()
        };
        assert_eq!(
            find_start(
                &t,
                &node,
                "h",
                &l(vec![partial.clone()], vec![("a", "mark0001")])
            ),
            Found::InProgress
        );
        assert_eq!(
            find_start(&t, &node, "h", &l(vec![partial], vec![])),
            Found::Partial(DisplayNumber::new(7).unwrap())
        );
        assert_eq!(
            find_start(&t, &node, "h", &l(vec![], vec![("a", "mark0001")])),
            Found::InProgress
        );
        // Complete while its agent still runs: that agent may yet stop it.
        assert_eq!(
            find_start(
                &t,
                &node,
                "h",
                &l(vec![mine.clone()], vec![("a", "mark0001")])
            ),
            Found::InProgress
        );
        assert_eq!(
            find_start(&t, &node, "h", &l(vec![], vec![("b", "mark0001")])),
            Found::Nothing
        );
        // A listing that claims another port is not believed.
        let odd = LiveDesktop {
            port: Some(22),
            ..mine
        };
        assert_eq!(
            find_start(&t, &node, "h", &l(vec![odd], vec![])),
            Found::Partial(DisplayNumber::new(7).unwrap())
        );
    }

    #[test]
    fn listings_of_older_agents_still_parse() {
        let old: Listing =
            serde_json::from_str(r#"[{"user":"a","display":3,"port":5903,"pid":9}]"#).unwrap();
        assert_eq!(old.desktops.len(), 1);
        assert!(old.starting.is_empty());
        let new: Listing = serde_json::from_str(
            r#"{"desktops":[],"starting":[{"user":"a","marker":"mark0001"}]}"#,
        )
        .unwrap();
        assert_eq!(new.starting.len(), 1);
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
                exit: Some(1),
                signal: None,
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

    #[test]
    fn desktop_args_carry_every_setting() {
        let s = DesktopSettings {
            xvnc: "Xvnc".into(),
            depth: 24,
            display_min: 5,
            display_max: 9,
            start_timeout: Duration::from_secs(30),
            tls: true,
        };
        let a = start_args(
            &NodeName::parse("n1").unwrap(),
            &s,
            &crate::test_request("800x600", &["twm", "xterm -T 'a b'"], "mark0001"),
            "10.0.0.2",
        );
        let joined = a.join(" ");
        assert!(
            joined.starts_with(
                "node start --node n1 --marker mark0001 --xvnc Xvnc --geometry 800x600"
            )
        );
        assert!(
            joined
                .contains("--listen 10.0.0.2 --timeout 30s --desktop twm --desktop xterm -T 'a b'")
        );
    }
}
