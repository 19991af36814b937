//! `hpcdesk-bench`: the gateway benchmark of `shared/PERFORMANCE.md`, run with
//! `bench/gateway.sh`.
//!
//! One run measures, on the same machine and in the same conditions, four ways from a viewer
//! to a VNC-like TCP server: raw loopback TCP (the limit), a plain TCP relay (tokio
//! `copy_bidirectional`: the best any relay can do), websockify 0.13, and hpcdesk's real
//! `/vncws` gateway (the full server with store, grants and server-side VNC auth; only the
//! launcher is a fake that points sessions at the benchmark's servers). It prints a table
//! of medians and ratios.
//!
//! - [`servers`]: the fake VNC servers (download, upload, echo; plain and RFB-authenticating).
//! - [`client`]: connecting through each variant (TCP or WebSocket, with the RFB viewer
//!   handshake for hpcdesk).
//! - [`procs`]: the relay and hpcdesk child processes, and memory readings.
//! - [`measure`]: the measurements and the report.
//! - [`api`]: the API (requests/s) and create → ready benchmarks.
//! - [`desktop`]: one real TigerVNC desktop through four paths (`bench/desktop.sh`).
//! - [`slurm`]: create → running of Slurm desktops against the jobs' own start
//!   (`bench/slurm.sh`).

/// The allocator of the `hpcdesk` binary, so that the in-process server measures the same.
/// (The plain relay baseline is `hpcdesk-bench-relay`, with the default allocator.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod client;
mod desktop;
mod measure;
mod procs;
mod servers;
mod slurm;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "hpcdesk gateway benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole benchmark and print the table.
    Run(measure::Options),
    /// Requests/s and latency of launchurl and list against a trivial axum handler.
    Api(api::ApiOptions),
    /// Create → ready with the local launcher against Xvnc's own start time (as root).
    Create(api::CreateOptions),
    /// One real desktop through hpcdesk serve, measured direct, through socat, websockify
    /// and hpcdesk's launch URL.
    Desktop(desktop::DesktopOptions),
    /// Create → running of Slurm desktops beside their jobs' start (as root, `bench/slurm.sh`).
    Slurm(slurm::SlurmOptions),
    /// (internal) The benchmark's VNC-like servers.
    Servers,
    /// (internal) hpcdesk's server with a launcher that points users at given ports:
    /// --map USER=PORT, repeated.
    Hpcdesk {
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long = "map", required = true)]
        maps: Vec<String>,
        /// Log as `hpcdesk serve` does, to stderr.
        #[arg(long)]
        log: bool,
        /// The gateway splices the screen (`gateway.splice`) instead of copying it.
        #[arg(long)]
        splice: bool,
    },
}

/// The median of `v` (the upper one of an even count); NaN for none.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    procs::raise_open_files_limit();
    let cli = Cli::parse();
    // The real-desktop viewer is one connection at a time: one thread is all it needs, and a
    // second would only add wake-ups between threads to what it measures.
    let rt = match cli.command {
        Command::Desktop(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(opts) => measure::run(opts).await,
            Command::Api(opts) => api::api(opts).await,
            Command::Create(opts) => api::create(opts).await,
            Command::Desktop(opts) => desktop::run(opts).await,
            Command::Slurm(opts) => slurm::run(opts).await,
            Command::Servers => servers::main().await,
            Command::Hpcdesk {
                data,
                maps,
                log,
                splice,
            } => procs::hpcdesk_main(data, maps, log, splice).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Err(e) = result {
        eprintln!("hpcdesk-bench: {e}");
        std::process::exit(1);
    }
}
