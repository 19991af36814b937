//! `hpcdesk desktop create|list|desktops|url|extend|delete`: a client of a running hpcdesk (or of any
//! SCNet-compatible desktop API). Human tables by default, `--json` for scripts.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hpcdesk_core::wire::{DesktopEntry, LaunchUrl, SessionItem};
use hpcdesk_core::{ApiCode, Envelope};
use serde::de::DeserializeOwned;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the API.
    #[arg(long, env = "HPCDESK_API", default_value = "http://127.0.0.1:65106")]
    api: String,
    /// The SCNet token (see `hpcdesk token`).
    #[arg(long, env = "HPCDESK_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the server's JSON envelope instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create your desktop (or show the one you have).
    Create {
        /// Which desktop (a name from `hpcdesk desktop desktops`); default: the site's.
        #[arg(long)]
        desktop: Option<String>,
        /// Screen size, WIDTHxHEIGHT (e.g. 1920x1080); default: the site's.
        #[arg(long)]
        geometry: Option<String>,
    },
    /// List the desktops this site offers.
    Desktops,
    /// List your desktops (all of them for an admin).
    List,
    /// Print a launch URL for a desktop.
    Url { session_id: String },
    /// Stop a desktop.
    Delete { session_id: String },
    /// Move a desktop's time limit (e.g. `extend <id> 1h`), within the site's limits.
    Extend { session_id: String, by: String },
}

/// `hpcdesk sweep` / `hpcdesk nodes`: an admin call to a running server.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    #[arg(long, env = "HPCDESK_API", default_value = "http://127.0.0.1:65106")]
    api: String,
    /// A token whose role is mapped to `admin`.
    #[arg(long, env = "HPCDESK_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    json: bool,
}

/// An API answer: the raw body, and the data or the failure's (code, msg).
type Answer<T> = (String, Result<T, (String, String)>);

/// Runs one admin call against a running server.
fn admin_call(
    args: &SweepArgs,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<Answer<serde_json::Value>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client {
            http: reqwest::Client::new(),
            api: args.api.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        };
        client.call_url(method, path, None).await
    })
}

