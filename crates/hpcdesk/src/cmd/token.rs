//! `hpcdesk token`: mint an SCNet-style token with the configured (or generated) secret.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Platform user name (owner of the sessions).
    #[arg(long)]
    user: String,
    /// Linux account the desktop runs as.
    #[arg(long)]
    compute_user: String,
    /// Role claim; must be mapped in auth.roles.
    #[arg(long, default_value = "1")]
    role: String,
    /// Validity, e.g. 24h, 30m.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// accountStatus claim: Normal, Trial, Owe or Disable.
    #[arg(long, default_value = "Normal")]
    account_status: String,
    /// clusterId claim; default: auth.cluster_id.
    #[arg(long)]
    cluster_id: Option<String>,
}

pub fn run(file: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(file)?;
    hpcdesk_core::ComputeUser::parse(&args.compute_user).context("--compute-user")?;
    let secrets = hpcdesk_server::startup::jwt_secrets(&config)?;
    let secret = secrets.first().context("no JWT secret configured")?;
    let claims = hpcdesk_server::auth::claims_for(
        &args.user,
        &args.compute_user,
        args.cluster_id
            .as_deref()
            .unwrap_or(&config.auth.cluster_id),
        &args.role,
        &args.account_status,
        chrono::Utc::now().timestamp_millis(),
        args.ttl,
    );
    println!("{}", hpcdesk_server::auth::mint(secret, &claims));
    Ok(ExitCode::SUCCESS)
}
