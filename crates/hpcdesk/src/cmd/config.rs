//! `hpcdesk config example|show`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented configuration file with every key and its default.
    Example,
    /// Print the effective configuration (file + environment), secrets redacted.
    Show,
}

pub fn run(file: Option<&Path>, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Example => print!("{}", hpcdesk_server::config::EXAMPLE),
        Command::Show => print!("{}", super::load_config(file)?.redacted_toml()),
    }
    Ok(ExitCode::SUCCESS)
}
