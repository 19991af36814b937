//! Configuration (DESIGN §5): one TOML file, every key overridable from the environment
//! as `HPCDESK_SECTION__KEY`, and defaults that make `hpcdesk serve` with no file at all a
//! working single-machine service.
//!
//! Layering: built-in defaults < the TOML file < environment. Unknown keys are errors, so a
//! typo in an operator's file is reported instead of silently ignored. Secrets are wrapped
//! in [`Secret`] and never printed.
//!
//! Parsed once: [`Config::load`] reads the layers, [`Config::validate`] checks every value
//! and returns [`Settings`], with ids, addresses, the store URL, the sweep time and the
//! public URL already typed, which start-up, the launchers and lifecycle take as they are.
//! An error names the key's path (`launcher.nodes[0].name: …`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use hpcdesk_core::HumanDuration;
use hpcdesk_core::NodeName;
use hpcdesk_launcher::desktops::{DesktopChoice, DesktopName, Desktops, DesktopsError, Geometry};
use hpcdesk_launcher::remote::DesktopSettings;
use hpcdesk_launcher::{NodeSpec, SlurmOptions, SshOptions, policy::Policy};
use hpcdesk_store::StoreUrl;
use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A secret string: `Debug` and `Display` never show it. Home-made rather than `secrecy`'s,
/// because the configuration is compared in tests and serialised (redacted first) by
/// `hpcdesk config`, which `secrecy` deliberately does not allow.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One secret or a list of them (the first signs, all verify: key rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretList {
    One(Secret),
    Many(Vec<Secret>),
}

