//! `hpcdesk serve`: run the service until SIGINT or SIGTERM; SIGHUP reloads its TLS
//! certificate (`hpcdesk_server::reload`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// Every viewer holds two sockets; lift the soft open-file limit to the hard one so a
/// gateway is not capped at the usual 1024 descriptors.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
}

pub fn run(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let _log = hpcdesk_server::logging::init();
    raise_open_files_limit();
    let config = super::load_config(file)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let config = config.bound_to(local);
        let config_hint = match file {
            Some(f) => format!(" --config {}", f.display()),
            None => String::new(),
        };
        // Desktops never run as root; as root, tokens name the account to run as.
        let me = if nix::unistd::Uid::effective().is_root() {
            "<account>".to_owned()
        } else {
            nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "$USER".into())
        };
        // Handled from here on: SIGHUP must never end the server (its default action).
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot handle SIGHUP")?;
        let state = hpcdesk_server::build(config).await?;
        let reload_state = state.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                hpcdesk_server::reload(&reload_state);
            }
        });
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        eprintln!(
            "hpcdesk {} listening on {scheme}://{local}",
            env!("CARGO_PKG_VERSION")
        );
        eprintln!(
            "  get a token:      hpcdesk{config_hint} token --user {me} --compute-user {me}\n  \
             create a desktop: HPCDESK_TOKEN=<token> hpcdesk desktop --api {scheme}://{local} create"
        );
        hpcdesk_server::serve(listener, state, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
