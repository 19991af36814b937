//! Admin commands on the store `serve` uses (same config and environment): accounts, orgs,
//! access keys and the audit log. They work whether or not `serve` is running.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use hpcdesk_core::wire::local_time;
use hpcdesk_server::Config;
use hpcdesk_server::config::{RoleKind, Settings};
use hpcdesk_store::{AccessKeyRecord, AuditFilter, OrgRecord, Store, UserRecord};

/// The store, beside a `serve` that may be running (no lock, no session cache).
async fn open(config: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if config.store.url.is_none() {
        hpcdesk_server::startup::ensure_data_dir(config)?;
    }
    hpcdesk_store::open(&config.store_url, hpcdesk_store::Access::Admin)
        .await
        .with_context(|| "cannot open the store")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Reads a password from stdin (first line).
fn password_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .context("cannot read the password from stdin")?;
    let pw = text.lines().next().unwrap_or("").to_owned();
    if pw.is_empty() {
        bail!("no password on stdin");
    }
    Ok(pw)
}

/// `user`/`admin`, or a role claim value, to the claim value stored for the account.
fn role_claim(config: &Config, role: &str) -> anyhow::Result<String> {
    let kind = match role {
        "user" => Some(RoleKind::User),
        "admin" => Some(RoleKind::Admin),
        _ => None,
    };
    if let Some(kind) = kind {
        return config
            .auth
            .roles
            .iter()
            .find(|(_, k)| **k == kind)
            .map(|(claim, _)| claim.clone())
            .with_context(|| format!("no role in auth.roles is mapped to {role:?}"));
    }
    if config.auth.roles.contains_key(role) {
        return Ok(role.to_owned());
    }
    bail!("role {role:?} is neither user, admin nor a key of auth.roles")
}

fn random_digits(n: usize) -> String {
    (0..n)
        .map(|i| {
            let d = rand::random::<u8>() % 10;
            char::from(b'0' + if i == 0 { d % 9 + 1 } else { d })
        })
        .collect()
}

