//! The node agent's command line, in one type: [`NodeCommand`] is what `hpcdesk node …`
//! parses (clap, in the binary) and what every launcher renders ([`NodeCommand::to_args`])
//! to run the agent locally, over ssh or in a Slurm batch script. A round-trip test keeps
//! the two in step.

use std::time::Duration;

use clap::{Args, Subcommand};
use hpcdesk_core::{DisplayNumber, NodeName};

use super::{AgentError, ErrorKind, Listen, StartArgs};
use crate::remote::DesktopSettings;

/// How to start a desktop (`node start` and `node job`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DesktopOpts {
    /// This node's name (as in session ids); default: the short host name.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long, default_value = "Xvnc")]
    pub xvnc: String,
    /// A desktop command line (repeat for several; the first is the session); default: a
    /// window manager and an xterm.
    #[arg(long)]
    pub desktop: Vec<String>,
    #[arg(long, default_value = "1920x1080")]
    pub geometry: String,
    #[arg(long, default_value_t = 24)]
    pub depth: u8,
    #[arg(long, default_value_t = 1)]
    pub display_min: u32,
    #[arg(long, default_value_t = 99)]
    pub display_max: u32,
    /// "localhost", "hostname" (this node's address) or an IP address Xvnc listens on.
    #[arg(long, default_value = "localhost")]
    pub listen: String,
    /// How long the desktop may take to become ready.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Speak TLS with a certificate of the desktop's own (VeNCrypt X509Vnc), for a gateway
    /// that reaches the desktop over the network.
    #[arg(long)]
    pub tls: bool,
    /// The session's marker (8-64 letters and digits), put on every process of the desktop
    /// so that hpcdesk finds it again after a crash; random when not given.
    #[arg(long)]
    pub marker: Option<String>,
}

impl DesktopOpts {
    /// The options a launcher passes for the desktop `req` asks for, with `settings`,
    /// listening on `listen`.
    pub fn new(
        node: Option<&NodeName>,
        settings: &DesktopSettings,
        req: &crate::StartRequest,
        listen: &str,
    ) -> Self {
        DesktopOpts {
            node: node.map(ToString::to_string),
            xvnc: settings.xvnc.clone(),
            desktop: req.desktop.clone(),
            geometry: req.geometry.clone(),
            depth: settings.depth,
            display_min: settings.display_min,
            display_max: settings.display_max,
            listen: listen.to_owned(),
            timeout: settings.start_timeout,
            // On loopback the gateway and Xvnc share the machine; elsewhere the leg crosses
            // the network and is encrypted.
            tls: settings.tls && listen != "localhost",
            marker: Some(req.marker.clone()),
        }
    }

    /// What the agent runs with, once the listen address is resolved on this node.
    pub fn into_start_args(self) -> Result<StartArgs, AgentError> {
        let listen = Listen::parse(&self.listen).map_err(|e| AgentError {
            kind: ErrorKind::Usage,
            error: e,
            display: None,
        })?;
        Ok(StartArgs {
            node: self.node.unwrap_or_else(super::short_hostname),
            xvnc: self.xvnc,
            desktop: self.desktop,
            geometry: self.geometry,
            depth: self.depth,
            display_min: self.display_min,
            display_max: self.display_max,
            listen,
            timeout: self.timeout,
            tls: self.tls,
            marker: self.marker,
        })
    }

    fn render(&self, out: &mut Vec<String>) {
        let mut opt = |name: &str, value: String| {
            out.push(format!("--{name}"));
            out.push(value);
        };
        if let Some(n) = &self.node {
            opt("node", n.clone());
        }
        if let Some(m) = &self.marker {
            opt("marker", m.clone());
        }
        opt("xvnc", self.xvnc.clone());
        opt("geometry", self.geometry.clone());
        opt("depth", self.depth.to_string());
        opt("display-min", self.display_min.to_string());
        opt("display-max", self.display_max.to_string());
        opt("listen", self.listen.clone());
        opt(
            "timeout",
            humantime::format_duration(self.timeout).to_string(),
        );
        for d in &self.desktop {
            opt("desktop", d.clone());
        }
        if self.tls {
            out.push("--tls".into());
        }
    }
}