/// Prints an admin call's outcome: the raw JSON with `--json`, else `human(data)`.
fn finish_admin(
    json: bool,
    raw: String,
    r: Result<serde_json::Value, (String, String)>,
    human: impl FnOnce(&serde_json::Value) -> String,
) -> ExitCode {
    if json {
        println!("{raw}");
    }
    match r {
        Ok(data) => {
            if !json {
                println!("{}", human(&data));
            }
            ExitCode::SUCCESS
        }
        Err((code, msg)) => {
            if !json {
                eprintln!("hpcdesk: error {code}: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

pub fn sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let (raw, r) = admin_call(&args, reqwest::Method::POST, "/hpcdesk/v1/sweep")?;
    Ok(finish_admin(args.json, raw, r, |report| {
        let swept: Vec<&str> = report["swept"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        format!(
            "checked {} sessions, {} in use, swept {}{}",
            report["checked"],
            report["inUse"],
            swept.len(),
            if swept.is_empty() {
                String::new()
            } else {
                format!(": {}", swept.join(", "))
            }
        )
    }))
}

/// `hpcdesk nodes`: every node's probe and sessions (needs an admin token).
pub fn nodes(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let (raw, r) = admin_call(&args, reqwest::Method::GET, "/hpcdesk/v1/nodes")?;
    Ok(finish_admin(args.json, raw, r, |data| {
        let s = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = data
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|n| {
                vec![
                    s(&n["name"]),
                    s(&n["address"]),
                    if n["accepting"] == true {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    s(&n["load1"]),
                    s(&n["cores"]),
                    s(&n["memAvailableMiB"]),
                    s(&n["desktops"]),
                    s(&n["sessions"]),
                    s(&n["reason"]),
                ]
            })
            .collect();
        super::table(
            &[
                "NODE", "ADDRESS", "ACCEPTS", "LOAD", "CORES", "FREE MiB", "DESKTOPS", "SESSIONS",
                "REASON",
            ],
            &rows,
        )
    }))
}

struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Client {
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<Answer<T>> {
        self.call_url(method, &format!("/hpc/openapi/v2/desktop/vnc{path}"), None)
            .await
    }

    /// Calls `path` with `body` (JSON) if there is one.
    async fn call_url<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer<T>> {
        let url = format!("{}{path}", self.api);
        let mut req = self.http.request(method, &url).header("token", &self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.api))?;
        let status = resp.status();
        let body = resp.text().await.context("cannot read the response")?;
        let env: Envelope<serde_json::Value> = serde_json::from_str(&body).with_context(|| {
            format!("the server answered HTTP {status} with something that is not an API envelope: {body:.200}")
        })?;
        if env.code != ApiCode::Success.as_str() {
            return Ok((body, Err((env.code, env.msg))));
        }
        let data = serde_json::from_value(env.data).context("unexpected data in the answer")?;
        Ok((body, Ok(data)))
    }
}

fn table(items: &[SessionItem]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            vec![
                s.session_id.clone(),
                s.status.clone(),
                s.desktop.clone(),
                s.geometry.clone(),
                s.host_name.clone(),
                format!(":{}", s.display_number),
                s.user_name.clone(),
                s.connections.to_string(),
                s.create_time.clone(),
                if s.end_time.is_empty() {
                    "-".to_owned()
                } else {
                    s.end_time.clone()
                },
                s.status_reason.clone(),
            ]
        })
        .collect();
    super::table(
        &[
            "SESSION", "STATUS", "DESKTOP", "SCREEN", "HOST", "DISPLAY", "USER", "CONN", "CREATED",
            "ENDS", "REASON",
        ],
        &rows,
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // reqwest is built without a default crypto provider; pick ring (ignore "already set").
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client {
        http: reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?,
        api: args.api.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let json = args.json;
    let finish = |raw: String, human: Result<String, (String, String)>| {
        let failed = human.is_err();
        if json {
            println!("{raw}");
        } else {
            match human {
                Ok(text) => println!("{text}"),
                Err((code, msg)) => eprintln!("hpcdesk: error {code}: {msg}"),
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    };
    Ok(match args.action {
        Action::Create { desktop, geometry } => {
            let mut options = serde_json::Map::new();
            if let Some(d) = desktop {
                options.insert("desktop".into(), d.into());
            }
            if let Some(g) = geometry {
                options.insert("geometry".into(), g.into());
            }
            let (raw, r) = client
                .call_url::<SessionItem>(
                    reqwest::Method::PUT,
                    "/hpc/openapi/v2/desktop/vnc",
                    Some(options.into()),
                )
                .await?;
            finish(raw, r.map(|s| table(&[s])))
        }
        Action::Desktops => {
            let (raw, r) = client
                .call_url::<Vec<DesktopEntry>>(reqwest::Method::GET, "/hpcdesk/v1/desktops", None)
                .await?;
            finish(
                raw,
                r.map(|list| {
                    let rows: Vec<Vec<String>> = list
                        .into_iter()
                        .map(|d| {
                            let mark = if d.default { "yes" } else { "" };
                            vec![d.name, d.title, mark.to_owned()]
                        })
                        .collect();
                    super::table(&["NAME", "TITLE", "DEFAULT"], &rows)
                }),
            )
        }
        Action::List => {
            let (raw, r) = client
                .call::<Vec<SessionItem>>(reqwest::Method::GET, "")
                .await?;
            finish(raw, r.map(|v| table(&v)))
        }
        Action::Url { session_id } => {
            let (raw, r) = client
                .call::<LaunchUrl>(reqwest::Method::GET, &format!("/{session_id}/launchurl"))
                .await?;
            let api = client.api.clone();
            finish(
                raw,
                r.map(|u| {
                    if u.with_domain {
                        u.novnc_url
                    } else {
                        format!("{api}{}", u.novnc_url)
                    }
                }),
            )
        }
        Action::Extend { session_id, by } => {
            let (raw, r) = client
                .call_url::<SessionItem>(
                    reqwest::Method::POST,
                    &format!("/hpcdesk/v1/desktop/vnc/{session_id}/extend"),
                    Some(serde_json::json!({ "by": by })),
                )
                .await?;
            finish(raw, r.map(|s| table(&[s])))
        }
        Action::Delete { session_id } => {
            let (raw, r) = client
                .call::<serde_json::Value>(reqwest::Method::DELETE, &format!("/{session_id}"))
                .await?;
            finish(raw, r.map(|_| format!("deleted {session_id}")))
        }
    })
}