impl SecretList {
    pub fn to_vec(&self) -> Vec<Secret> {
        match self {
            SecretList::One(s) => vec![s.clone()],
            SecretList::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub launcher: LauncherConfig,
    pub gateway: GatewayConfig,
    pub lifecycle: LifecycleConfig,
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// Public base URL (e.g. `https://hpc.example.org/desktop`); makes launch URLs absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    /// Secret that seals VNC passwords; generated under `data_dir` when unset. Instances that
    /// share one database must share it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A directory whose files are served before the embedded viewer (customisation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_dir: Option<PathBuf>,
    /// Behind a reverse proxy: take the client address from the last `X-Forwarded-For`
    /// entry (the one the proxy added) for rate limits and the audit log.
    pub trust_forwarded_for: bool,
    /// Origins that may show hpcdesk's pages in a frame (CSP `frame-ancestors`), e.g. the
    /// portal's `https://portal.example.org`; none: only hpcdesk's own origin.
    pub frame_ancestors: Vec<String>,
    /// TLS on the listener: a PEM certificate chain (leaf first) and its PEM private key.
    /// Both or neither; read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path`; default `sqlite://<data_dir>/hpcdesk.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    User,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<SecretList>,
    /// What checks the passwords of `POST /ac/openapi/v2/tokens`: hpcdesk's own accounts
    /// (`store`) or the site's through PAM (`pam`, service `pam_service`). With `pam` the
    /// account must still be in hpcdesk's store (its role and organisations), and the
    /// token's `computeUser` is the login name.
    pub password_backend: PasswordBackend,
    pub pam_service: String,
    pub cluster_id: String,
    /// Token `role` value → permission set.
    pub roles: BTreeMap<String, RoleKind>,
    /// Longest `token` header accepted (bytes).
    pub max_token_bytes: usize,
    /// `clusterName` in issued token lists and `name` of the region.
    pub cluster_name: String,
    /// Validity of the tokens hpcdesk issues.
    pub token_ttl: HumanDuration,
    /// How far an AK/SK request's `timestamp` may be from the server's clock.
    pub signature_skew: HumanDuration,
    /// Linux accounts below this uid never run desktops (system accounts).
    pub min_uid: u32,
    /// Linux accounts that never run desktops, whatever their uid.
    pub deny_users: Vec<String>,
    /// When set, only members of one of these groups run desktops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_groups: Option<Vec<String>>,
    /// Renewal stops this long after the login a token descends from.
    pub max_session_age: HumanDuration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordBackend {
    #[default]
    Store,
    Pam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    Local,
    Ssh,
    Slurm,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    pub kind: LauncherKind,
    pub xvnc: String,
    /// One desktop command line, the only desktop offered (older files; prefer
    /// `[[launcher.desktops]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desktop: Option<String>,
    /// The desktops users choose from; default: those installed here (XFCE, MATE, KDE,
    /// Openbox, twm).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub desktops: Vec<DesktopChoice>,
    /// The desktop of a create that names none; default: the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_desktop: Option<DesktopName>,
    /// The screen size of a create that asks for none.
    pub geometry: Geometry,
    pub depth: u8,
    pub start_timeout: HumanDuration,
    /// TLS (VeNCrypt X509Vnc, a certificate per desktop that the gateway pins) between the
    /// gateway and desktops off loopback (`ssh`, `slurm`); off only for VNC servers without it.
    pub vnc_tls: bool,
    /// This node's name in session ids; default: the short host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<NodeName>,
    /// The `hpcdesk` binary run as node agent; default: this binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<PathBuf>,
    pub display_min: u32,
    pub display_max: u32,
    /// The `ssh` launcher.
    pub ssh: SshOptions,
    /// The VNC nodes of the `ssh` launcher.
    pub nodes: Vec<NodeSpec>,
    /// The `slurm` launcher.
    pub slurm: SlurmOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub grant_ttl: HumanDuration,
    /// WebSocket ping interval; a viewer missing two pongs is dropped.
    pub heartbeat: HumanDuration,
    /// How long reaching and authenticating to a desktop may take.
    pub connect_timeout: HumanDuration,
    /// A viewer that takes no data for this long is dropped.
    pub write_timeout: HumanDuration,
    /// Most viewers of one desktop at a time (all instances together).
    pub max_viewers_per_session: u32,
    /// Move the screen from a plain desktop socket to a plain viewer socket with `splice`
    /// instead of copying it through a buffer.
    pub splice: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    pub reconcile_every: HumanDuration,
    pub kill_orphans: bool,
    pub idle_sweep_at: String,
    pub idle_after: HumanDuration,
    /// How long a `local` or `ssh` desktop may live from its creation (unset: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<HumanDuration>,
    /// How much extensions may add to `max_lifetime`, in all.
    pub max_extend: HumanDuration,
    /// The viewer shows the time left from this long before the end (and warns again at
    /// 5 minutes); the desktop gets a notification then too.
    pub warn_before: HumanDuration,
    /// What the viewer's and the portal's Extend button asks for.
    pub extend_by: HumanDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted (bytes); larger → 10012.
    pub max_body_bytes: usize,
    /// Largest total size of request headers (bytes); larger → 10012.
    pub max_header_bytes: usize,
    /// Requests per second one user may make (token `user`), and the burst allowed.
    pub user_per_second: u32,
    pub user_burst: u32,
    /// Requests per second one calling organisation (token `invoker`) may make.
    pub invoker_per_second: u32,
    pub invoker_burst: u32,
    /// Requests per second to the token endpoints from one client address.
    pub peer_per_second: u32,
    pub peer_burst: u32,
    /// Screenshots per second of one desktop (each is a VNC connection and a full frame).
    pub screenshot_per_second: u32,
    pub screenshot_burst: u32,
    /// Failed logins of one user name from one client address within `login_window` that
    /// lock further attempts of that name from there for `login_lockout`.
    pub login_failures: u32,
    /// Failed logins from one client address (any name) that lock that address.
    pub login_failures_per_address: u32,
    /// Failed logins of one name (any address) that lock that name everywhere: high, so
    /// that no one can lock another user out cheaply.
    pub login_failures_per_user: u32,
    pub login_window: HumanDuration,
    pub login_lockout: HumanDuration,
    /// A request's headers, and then its body, must each arrive within this time, or the
    /// connection is closed (slow clients cannot hold the server).
    pub request_timeout: HumanDuration,
    /// Most connections that may be sending a request at one time (all clients together:
    /// behind nginx they share one address). Connections over it are closed at once.
    pub max_incomplete_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:65106".into(),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            secret: None,
            web_dir: None,
            trust_forwarded_for: false,
            frame_ancestors: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            password_backend: PasswordBackend::Store,
            pam_service: "hpcdesk".into(),
            cluster_id: "11112".into(),
            roles: BTreeMap::from([("1".to_owned(), RoleKind::User)]),
            max_token_bytes: 8192,
            cluster_name: "hpcdesk".into(),
            token_ttl: HumanDuration(Duration::from_secs(24 * 3600)),
            signature_skew: HumanDuration(Duration::from_secs(300)),
            min_uid: 1000,
            deny_users: vec!["root".into()],
            allow_groups: None,
            max_session_age: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            kind: LauncherKind::Local,
            xvnc: "Xvnc".into(),
            desktop: None,
            desktops: Vec::new(),
            default_desktop: None,
            geometry: Geometry {
                width: 1920,
                height: 1080,
            },
            depth: 24,
            start_timeout: HumanDuration(Duration::from_secs(30)),
            vnc_tls: true,
            node_name: None,
            agent: None,
            display_min: 1,
            display_max: 99,
            ssh: SshOptions::default(),
            nodes: Vec::new(),
            slurm: SlurmOptions::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            grant_ttl: HumanDuration(Duration::from_secs(600)),
            heartbeat: HumanDuration(Duration::from_secs(30)),
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            write_timeout: HumanDuration(Duration::from_secs(60)),
            max_viewers_per_session: 8,
            splice: false,
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            reconcile_every: HumanDuration(Duration::from_secs(30)),
            kill_orphans: false,
            idle_sweep_at: "01:00".into(),
            idle_after: HumanDuration(Duration::from_secs(24 * 3600)),
            max_lifetime: None,
            max_extend: HumanDuration(Duration::from_secs(8 * 3600)),
            warn_before: HumanDuration(Duration::from_secs(15 * 60)),
            extend_by: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            user_per_second: 20,
            user_burst: 40,
            invoker_per_second: 200,
            invoker_burst: 400,
            peer_per_second: 10,
            peer_burst: 20,
            screenshot_per_second: 1,
            screenshot_burst: 5,
            login_failures: 5,
            login_failures_per_address: 20,
            login_failures_per_user: 100,
            login_window: HumanDuration(Duration::from_secs(15 * 60)),
            login_lockout: HumanDuration(Duration::from_secs(5 * 60)),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            max_incomplete_requests: 1024,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field(
                "url",
                &self.url.as_deref().map(hpcdesk_store::redact_password),
            )
            .finish()
    }
}

const ENV_PREFIX: &str = "HPCDESK_";

fn invalid(origin: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.into(),
        message: message.to_string(),
    }
}

/// Merges `over` into `base`, table by table.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Converts an environment value to the type the default at the same place has, so that
/// `HPCDESK_AUTH__CLUSTER_ID=11112` stays a string and `HPCDESK_LAUNCHER__DEPTH=16` a number.
fn env_value(
    raw: &str,
    like: Option<&toml::Value>,
    origin: &str,
) -> Result<toml::Value, ConfigError> {
    use toml::Value as V;
    let parse_inline = |raw: &str| -> Result<V, ConfigError> {
        let doc: toml::Table = toml::from_str(&format!("v = {raw}"))
            .map_err(|e| invalid(origin, format!("cannot parse {raw:?}: {e}")))?;
        Ok(doc.get("v").cloned().unwrap_or(V::String(raw.to_owned())))
    };
    Ok(match like {
        Some(V::Integer(_)) => V::Integer(
            raw.trim()
                .parse()
                .map_err(|_| invalid(origin, format!("{raw:?} is not an integer")))?,
        ),
        Some(V::Boolean(_)) => V::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(invalid(origin, format!("{raw:?} is not true or false"))),
        }),
        Some(V::Table(_)) | Some(V::Array(_)) => parse_inline(raw)?,
        // Strings, and optional keys without a default: a list when it looks like one.
        _ if raw.trim_start().starts_with('[') => parse_inline(raw)?,
        _ => V::String(raw.to_owned()),
    })
}