fn random_alnum(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let b = rand::random::<u8>();
        if usize::from(b) < 256 - 256 % A.len() {
            out.push(char::from(A[usize::from(b) % A.len()]));
        }
    }
    out
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add an account; the password is read from stdin.
    Add {
        name: String,
        /// The Linux account its desktops run as.
        #[arg(long)]
        compute_user: String,
        /// `user`, `admin`, or a role claim value listed in auth.roles.
        #[arg(long, default_value = "user")]
        role: String,
        /// accountStatus: Normal, Trial, Owe or Disable.
        #[arg(long, default_value = "Normal")]
        status: String,
        /// Home directory shown by /ac/openapi/v2/center (default: the compute user's).
        #[arg(long)]
        home: Option<String>,
        /// Read the password from stdin (required: passwords never go in argv).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Suspend an account: its tokens stop working and new ones come back null.
    Disable { name: String },
    /// Lift a suspension (accountStatus Normal).
    Enable { name: String },
    /// Set a new password, read from stdin.
    Passwd { name: String },
}

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Register an organisation (orgId) allowed to request tokens.
    Add {
        org_id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create an access key for a user; prints the secret key once.
    Create {
        user: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        access_key: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this platform user.
    #[arg(long)]
    user: Option<String>,
    /// Only since this long ago (e.g. 24h) or this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At most this many lines (the newest).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

pub fn user(file: Option<&Path>, cmd: UserCmd) -> anyhow::Result<ExitCode> {
    let config = super::load_config(file)?;
    let password = match &cmd {
        UserCmd::Add { .. } | UserCmd::Passwd { .. } => Some(password_from_stdin()?),
        _ => None,
    };
    runtime()?.block_on(async {
        let store = open(&config).await?;
        let now = Utc::now();
        match cmd {
            UserCmd::Add {
                name,
                compute_user,
                role,
                status,
                home,
                ..
            } => {
                if name.trim().is_empty() || name.len() > 64 || name.contains(char::is_whitespace) {
                    bail!("a user name is 1 to 64 characters without spaces");
                }
                let compute_user = hpcdesk_core::ComputeUser::parse(&compute_user)?;
                if hpcdesk_core::AccountStatus::parse(&status).is_none() {
                    bail!("--status must be Normal, Trial, Owe or Disable");
                }
                let hash = hpcdesk_server::passwords::hash(password.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)?;
                store
                    .add_user(UserRecord {
                        name: name.clone(),
                        user_id: random_digits(11),
                        password_hash: hash,
                        compute_user,
                        role: role_claim(&config, &role)?,
                        account_status: status,
                        home_path: home.unwrap_or_default(),
                        created_at: now,
                        updated_at: now,
                        tokens_valid_after: None,
                    })
                    .await?;
                println!("added user {name}");
            }
            UserCmd::List { json } => {
                let users = store.list_users().await?;
                if json {
                    let v: Vec<_> = users
                        .iter()
                        .map(|u| {
                            serde_json::json!({
                                "name": u.name, "userId": u.user_id,
                                "computeUser": u.compute_user.as_str(), "role": u.role,
                                "accountStatus": u.account_status, "homePath": u.home_path,
                                "createTime": local_time(u.created_at),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else {
                    let rows: Vec<Vec<String>> = users
                        .iter()
                        .map(|u| {
                            vec![
                                u.name.clone(),
                                u.compute_user.to_string(),
                                u.role.clone(),
                                u.account_status.clone(),
                                u.user_id.clone(),
                                local_time(u.created_at),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        super::table(
                            &[
                                "USER",
                                "COMPUTE USER",
                                "ROLE",
                                "STATUS",
                                "USER ID",
                                "CREATED"
                            ],
                            &rows
                        )
                    );
                }
            }
            UserCmd::Disable { name } => {
                store.set_user_status(&name, "Disable", now).await?;
                println!("disabled user {name}");
            }
            UserCmd::Enable { name } => {
                store.set_user_status(&name, "Normal", now).await?;
                println!("enabled user {name}");
            }
            UserCmd::Passwd { name } => {
                let hash = hpcdesk_server::passwords::hash(password.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)?;
                store.set_user_password(&name, &hash, now).await?;
                println!("password of {name} changed");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn org(file: Option<&Path>, cmd: OrgCmd) -> anyhow::Result<ExitCode> {
    let config = super::load_config(file)?;
    runtime()?.block_on(async {
        let store = open(&config).await?;
        match cmd {
            OrgCmd::Add { org_id, name } => {
                if org_id.trim().is_empty() || org_id.len() > 128 {
                    bail!("an orgId is 1 to 128 characters");
                }
                store
                    .add_org(OrgRecord {
                        org_id: org_id.clone(),
                        name,
                        created_at: Utc::now(),
                    })
                    .await?;
                println!("added org {org_id}");
            }
            OrgCmd::List { json } => {
                let orgs = store.list_orgs().await?;
                if json {
                    let v: Vec<_> = orgs
                        .iter()
                        .map(|o| serde_json::json!({"orgId": o.org_id, "name": o.name, "createTime": local_time(o.created_at)}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else {
                    let rows: Vec<Vec<String>> = orgs
                        .iter()
                        .map(|o| vec![o.org_id.clone(), o.name.clone(), local_time(o.created_at)])
                        .collect();
                    println!("{}", super::table(&["ORG ID", "NAME", "CREATED"], &rows));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn key(file: Option<&Path>, cmd: KeyCmd) -> anyhow::Result<ExitCode> {
    let config = super::load_config(file)?;
    runtime()?.block_on(async {
        let store = open(&config).await?;
        match cmd {
            KeyCmd::Create { user, json } => {
                if store.user(&user).await?.is_none() {
                    bail!("user {user} does not exist");
                }
                let access_key = random_alnum(24);
                let secret_key = random_alnum(40);
                let sealed = hpcdesk_server::startup::server_key(&config)?
                    .seal_at_rest(secret_key.as_bytes());
                store
                    .add_access_key(AccessKeyRecord {
                        access_key: access_key.clone(),
                        user_name: user.clone(),
                        secret_sealed: sealed,
                        created_at: Utc::now(),
                        revoked_at: None,
                    })
                    .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"accessKey": access_key, "secretKey": secret_key})
                    );
                } else {
                    println!("access key: {access_key}\nsecret key: {secret_key}");
                    eprintln!("The secret key is shown only now; hpcdesk keeps it sealed.");
                }
            }
            KeyCmd::List { json } => {
                let keys = store.list_access_keys().await?;
                let state = |k: &AccessKeyRecord| match k.revoked_at {
                    Some(t) => format!("revoked {}", local_time(t)),
                    None => "active".to_owned(),
                };
                if json {
                    let v: Vec<_> = keys
                        .iter()
                        .map(|k| serde_json::json!({"accessKey": k.access_key, "user": k.user_name, "createTime": local_time(k.created_at), "state": state(k)}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else {
                    let rows: Vec<Vec<String>> = keys
                        .iter()
                        .map(|k| vec![k.access_key.clone(), k.user_name.clone(), local_time(k.created_at), state(k)])
                        .collect();
                    println!("{}", super::table(&["ACCESS KEY", "USER", "CREATED", "STATE"], &rows));
                }
            }
            KeyCmd::Revoke { access_key } => {
                store.revoke_access_key(&access_key, Utc::now()).await?;
                println!("revoked {access_key}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn audit(file: Option<&Path>, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(file)?;
    let since = match args.since.as_deref() {
        None => None,
        Some(s) => Some(match humantime::parse_duration(s) {
            Ok(d) => Utc::now() - chrono::Duration::from_std(d)?,
            Err(_) => DateTime::parse_from_rfc3339(s)
                .with_context(|| {
                    format!("--since {s:?} is neither a duration (24h) nor a time (RFC 3339)")
                })?
                .with_timezone(&Utc),
        }),
    };
    runtime()?.block_on(async {
        let store = open(&config).await?;
        let events = store
            .audit(AuditFilter {
                user: args.user,
                since,
                limit: args.limit,
            })
            .await?;
        if args.json {
            let v: Vec<_> = events
                .iter()
                .map(|e| serde_json::json!({"time": local_time(e.at), "kind": e.kind, "user": e.user, "sessionId": e.session_id, "peer": e.peer, "detail": e.detail}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        } else {
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        local_time(e.at),
                        e.kind.clone(),
                        e.user.clone(),
                        e.session_id.clone(),
                        e.peer.clone(),
                        e.detail.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                super::table(&["TIME", "EVENT", "USER", "SESSION", "PEER", "DETAIL"], &rows)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