/// `hpcdesk node …`: what the agent can be asked.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum NodeCommand {
    /// Start a desktop; the VNC password is read from stdin.
    Start(DesktopOpts),
    /// (Slurm job) Run a desktop in the foreground until its Xvnc ends or TERM arrives.
    Job {
        /// The job directory key (from job-prepare).
        #[arg(long)]
        key: String,
        #[command(flatten)]
        desktop: DesktopOpts,
    },
    /// (Slurm) Store a job's VNC password (stdin) in its job directory.
    JobPrepare {
        #[arg(long)]
        key: String,
    },
    /// (Slurm) Whether a job's desktop is ready, and the tail of its output.
    JobReport {
        #[arg(long)]
        key: String,
    },
    /// (Slurm) Remove a job's directory.
    JobClean {
        #[arg(long)]
        key: String,
    },
    /// Stop the desktop on a display, with every process of it; with `--marker`, only if
    /// the desktop there is the one of that session marker.
    Stop {
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        display: u32,
        #[arg(long)]
        marker: Option<String>,
    },
    /// List the hpcdesk desktops alive on this node.
    List {
        #[arg(long)]
        node: Option<String>,
    },
    /// Report load, memory and desktop count.
    Probe {
        #[arg(long)]
        node: Option<String>,
    },
    /// Show a notification inside the desktop on a display (best effort).
    Notify {
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        display: u32,
        #[arg(long)]
        message: String,
    },
}

impl NodeCommand {
    /// Stops the desktop on `display`; with `marker` (a session's), only that session's
    /// desktop: a display number is reused, and a stop decided on an older look must not
    /// hit the desktop started there since.
    pub fn stop(node: &NodeName, display: DisplayNumber, marker: Option<&str>) -> Self {
        NodeCommand::Stop {
            node: Some(node.to_string()),
            display: display.get(),
            marker: marker.filter(|m| !m.is_empty()).map(str::to_owned),
        }
    }

    pub fn list(node: &NodeName) -> Self {
        NodeCommand::List {
            node: Some(node.to_string()),
        }
    }

    pub fn probe(node: &NodeName) -> Self {
        NodeCommand::Probe {
            node: Some(node.to_string()),
        }
    }

    pub fn notify(node: &NodeName, display: DisplayNumber, message: &str) -> Self {
        NodeCommand::Notify {
            node: Some(node.to_string()),
            display: display.get(),
            message: message.to_owned(),
        }
    }

