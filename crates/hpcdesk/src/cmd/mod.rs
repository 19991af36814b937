//! The subcommands of the `hpcdesk` binary, one module each.

pub mod client;
pub mod config;
pub mod node;
pub mod serve;
pub mod token;

use std::path::Path;

use hpcdesk_server::Config;

/// Loads the configuration the same way for every command: file (if any) then environment.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(file, std::env::vars())?)
}