fn lookup<'a>(v: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut toml::Value, path: &[String], value: toml::Value) {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        let table = match cur {
            toml::Value::Table(t) => t,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                let toml::Value::Table(t) = other else {
                    unreachable!()
                };
                t
            }
        };
        if i + 1 == path.len() {
            table.insert(k.clone(), value);
            return;
        }
        cur = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
}

impl Config {
    /// Loads defaults < `file` (if any) < the `HPCDESK_SECTION__KEY` variables of `env`, and
    /// validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut value =
            toml::Value::try_from(Config::default()).map_err(|e| invalid("defaults", e))?;
        let defaults = value.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| invalid(path.display().to_string(), e))?;
            merge(&mut value, toml::Value::Table(table));
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        vars.sort();
        for (k, raw) in vars {
            let path: Vec<String> = k[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let like = lookup(&value, &path).or_else(|| lookup(&defaults, &path));
            let v = env_value(&raw, like, &k)?;
            set(&mut value, &path, v);
        }
        // With the path of whatever is wrong (`launcher.nodes[1].name: …`).
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            if path == "." {
                invalid("configuration", message)
            } else {
                invalid(path, message)
            }
        })?;
        config.validate()
    }

    /// See [`Settings::job_ready_url`].
    fn job_ready_url(&self, listen: SocketAddr) -> Result<Option<String>, ConfigError> {
        if self.launcher.kind != LauncherKind::Slurm {
            return Ok(None);
        }
        let base = match &self.launcher.slurm.ready_url {
            Some(url) if url.is_empty() => return Ok(None),
            Some(url) => {
                let uri: axum::http::Uri = url
                    .parse()
                    .map_err(|e| invalid("launcher.slurm.ready_url", format!("{url:?}: {e}")))?;
                let http = matches!(uri.scheme_str(), Some("http" | "https"));
                if !http || uri.host().is_none() || uri.query().is_some() {
                    return Err(invalid(
                        "launcher.slurm.ready_url",
                        format!(
                            "{url:?} must be an absolute http(s) URL without a query, \
                             like http://login1:65106 (or \"\" for none)"
                        ),
                    ));
                }
                url.trim_end_matches('/').to_owned()
            }
            None => {
                let scheme = if self.server.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                let host = match listen.ip() {
                    ip if ip.is_unspecified() => hpcdesk_launcher::agent::short_hostname(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                format!("{scheme}://{host}:{}", listen.port())
            }
        };
        Ok(Some(format!("{base}{}", crate::jobs::READY_PATH)))
    }

    /// Checks what the types alone do not, and parses what start-up, the launchers and
    /// lifecycle take: the one place the configuration is read.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen = self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:65106",
                    self.server.listen
                ),
            )
        })?;
        if self.auth.cluster_id.trim().is_empty() {
            return Err(invalid("auth.cluster_id", "must not be empty"));
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key",
                    "server.tls_cert needs its private key in server.tls_key",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert",
                    "server.tls_key needs its certificate chain in server.tls_cert",
                ));
            }
            _ => {}
        }
        if self.launcher.display_min > self.launcher.display_max {
            return Err(invalid(
                "launcher.display_min",
                "must not be larger than launcher.display_max",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &self.launcher.nodes {
            if !seen.insert(n.name.clone()) {
                return Err(invalid(
                    "launcher.nodes",
                    format!("{} is listed twice", n.name),
                ));
            }
            if n.address.trim().is_empty() || n.address.starts_with('-') {
                return Err(invalid(
                    "launcher.nodes",
                    format!("{}: bad address", n.name),
                ));
            }
        }
        if self.launcher.kind == LauncherKind::Ssh && self.launcher.nodes.is_empty() {
            return Err(invalid(
                "launcher.nodes",
                "launcher.kind = \"ssh\" needs at least one [[launcher.nodes]] entry",
            ));
        }
        if self.launcher.kind == LauncherKind::Ssh && self.launcher.ssh.probe_user.is_none() {
            return Err(invalid(
                "launcher.ssh.probe_user",
                "launcher.kind = \"ssh\" needs the service account that probes the nodes \
                 (one the nodes accept hpcdesk's key for, e.g. \"hpcdesk\")",
            ));
        }
        if self.launcher.ssh.probe_every.0 < Duration::from_secs(1) {
            return Err(invalid("launcher.ssh.probe_every", "must be at least 1s"));
        }
        let public_url = match &self.server.public_url {
            Some(url) => {
                let uri: axum::http::Uri = url
                    .parse()
                    .map_err(|e| invalid("server.public_url", format!("{url:?}: {e}")))?;
                if uri.scheme().is_none() || uri.host().is_none() || uri.query().is_some() {
                    return Err(invalid(
                        "server.public_url",
                        format!("{url:?} must be an absolute http(s) URL without a query"),
                    ));
                }
                Some(PublicUrl {
                    base: url.trim_end_matches('/').to_owned(),
                    path: uri.path().trim_end_matches('/').to_owned(),
                })
            }
            None => None,
        };
        for a in &self.server.frame_ancestors {
            let ok = a == "'self'"
                || a.parse::<axum::http::Uri>()
                    .is_ok_and(|u| u.scheme().is_some() && u.host().is_some() && u.path() == "/");
            if !ok || a.contains([';', ',', ' ', '\'']) && a != "'self'" {
                return Err(invalid(
                    "server.frame_ancestors",
                    format!("{a:?} is not an origin like https://portal.example.org"),
                ));
            }
        }
        let job_ready_url = self.job_ready_url(listen)?;
        let idle_sweep_at = self
            .lifecycle
            .idle_sweep_at
            .parse()
            .map_err(|e| invalid("lifecycle.idle_sweep_at", e))?;
        let l = &self.limits;
        for (key, v) in [
            ("limits.user_per_second", l.user_per_second),
            ("limits.user_burst", l.user_burst),
            ("limits.invoker_per_second", l.invoker_per_second),
            ("limits.invoker_burst", l.invoker_burst),
            ("limits.peer_per_second", l.peer_per_second),
            ("limits.peer_burst", l.peer_burst),
            ("limits.screenshot_per_second", l.screenshot_per_second),
            ("limits.screenshot_burst", l.screenshot_burst),
            ("limits.login_failures", l.login_failures),
            (
                "limits.login_failures_per_address",
                l.login_failures_per_address,
            ),
            ("limits.login_failures_per_user", l.login_failures_per_user),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.gateway.max_viewers_per_session == 0 {
            return Err(invalid(
                "gateway.max_viewers_per_session",
                "must be at least 1",
            ));
        }
        if l.max_incomplete_requests == 0 {
            return Err(invalid(
                "limits.max_incomplete_requests",
                "must be at least 1",
            ));
        }
        if l.request_timeout.0 < Duration::from_secs(1) {
            return Err(invalid("limits.request_timeout", "must be at least 1s"));
        }
        if let Some(SecretList::Many(v)) = &self.auth.jwt_secret
            && v.is_empty()
        {
            return Err(invalid("auth.jwt_secret", "the list must not be empty"));
        }
        let store_url = match &self.store.url {
            Some(url) => url.parse().map_err(|e| invalid("store.url", e))?,
            None => StoreUrl::sqlite_file(&self.server.data_dir.join("hpcdesk.db")),
        };
        let l = &self.launcher;
        let list = match (&l.desktop, l.desktops.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "launcher.desktop",
                    "set either launcher.desktop or [[launcher.desktops]], not both",
                ));
            }
            (Some(command), true) => {
                vec![DesktopChoice::single(command).map_err(|e| invalid("launcher.desktop", e))?]
            }
            (None, false) => l.desktops.clone(),
            (None, true) => hpcdesk_launcher::desktops::installed(
                &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
        };
        let desktops = Desktops::new(list, l.default_desktop.as_ref()).map_err(|e| {
            let key = match e {
                DesktopsError::Twice(_) => "launcher.desktops",
                DesktopsError::NoSuchDefault { .. } => "launcher.default_desktop",
            };
            invalid(key, e)
        })?;
        let desktop = DesktopSettings {
            xvnc: l.xvnc.clone(),
            depth: l.depth,
            display_min: l.display_min,
            display_max: l.display_max,
            start_timeout: l.start_timeout.0,
            tls: l.vnc_tls,
        };
        let policy = Policy {
            min_uid: self.auth.min_uid,
            deny_users: self.auth.deny_users.clone(),
            allow_groups: self.auth.allow_groups.clone(),
        };
        Ok(Settings {
            listen,
            store_url,
            idle_sweep_at,
            public_url,
            desktop,
            desktops,
            policy,
            job_ready_url,
            config: self,
        })
    }

    /// The configuration as TOML with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        let r = || Secret::new("<redacted>");
        if c.server.secret.is_some() {
            c.server.secret = Some(r());
        }
        if let Some(list) = &c.auth.jwt_secret {
            c.auth.jwt_secret = Some(SecretList::Many(
                list.to_vec().iter().map(|_| r()).collect(),
            ));
        }
        if let Some(url) = &c.store.url {
            c.store.url = Some(hpcdesk_store::redact_password(url));
        }
        toml::to_string_pretty(&c).unwrap_or_default()
    }
}