    /// The agent's argv after the binary: `node <command> --option value …`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["node".to_owned()];
        let node = |a: &mut Vec<String>, n: &Option<String>| {
            if let Some(n) = n {
                a.extend(["--node".to_owned(), n.clone()]);
            }
        };
        match self {
            NodeCommand::Start(d) => {
                a.push("start".into());
                d.render(&mut a);
            }
            NodeCommand::Job { key, desktop } => {
                a.extend(["job".into(), "--key".into(), key.clone()]);
                desktop.render(&mut a);
            }
            NodeCommand::JobPrepare { key } => {
                a.extend(["job-prepare".into(), "--key".into(), key.clone()]);
            }
            NodeCommand::JobReport { key } => {
                a.extend(["job-report".into(), "--key".into(), key.clone()]);
            }
            NodeCommand::JobClean { key } => {
                a.extend(["job-clean".into(), "--key".into(), key.clone()]);
            }
            NodeCommand::Stop {
                node: n,
                display,
                marker,
            } => {
                a.push("stop".into());
                node(&mut a, n);
                a.extend(["--display".into(), display.to_string()]);
                if let Some(m) = marker {
                    a.extend(["--marker".into(), m.clone()]);
                }
            }
            NodeCommand::List { node: n } => {
                a.push("list".into());
                node(&mut a, n);
            }
            NodeCommand::Probe { node: n } => {
                a.push("probe".into());
                node(&mut a, n);
            }
            NodeCommand::Notify {
                node: n,
                display,
                message,
            } => {
                a.push("notify".into());
                node(&mut a, n);
                a.extend(["--display".into(), display.to_string()]);
                a.extend(["--message".into(), message.clone()]);
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `hpcdesk node …` as the binary parses it.
    #[derive(Debug, Parser)]
    struct Hpcdesk {
        #[command(subcommand)]
        top: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Node(NodeCommand),
    }

    fn parsed(args: &[String]) -> NodeCommand {
        let argv = std::iter::once("hpcdesk".to_owned()).chain(args.iter().cloned());
        match Hpcdesk::try_parse_from(argv) {
            Ok(Hpcdesk { top: Top::Node(c) }) => c,
            Err(e) => panic!("{args:?} does not parse: {e}"),
        }
    }

    #[test]
    fn every_command_a_launcher_renders_parses_back_to_itself() {
        let node = NodeName::parse("gv101").unwrap();
        let settings = DesktopSettings {
            xvnc: "/opt/tiger vnc/Xvnc".into(),
            depth: 16,
            display_min: 3,
            display_max: 40,
            start_timeout: Duration::from_millis(45_500),
            tls: true,
        };
        let mut plain = settings.clone();
        plain.tls = false;
        let twm = ["twm", "xterm -T 'a b' -e \"top\""];
        let req = crate::test_request;
        let commands = [
            NodeCommand::Start(DesktopOpts::new(
                Some(&node),
                &settings,
                &req("800x600", &twm, "mark0001"),
                "10.0.0.2",
            )),
            NodeCommand::Start(DesktopOpts::new(
                Some(&node),
                &settings,
                &req("1920x1080", &["xfce4-session"], "mark0002"),
                "localhost",
            )),
            NodeCommand::Start(DesktopOpts::new(
                None,
                &plain,
                &req("1x1", &[], "m3m3m3m3"),
                "hostname",
            )),
            NodeCommand::Job {
                key: "abc12345".into(),
                desktop: DesktopOpts::new(
                    None,
                    &settings,
                    &req("1024x768", &twm, "abc12345"),
                    "hostname",
                ),
            },
            NodeCommand::JobPrepare { key: "k1".into() },
            NodeCommand::JobReport { key: "k2".into() },
            NodeCommand::JobClean { key: "k3".into() },
            NodeCommand::stop(&node, DisplayNumber::new(7).unwrap(), None),
            NodeCommand::stop(&node, DisplayNumber::new(7).unwrap(), Some("abc12345")),
            NodeCommand::list(&node),
            NodeCommand::probe(&node),
            NodeCommand::Probe { node: None },
            NodeCommand::notify(
                &node,
                DisplayNumber::new(7).unwrap(),
                "Your desktop ends in 5 min — it's 'time'; save your work",
            ),
        ];
        for c in commands {
            let args = c.to_args();
            assert_eq!(parsed(&args), c, "{args:?}");
        }
    }

    #[test]
    fn tls_is_asked_for_only_off_loopback() {
        let s = DesktopSettings {
            xvnc: "Xvnc".into(),
            depth: 24,
            display_min: 1,
            display_max: 9,
            start_timeout: Duration::from_secs(30),
            tls: true,
        };
        let req = crate::test_request("1x1", &[], "m0000000");
        assert!(!DesktopOpts::new(None, &s, &req, "localhost").tls);
        assert!(DesktopOpts::new(None, &s, &req, "10.0.0.2").tls);
    }

    #[test]
    fn a_hand_run_command_takes_the_defaults() {
        let args: Vec<String> = ["node", "start"].map(String::from).into();
        let NodeCommand::Start(d) = parsed(&args) else {
            panic!("not a start");
        };
        assert_eq!((d.listen.as_str(), d.depth), ("localhost", 24));
        assert_eq!(d.node, None, "the host name is taken when the agent runs");
    }
}
