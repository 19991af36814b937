//! `hpcdesk node start|stop|list|probe`: the node agent's command line. It runs on the node
//! as the desktop's user and prints one JSON object (see `hpcdesk_launcher::agent`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use hpcdesk_launcher::agent::{self, AgentError, ErrorKind, Listen, StartArgs};

fn default_node() -> String {
    agent::short_hostname()
}

/// How to start a desktop (shared by `start` and `job`).
#[derive(Debug, clap::Args)]
pub struct DesktopOpts {
    /// This node's name (as in session ids).
    #[arg(long, default_value_t = default_node())]
    node: String,
    #[arg(long, default_value = "Xvnc")]
    xvnc: String,
    /// Desktop command line; default: a window manager and an xterm.
    #[arg(long)]
    desktop: Option<String>,
    #[arg(long, default_value = "1920x1080")]
    geometry: String,
    #[arg(long, default_value_t = 24)]
    depth: u8,
    #[arg(long, default_value_t = 1)]
    display_min: u32,
    #[arg(long, default_value_t = 99)]
    display_max: u32,
    /// "localhost", "hostname" (this node's address) or an IP address Xvnc listens on.
    #[arg(long, default_value = "localhost")]
    listen: String,
    /// How long the desktop may take to become ready.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Speak TLS with a certificate of the desktop's own (VeNCrypt X509Vnc), for a gateway
    /// that reaches the desktop over the network.
    #[arg(long)]
    tls: bool,
    /// The session's marker (8-64 letters and digits), put on every process of the desktop
    /// so that hpcdesk finds it again after a crash; random when not given.
    #[arg(long)]
    marker: Option<String>,
}

impl DesktopOpts {
    fn into_args(self) -> Result<StartArgs, AgentError> {
        let listen = Listen::parse(&self.listen).map_err(|e| AgentError {
            kind: ErrorKind::Usage,
            error: e,
            display: None,
        })?;
        Ok(StartArgs {
            node: self.node,
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Stop the desktop on a display, with every process of it.
    Stop {
        #[arg(long, default_value_t = default_node())]
        node: String,
        #[arg(long)]
        display: u32,
    },
    /// List the hpcdesk desktops alive on this node.
    List {
        #[arg(long, default_value_t = default_node())]
        node: String,
    },
    /// Report load, memory and desktop count.
    Probe {
        #[arg(long, default_value_t = default_node())]
        node: String,
    },
}

fn reply<T: serde::Serialize>(r: Result<T, AgentError>) -> ExitCode {
    match r {
        Ok(v) => {
            println!(
                "{}",
                serde_json::to_string(&v).expect("agent replies serialise")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::to_string(&e).expect("agent errors serialise")
            );
            eprintln!("hpcdesk node: {}", e.error);
            ExitCode::FAILURE
        }
    }
}

pub fn run(c: Command) -> ExitCode {
    match c {
        Command::Start(opts) => reply((|| {
            let args = opts.into_args()?;
            let password = agent::read_password(std::io::stdin().lock())?;
            agent::start(&args, &password)
        })()),
        Command::Job { key, desktop } => {
            let run = desktop
                .into_args()
                .and_then(|args| agent::job::run(&key, &args));
            match run {
                Ok(reason) => {
                    println!("{}", serde_json::json!({ "ended": reason }));
                    ExitCode::SUCCESS
                }
                Err(e) => reply::<()>(Err(e)),
            }
        }
        Command::JobPrepare { key } => reply(
            agent::read_password(std::io::stdin().lock())
                .and_then(|pw| agent::job::prepare(&key, &pw)),
        ),
        Command::JobReport { key } => reply(agent::job::report(&key)),
        Command::JobClean { key } => reply(agent::job::clean(&key).map(|()| serde_json::json!({}))),
        Command::Stop { node, display } => reply(agent::stop(&node, display)),
        Command::List { node } => reply(Ok::<_, AgentError>(agent::list(&node))),
        Command::Probe { node } => reply(Ok::<_, AgentError>(agent::probe(&node))),
    }
}
