//! Building the service from its configuration, and running it on a given listener until a
//! given shutdown signal (tests bind `127.0.0.1:0` and pass their own signal).

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hpcdesk_core::NodeName;
use hpcdesk_core::seal::ServerKey;
use hpcdesk_gateway::{Gateway, GatewayConfig, Registry};
use hpcdesk_launcher::{
    Launcher, LocalConfig, LocalLauncher, SlurmConfig, SlurmLauncher, SshConfig, SshLauncher,
};
use hpcdesk_store::{Access, Store};

use crate::auth::TokenVerifier;
use crate::config::{Config, ConfigError, LauncherKind, Secret, Settings};
use crate::state::{AppState, Clock, Inner, SystemClock};
use crate::{lifecycle, routes};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] hpcdesk_store::StoreError),
    #[error("launcher: {0}")]
    Launcher(String),
    #[error("server.tls_cert / server.tls_key: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

fn data_dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartupError + '_ {
    move |source| StartupError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Creates the data directory (0700) if needed.
pub fn ensure_data_dir(config: &Config) -> Result<(), StartupError> {
    let dir = &config.server.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(data_dir_err(dir))
}

/// Reads a generated secret from `file`, creating it (0600, 256 random bits) on first use.
fn generated_secret(file: &Path) -> Result<Secret, StartupError> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let text = text.trim();
        if !text.is_empty() {
            return Ok(Secret::new(text));
        }
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(data_dir_err(file))?;
    f.write_all(hex.as_bytes()).map_err(data_dir_err(file))?;
    Ok(Secret::new(hex))
}

/// The JWT secrets: configured, or generated once under the data directory.
pub fn jwt_secrets(config: &Config) -> Result<Vec<Secret>, StartupError> {
    match &config.auth.jwt_secret {
        Some(list) => Ok(list.to_vec()),
        None => {
            ensure_data_dir(config)?;
            Ok(vec![generated_secret(
                &config.server.data_dir.join("jwt.secret"),
            )?])
        }
    }
}

/// The key that seals VNC passwords and access-key secrets: configured, or generated once
/// under the data directory.
pub fn server_key(config: &Config) -> Result<ServerKey, StartupError> {
    let secret = match &config.server.secret {
        Some(s) => s.clone(),
        None => {
            ensure_data_dir(config)?;
            generated_secret(&config.server.data_dir.join("server.key"))?
        }
    };
    Ok(ServerKey::from_secret(secret.expose().as_bytes()))
}

/// This machine's node name: configured, or the short host name.
pub fn node_name(config: &Config) -> Result<NodeName, StartupError> {
    if let Some(n) = &config.launcher.node_name {
        return Ok(n.clone());
    }
    let name = hpcdesk_launcher::agent::short_hostname();
    NodeName::parse(&name).map_err(|e| {
        StartupError::Launcher(format!(
            "host name {name:?} cannot be used in session ids ({e}); set launcher.node_name"
        ))
    })
}

fn this_binary() -> Result<PathBuf, StartupError> {
    std::env::current_exe()
        .map_err(|e| StartupError::Launcher(format!("cannot find the hpcdesk binary: {e}")))
}

pub fn build_launcher(settings: &Settings) -> Result<Arc<dyn Launcher>, StartupError> {
    let l = &settings.launcher;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
    let local_agent = match &l.agent {
        Some(p) => p.clone(),
        None => this_binary()?,
    };
    let desktop = settings.desktop.clone();
    let policy = settings.policy.clone();
    match l.kind {
        LauncherKind::Local => Ok(Arc::new(LocalLauncher::new(LocalConfig {
            agent: local_agent,
            node: node_name(settings)?,
            desktop,
            path,
            policy,
        }))),
        LauncherKind::Ssh => {
            let launcher = SshLauncher::new(SshConfig {
                options: l.ssh.clone(),
                nodes: l.nodes.clone(),
                control_dir: settings.server.data_dir.join("ssh"),
                desktop,
                policy,
            })
            .map_err(|e| StartupError::Launcher(e.to_string()))?;
            Ok(Arc::new(launcher))
        }
        LauncherKind::Slurm => {
            let env = std::env::vars()
                .filter(|(k, _)| k.starts_with("SLURM_"))
                .collect();
            Ok(Arc::new(SlurmLauncher::new(SlurmConfig {
                options: l.slurm.clone(),
                local_agent,
                desktop,
                path,
                env,
                policy,
            })))
        }
    }
}

/// Builds the application state: store (migrated), secrets, launcher, token verifier.
pub async fn build(settings: Settings) -> Result<AppState, StartupError> {
    let launcher = build_launcher(&settings)?;
    build_with(settings, launcher, Arc::new(SystemClock)).await
}