/// A validated configuration: the file's values (through `Deref`), and what validation parsed
/// out of them, typed, which start-up, the launchers and lifecycle take as they are.
#[derive(Debug, Clone)]
pub struct Settings {
    config: Config,
    /// `server.listen`.
    pub listen: SocketAddr,
    /// `store.url`, or the SQLite file in the data directory.
    pub store_url: StoreUrl,
    /// `lifecycle.idle_sweep_at`.
    pub idle_sweep_at: TimeOfDay,
    /// `server.public_url`, when set.
    pub public_url: Option<PublicUrl>,
    /// How desktops are started (the `[launcher]` keys every launcher shares).
    pub desktop: DesktopSettings,
    /// The desktops users choose from (`launcher.desktops`, `default_desktop`).
    pub desktops: Desktops,
    /// Which accounts may run desktops (`auth.min_uid`, `deny_users`, `allow_groups`).
    pub policy: Policy,
    /// The URL a Slurm job calls when its desktop is ready (`launcher.slurm.ready_url` and
    /// [`crate::jobs::READY_PATH`]); `None`: not Slurm, or jobs do not call.
    pub job_ready_url: Option<String>,
}

impl std::ops::Deref for Settings {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Settings {
    /// These settings for a listener bound to `local` (`server.listen` may name port 0):
    /// what derives from the listen address follows the address actually bound.
    pub fn bound_to(mut self, local: SocketAddr) -> Settings {
        self.listen = local;
        if self.config.launcher.slurm.ready_url.is_none() {
            self.job_ready_url = self
                .config
                .job_ready_url(local)
                .expect("a derived URL is valid");
        }
        self
    }

