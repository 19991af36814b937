//! The subcommands of the `hpcdesk` binary, one module each.

pub mod admin;
pub mod client;
pub mod config;
pub mod node;
pub mod serve;
pub mod token;

use std::path::Path;

use hpcdesk_server::Config;
use hpcdesk_server::config::Settings;

/// Loads the configuration the same way for every command: file (if any) then environment.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<Settings> {
    Ok(Config::load(file, std::env::vars())?)
}

/// Lays out rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}