/// [`build`] with a given launcher and clock (tests).
pub async fn build_with(
    config: Settings,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn Clock>,
) -> Result<AppState, StartupError> {
    if config.store.url.is_none() {
        // The default store is a file in the data directory.
        ensure_data_dir(&config)?;
    }
    let store: Arc<dyn Store> = hpcdesk_store::open(&config.store_url, Access::Serve).await?;
    let verifier = TokenVerifier::new(
        &jwt_secrets(&config)?,
        &config.auth.cluster_id,
        config.auth.roles.clone(),
        config.auth.max_token_bytes,
    );
    let server_key = server_key(&config)?;
    let now_clock = clock.clone();
    let registry = Registry::new(Arc::new(move || now_clock.now()));
    let gateway = Arc::new(Gateway::new(
        Arc::new(crate::grants::StoreGrants {
            store: store.clone(),
            key: server_key.clone(),
            clock: clock.clone(),
        }),
        registry,
        GatewayConfig {
            heartbeat: config.gateway.heartbeat.0,
            connect_timeout: config.gateway.connect_timeout.0,
            write_timeout: config.gateway.write_timeout.0,
            max_viewers_per_session: config.gateway.max_viewers_per_session,
            splice: config.gateway.splice,
        },
    ));
    let limits = crate::throttle::Limits::new(&config.limits);
    let config_ancestors = config.server.frame_ancestors.clone();
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(crate::tls::ServerTls::new(cert, key)?)),
        _ => None,
    };
    Ok(AppState::new(Inner {
        config,
        store,
        launcher,
        verifier,
        server_key,
        clock,
        gateway,
        limits,
        account_status: crate::accounts::StatusCache::default(),
        metrics: crate::metrics::Metrics::default(),
        presence: crate::presence::Presence::default(),
        csp: crate::routes::web::content_security_policy(&config_ancestors),
        in_flight: Default::default(),
        job_wakes: Default::default(),
        tls,
    }))
}

/// Serves the API on `listener` until `shutdown` completes. Reconciles once before taking
/// requests, then keeps reconciling (and sweeping) in the background.
///
/// Connections are accepted and limited by [`crate::conn`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match lifecycle::reconcile(&state).await {
        Ok(r) => tracing::info!(
            checked = r.checked,
            failed = r.failed,
            orphans = r.orphans,
            "start-up reconcile done"
        ),
        Err(e) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "start-up reconcile failed")
        }
    }
    // Placement needs the nodes' probes before the first create (ssh).
    state.launcher.maintain().await;
    // The stop signal of the background loops and of every connection: a `watch`, because
    // each of them only asks "has it been set?" (at any time, however late it subscribed),
    // and one send reaches them all. `accept_loop` sets it when shutdown starts.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reconcile = tokio::spawn(lifecycle::reconcile_loop(state.clone(), stop_rx.clone()));
    let upkeep = tokio::spawn(lifecycle::maintain_loop(state.clone(), stop_rx.clone()));
    let sweep = tokio::spawn(lifecycle::sweep_loop(state.clone(), stop_rx.clone()));
    let queued = tokio::spawn(lifecycle::queued_loop(state.clone(), stop_rx.clone()));
    let limits = tokio::spawn(lifecycle::time_limit_loop(state.clone(), stop_rx.clone()));
    // Only a shared store can have other instances (a SQLite file is locked to this one).
    let presence = state.config.store_url.is_shared().then(|| {
        tokio::spawn(crate::presence::presence_loop(
            state.clone(),
            stop_rx.clone(),
        ))
    });
    let gateway = state.gateway.clone();
    let router = routes::router(state.clone());
    crate::conn::accept_loop(listener, &state, router, shutdown, &stop_tx).await;
    let _ = reconcile.await;
    let _ = upkeep.await;
    let _ = sweep.await;
    let _ = queued.await;
    let _ = limits.await;
    if let Some(presence) = presence {
        let _ = presence.await;
    }
    // Audit lines nobody waited for (launch URLs) may still be queued: written before exit.
    if let Err(e) = state.store.flush_audit().await {
        tracing::error!(error = %e, "cannot write the queued audit lines at shutdown");
    }
    // Viewers get a "going away" close frame and reconnect to the next instance.
    gateway
        .registry
        .close_all(hpcdesk_gateway::CloseReason::Shutdown);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

/// What SIGHUP (`systemctl reload`) does: reads the TLS certificate and key again (see
/// [`crate::tls`]) and says what came of it in the log. Without TLS there is nothing to
/// reload. `hpcdesk serve` handles the signal from before it says it is listening, so a
/// reload never ends the server, as SIGHUP would by default.
pub fn reload(state: &AppState) {
    match &state.tls {
        None => tracing::info!("SIGHUP: nothing to reload (no server.tls_cert)"),
        Some(tls) => match tls.reload() {
            Ok(fingerprint) => {
                tracing::info!(%fingerprint, "SIGHUP: TLS certificate reloaded; new connections get it")
            }
            Err(e) => {
                tracing::error!(error = %e, fingerprint = %tls.fingerprint(), "SIGHUP: cannot reload the TLS certificate; the one in use stays")
            }
        },
    }
}
