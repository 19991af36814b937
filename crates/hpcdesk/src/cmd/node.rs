//! `hpcdesk node start|stop|list|probe|notify|job…`: the node agent's command line. It runs on the node
//! as the desktop's user and prints one JSON object (see `hpcdesk_launcher::agent`).

use std::process::ExitCode;

use hpcdesk_launcher::agent::cli::NodeCommand;
use hpcdesk_launcher::agent::{self, AgentError};

/// The agent's subcommands: one type with what the launchers render.
pub type Command = NodeCommand;

fn node_or_host(node: Option<String>) -> String {
    node.unwrap_or_else(agent::short_hostname)
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
            let args = opts.into_start_args()?;
            let password = agent::read_password(std::io::stdin().lock())?;
            agent::start(&args, &password)
        })()),
        Command::Job { key, desktop } => {
            let run = desktop
                .into_start_args()
                .and_then(|args| agent::job::run(&key, &args, tell_ready));
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
        Command::Stop {
            node,
            display,
            marker,
        } => reply(agent::stop(&node_or_host(node), display, marker.as_deref())),
        Command::List { node } => reply(Ok::<_, AgentError>(agent::list(&node_or_host(node)))),
        Command::Probe { node } => reply(Ok::<_, AgentError>(agent::probe(&node_or_host(node)))),
        Command::Notify {
            node,
            display,
            message,
        } => reply(Ok::<_, AgentError>(serde_json::json!({
            "shown": agent::notify(&node_or_host(node), display, &message)
        }))),
    }
}

/// A job's desktop is ready: tells hpcdesk (`POST …/jobs/ready`), within 3 seconds, so it
/// reads the report now rather than at its next look. A failure is reported on stderr (the
/// job's output) and changes nothing else: hpcdesk still looks by itself.
fn tell_ready(call: &agent::job::ReadyCall, key: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let post = async {
        // Straight to hpcdesk: a site's web proxy is for the outside world.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(3))
            .build()?;
        // Nothing to escape: a job key is letters and digits, the token URL-safe base64.
        client
            .post(format!("{}?marker={key}&token={}", call.url, call.token))
            .send()
            .await?
            .error_for_status()
            .map(|_| ())
    };
    let done = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(post).map_err(|e| e.without_url().to_string()));
    if let Err(e) = done {
        eprintln!("hpcdesk: could not tell hpcdesk the desktop is ready (it will find out): {e}");
    }
}
