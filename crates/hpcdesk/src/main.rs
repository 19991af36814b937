//! `hpcdesk`: the one binary.
//!
//! - `serve`: the API, viewer and gateway ([`cmd::serve`]).
//! - `token`: mint a token with the configured secret ([`cmd::token`]).
//! - `node …`: the node agent, run on a node as the user ([`cmd::node`]).
//! - `desktop …`, `sweep`: clients of a running server ([`cmd::client`]).
//! - `config …`: print the example or the effective configuration ([`cmd::config`]).
//! - `user …`, `org …`, `key …`, `audit`: admin commands on the store ([`cmd::admin`]).
#![forbid(unsafe_code)]

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the API allocates small objects on every request from several threads, where it
/// costs a fraction of glibc's malloc (measured with `bench/api.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hpcdesk",
    version,
    about = "Linux desktops in the browser for HPC clusters"
)]
struct Cli {
    /// Configuration file (TOML). Every key can also be set as HPCDESK_SECTION__KEY.
    #[arg(long, global = true, env = "HPCDESK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (API, viewer, gateway).
    Serve,
    /// Mint a token signed with the configured secret (admin and test tool).
    Token(cmd::token::Args),
    /// Node agent: start/stop/list/probe desktops on this node, as the calling user.
    #[command(subcommand)]
    Node(cmd::node::Command),
    /// Use a running hpcdesk: create, list, open and delete your desktop.
    Desktop(cmd::client::Args),
    /// Run the idle sweep of a running server now (needs an admin token).
    Sweep(cmd::client::SweepArgs),
    /// Show every node's load, memory and sessions (needs an admin token).
    Nodes(cmd::client::SweepArgs),
    /// Platform accounts (for sites without the AC platform).
    #[command(subcommand)]
    User(cmd::admin::UserCmd),
    /// Organisations (orgId) allowed to request tokens.
    #[command(subcommand)]
    Org(cmd::admin::OrgCmd),
    /// Access keys for the AK/SK token endpoint.
    #[command(subcommand)]
    Key(cmd::admin::KeyCmd),
    /// Read the audit log.
    Audit(cmd::admin::AuditArgs),
    /// Print the example configuration or the effective one (secrets redacted).
    #[command(subcommand)]
    Config(cmd::config::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => cmd::serve::run(cli.config.as_deref()),
        Command::Token(args) => cmd::token::run(cli.config.as_deref(), args),
        Command::Node(c) => return cmd::node::run(c),
        Command::Desktop(args) => cmd::client::run(args),
        Command::Sweep(args) => cmd::client::sweep(args),
        Command::Nodes(args) => cmd::client::nodes(args),
        Command::Config(c) => cmd::config::run(cli.config.as_deref(), c),
        Command::User(c) => cmd::admin::user(cli.config.as_deref(), c),
        Command::Org(c) => cmd::admin::org(cli.config.as_deref(), c),
        Command::Key(c) => cmd::admin::key(cli.config.as_deref(), c),
        Command::Audit(a) => cmd::admin::audit(cli.config.as_deref(), a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hpcdesk: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `outer: inner: …`, leaving out a cause whose text the message
/// already holds (many of our errors show their source in their own text).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let e = anyhow::Error::new(inner).context("cannot open the store");
        assert_eq!(report(&e), "cannot open the store: connection refused");
        #[derive(Debug)]
        struct Db(std::io::Error);
        impl std::fmt::Display for Db {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "database error: {}", self.0)
            }
        }
        impl std::error::Error for Db {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Db(std::io::Error::other("refused"))).context("opening");
        assert_eq!(report(&e), "opening: database error: refused");
    }
}