    /// The configuration as written (defaults filled in).
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// `server.public_url`, split the way launch URLs need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// Without a trailing slash: `https://hpc.example.org/desktop`.
    pub base: String,
    /// Its path, without a trailing slash (`/desktop`), or empty.
    pub path: String,
}

/// A time of day, `HH:MM` (24 h), server local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day like 01:00");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let hour: u32 = h.parse().map_err(|_| bad())?;
        let minute: u32 = m.parse().map_err(|_| bad())?;
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

/// The commented example printed by `hpcdesk config example`.
pub const EXAMPLE: &str = include_str!("../hpcdesk.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_and_no_env_gives_the_documented_defaults() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:65106".parse().unwrap());
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert_eq!(c.auth.cluster_id, "11112");
        assert_eq!(c.auth.roles.get("1"), Some(&RoleKind::User));
        assert_eq!(c.launcher.kind, LauncherKind::Local);
        assert_eq!(c.launcher.geometry.to_string(), "1920x1080");
        assert_eq!(c.launcher.start_timeout.0, Duration::from_secs(30));
        assert_eq!(c.gateway.grant_ttl.0, Duration::from_secs(600));
        assert_eq!(c.lifecycle.idle_sweep_at, "01:00");
        assert_eq!(c.lifecycle.idle_after.0, Duration::from_secs(86400));
        assert_eq!(c.store_url.to_string(), "sqlite://./data/hpcdesk.db");
        assert_eq!(c.idle_sweep_at, TimeOfDay { hour: 1, minute: 0 });
    }

    #[test]
    fn env_overrides_the_file_and_keeps_digit_strings_as_strings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:1\"\n[auth]\ncluster_id = \"abc\"\n[auth.roles]\n\"1\" = \"user\"\n\"9\" = \"admin\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("HPCDESK_SERVER__LISTEN", "127.0.0.1:2"),
                ("HPCDESK_AUTH__CLUSTER_ID", "11112"),
                ("HPCDESK_AUTH__JWT_SECRET", "123456"),
                ("HPCDESK_LAUNCHER__DEPTH", "16"),
                ("HPCDESK_LAUNCHER__START_TIMEOUT", "5s"),
                ("HPCDESK_LIFECYCLE__KILL_ORPHANS", "true"),
                ("HPCDESK_SERVER__PUBLIC_URL", "https://hpc.example.org/desk"),
                ("HPCDESK_TOKEN", "not a config key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert_eq!(c.auth.cluster_id, "11112");
        assert_eq!(c.auth.roles.get("9"), Some(&RoleKind::Admin));
        assert_eq!(
            c.auth.jwt_secret.clone().unwrap().to_vec(),
            vec![Secret::new("123456")]
        );
        assert_eq!(c.launcher.depth, 16);
        assert_eq!(c.launcher.start_timeout.0, Duration::from_secs(5));
        assert!(c.lifecycle.kill_orphans);
    }

    #[test]
    fn slurm_jobs_call_back_at_the_listen_address_unless_told_otherwise() {
        let url = |pairs: &[(&str, &str)]| {
            let mut all = vec![("HPCDESK_LAUNCHER__KIND", "slurm")];
            all.extend_from_slice(pairs);
            Config::load(None, env(&all)).map(|c| c.job_ready_url.clone())
        };
        assert_eq!(
            url(&[]).unwrap().as_deref(),
            Some("http://127.0.0.1:65106/hpcdesk/v1/jobs/ready")
        );
        let all = url(&[("HPCDESK_SERVER__LISTEN", "0.0.0.0:8080")])
            .unwrap()
            .unwrap();
        let host = hpcdesk_launcher::agent::short_hostname();
        assert_eq!(all, format!("http://{host}:8080/hpcdesk/v1/jobs/ready"));
        assert_eq!(
            url(&[(
                "HPCDESK_LAUNCHER__SLURM__READY_URL",
                "https://login1.hpc:443/desk/"
            )])
            .unwrap()
            .as_deref(),
            Some("https://login1.hpc:443/desk/hpcdesk/v1/jobs/ready")
        );
        assert_eq!(
            url(&[("HPCDESK_LAUNCHER__SLURM__READY_URL", "")]).unwrap(),
            None
        );
        for bad in ["login1:8080", "ftp://login1", "http://login1/?a=b"] {
            let e = url(&[("HPCDESK_LAUNCHER__SLURM__READY_URL", bad)]).unwrap_err();
            assert!(
                e.to_string().contains("launcher.slurm.ready_url"),
                "{bad}: {e}"
            );
        }
        // Port 0 in server.listen: the URL follows the port actually bound.
        let any = Config::load(
            None,
            env(&[
                ("HPCDESK_LAUNCHER__KIND", "slurm"),
                ("HPCDESK_SERVER__LISTEN", "127.0.0.1:0"),
            ]),
        )
        .unwrap()
        .bound_to("127.0.0.1:40123".parse().unwrap());
        assert_eq!(
            any.job_ready_url.as_deref(),
            Some("http://127.0.0.1:40123/hpcdesk/v1/jobs/ready")
        );
        // Other launchers' desktops start at once: nothing to call.
        let local = Config::load(None, env(&[])).unwrap();
        assert_eq!(local.job_ready_url, None);
    }

    #[test]
    fn a_list_of_jwt_secrets_is_accepted_for_rotation() {
        let c = Config::load(
            None,
            env(&[("HPCDESK_AUTH__JWT_SECRET", "[\"new\", \"old\"]")]),
        )
        .unwrap();
        assert_eq!(c.auth.jwt_secret.clone().unwrap().to_vec().len(), 2);
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        let t = |s: &str| s.parse::<TimeOfDay>();
        assert_eq!(t("01:00"), Ok(TimeOfDay { hour: 1, minute: 0 }));
        assert_eq!(
            t("23:59"),
            Ok(TimeOfDay {
                hour: 23,
                minute: 59
            })
        );
        for bad in ["24:00", "1", "aa:bb", "12:60"] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mistakes_are_reported_with_the_key() {
        let e = Config::load(None, env(&[("HPCDESK_SERVER__LISTNE", "x")])).unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let e =
            Config::load(None, env(&[("HPCDESK_LAUNCHER__START_TIMEOUT", "soon")])).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = Config::load(None, env(&[("HPCDESK_SERVER__LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e = Config::load(None, env(&[("HPCDESK_LAUNCHER__NODE_NAME", "a--b")])).unwrap_err();
        assert!(e.to_string().contains("node_name"), "{e}");
    }

    #[test]
    fn redacted_output_never_shows_secrets() {
        let c = Config::load(
            None,
            env(&[
                ("HPCDESK_AUTH__JWT_SECRET", "topsecret-jwt"),
                ("HPCDESK_SERVER__SECRET", "topsecret-server"),
                ("HPCDESK_STORE__URL", "postgres://u:topsecret-db@h/db"),
            ]),
        )
        .unwrap();
        let text = c.redacted_toml();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn desktops_are_read_checked_and_refused_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let f = dir.path().join("d.toml");
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), env(&[]))
        };
        let two = r#"
[launcher]
default_desktop = "twm"
[[launcher.desktops]]
name = "xfce"
title = "XFCE"
command = "xfce4-session"
[[launcher.desktops]]
name = "twm"
title = "twm"
command = ["twm", "xterm -e top"]
"#;
        let s = load(two).unwrap();
        assert_eq!(s.desktops.list().len(), 2);
        assert_eq!(s.desktops.default_choice().unwrap().name.as_str(), "twm");
        let err = |text: &str| load(text).unwrap_err().to_string();
        let e = err(&two.replace("\"twm\"\ntitle", "\"xfce\"\ntitle"));
        assert!(
            e.contains("launcher.desktops") && e.contains("twice"),
            "{e}"
        );
        let e = err(&two.replace("default_desktop = \"twm\"", "default_desktop = \"kde\""));
        assert!(
            e.contains("launcher.default_desktop") && e.contains("xfce, twm"),
            "{e}"
        );
        let e = err(&two.replace("[launcher]", "[launcher]\ndesktop = \"twm\""));
        assert!(
            e.contains("launcher.desktop") && e.contains("not both"),
            "{e}"
        );
        let e = err(&two.replace("name = \"xfce\"", "name = \"X F\""));
        assert!(e.contains("launcher.desktops[0].name"), "{e}");
        let e = err(&two.replace("command = \"xfce4-session\"", "command = []"));
        assert!(e.contains("launcher.desktops[0].command"), "{e}");
        let e = err("[launcher]\ngeometry = \"big\"");
        assert!(
            e.contains("launcher.geometry") && e.contains("WIDTHxHEIGHT"),
            "{e}"
        );
        let one = load("[launcher]\ndesktop = \"xterm -e top\"").unwrap();
        assert_eq!(one.desktops.list()[0].name.as_str(), "default");
        assert_eq!(one.desktops.list()[0].command, ["xterm -e top"]);
    }

    #[test]
    fn the_example_file_is_a_valid_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("example.toml");
        std::fs::write(&f, EXAMPLE).unwrap();
        Config::load(Some(&f), env(&[])).unwrap();
    }
}
