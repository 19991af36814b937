//! `hpcdesk-bench slurm`: create → running of Slurm desktops, beside the start of the job
//! that carries each one (as root, on the single-node Slurm of `ci/slurm.sh`).
//!
//! Interleaved runs of two servers on the same Slurm: one whose jobs call back when their
//! desktop is ready (`launcher.slurm.ready_url`, the default) and one that only looks
//! (`ready_url = ""`). For each create it takes:
//! - the job's start, precisely: the start time of the job's first process (its batch script,
//!   found by `SLURM_JOB_ID` in its environment; 10 ms resolution), and Slurm's own
//!   `StartTime` (whole seconds, the field `sacct` shows; `sacct` itself needs slurmdbd,
//!   which the test cluster does not run);
//! - when the PUT answered `running`.
//!
//! The gap (answer − job start) is what hpcdesk adds: the desktop's own start inside the job,
//! and the time until hpcdesk knows.

use std::path::PathBuf;
use std::time::Duration;

use crate::median;
use crate::procs::{self, Error};

#[derive(Debug, Clone, clap::Args)]
pub struct SlurmOptions {
    /// The hpcdesk binary to run (release build); copied where the job's user can run it.
    #[arg(long)]
    hpcdesk: PathBuf,
    /// The account desktops run as.
    #[arg(long, default_value = "hdtest")]
    user: String,
    /// Creates per server.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Milliseconds since boot, now (`CLOCK_BOOTTIME`, the clock processes' start times are
/// counted on).
fn boot_ms() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("boot clock");
    t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6
}

/// Milliseconds since the epoch, now.
fn epoch_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e3
}

/// The start of the first process of Slurm job `job` on this machine, in milliseconds since
/// boot (clock ticks: 10 ms).
fn job_process_start(job: u64) -> Option<f64> {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as f64;
    let want = format!("SLURM_JOB_ID={job}");
    let mut first: Option<u64> = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = e.path();
        let Ok(env) = std::fs::read(path.join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Field 22, counted after the command name in parentheses (which may hold spaces).
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if let Some(start) = after
            .split_whitespace()
            .nth(19)
            .and_then(|s| s.parse::<u64>().ok())
        {
            first = Some(first.map_or(start, |f| f.min(start)));
        }
    }
    Some(first? as f64 / tick * 1e3)
}

/// Slurm's `StartTime` of `job` (ms since the epoch, whole seconds).
async fn slurm_start_time(job: u64) -> Option<f64> {
    let out = tokio::process::Command::new("scontrol")
        .args(["show", "job", "-o", &job.to_string()])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("StartTime="))?;
    let t = chrono::NaiveDateTime::parse_from_str(start, "%Y-%m-%dT%H:%M:%S").ok()?;
    let local = t.and_local_timezone(chrono::Local).single()?;
    Some(local.timestamp_millis() as f64)
}

/// One hpcdesk serve on Slurm.
struct Server {
    child: tokio::process::Child,
    vnc: String,
}

async fn serve(
    dir: &std::path::Path,
    agent: &std::path::Path,
    calls: bool,
) -> Result<Server, Error> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let data = dir.join(format!("data-{port}"));
    let mut cmd = tokio::process::Command::new(agent);
    cmd.arg("serve")
        .env("HPCDESK_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("HPCDESK_SERVER__DATA_DIR", &data)
        .env("HPCDESK_AUTH__JWT_SECRET", procs::SECRET)
        .env("HPCDESK_LAUNCHER__KIND", "slurm")
        .env("HPCDESK_LAUNCHER__DEFAULT_DESKTOP", "twm")
        .env("HPCDESK_LAUNCHER__START_TIMEOUT", "120s")
        .env("HPCDESK_LAUNCHER__SLURM__AGENT", agent)
        .env("HPCDESK_LAUNCHER__SLURM__LISTEN", "localhost")
        .env("HPCDESK_LAUNCHER__SLURM__TIME_LIMIT", "10:00")
        .env("HPCDESK_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if !calls {
        cmd.env("HPCDESK_LAUNCHER__SLURM__READY_URL", "");
    }
    let child = cmd.spawn()?;
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if std::time::Instant::now() > until {
            return Err("hpcdesk serve did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Server {
        child,
        vnc: format!("http://127.0.0.1:{port}/hpc/openapi/v2/desktop/vnc"),
    })
}

/// One create on `server`: (answer − job process start, answer − Slurm StartTime), in ms.
async fn one(http: &reqwest::Client, server: &Server, token: &str) -> Result<(f64, f64), Error> {
    let put = boot_ms();
    let v: serde_json::Value = http
        .put(&server.vnc)
        .header("token", token)
        .send()
        .await?
        .json()
        .await?;
    let answered = boot_ms();
    let answered_epoch = epoch_ms();
    let data = &v["data"];
    if data["status"] != "running" {
        return Err(format!("the create did not answer running: {v}").into());
    }
    let id = data["sessionId"].as_str().unwrap_or_default().to_owned();
    // A Slurm session's id ends with its job's number (`slurm--user--SIG--<job>`).
    let job: u64 = id
        .rsplit("--")
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("create: {v}"))?;
    let process = job_process_start(job);
    let slurm = slurm_start_time(job).await;
    // The desktop goes whatever the readings were.
    http.delete(format!("{}/{id}", server.vnc))
        .header("token", token)
        .send()
        .await?;
    let process = process.ok_or_else(|| format!("no process of job {job} found: {v}"))?;
    let slurm = slurm.ok_or_else(|| format!("no StartTime for job {job} from scontrol"))?;
    eprintln!(
        "  job {job}: PUT → running {:.0} ms; the job's first process started {:.0} ms after \
         the PUT, {:.0} ms before the answer; Slurm's StartTime {:.0} ms before the answer",
        answered - put,
        process - put,
        answered - process,
        answered_epoch - slurm
    );
    Ok((answered - process, answered_epoch - slurm))
}

pub async fn run(opts: SlurmOptions) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !nix::unistd::Uid::effective().is_root() {
        return Err("the Slurm benchmark needs root (desktops run as --user)".into());
    }
    let dir = PathBuf::from("/var/tmp").join(format!("hpcdesk-bench-slurm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let agent = dir.join("hpcdesk");
    std::fs::copy(&opts.hpcdesk, &agent)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;
    let result = measure(&opts, &dir, &agent).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(
    opts: &SlurmOptions,
    dir: &std::path::Path,
    agent: &std::path::Path,
) -> Result<(), Error> {
    let mut calling = serve(dir, agent, true).await?;
    let mut looking = serve(dir, agent, false).await?;
    let token = procs::token(&opts.user);
    let http = reqwest::Client::new();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..opts.runs {
        eprintln!("round {}: the job calls back", round + 1);
        with.push(one(&http, &calling, &token).await?);
        eprintln!("round {}: hpcdesk only looks", round + 1);
        without.push(one(&http, &looking, &token).await?);
    }
    calling.child.kill().await?;
    looking.child.kill().await?;
    let col = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    println!();
    println!(
        "Slurm create → running (single-node Slurm, twm desktop), medians of {} interleaved runs",
        opts.runs
    );
    println!();
    println!(
        "| hpcdesk learns of the ready desktop | PUT answered − job's first process start | \
         PUT answered − Slurm StartTime (1 s resolution) |"
    );
    println!("|:--|--:|--:|");
    println!(
        "| the job calls back (`ready_url`, default) | {:.0} ms | {:.0} ms |",
        col(&with, |r| r.0),
        col(&with, |r| r.1)
    );
    println!(
        "| hpcdesk only looks (`ready_url = \"\"`, every 500 ms) | {:.0} ms | {:.0} ms |",
        col(&without, |r| r.0),
        col(&without, |r| r.1)
    );
    println!();
    println!(
        "- gap with the call-back: {:.2} s (target ≤ 0.2 s)",
        col(&with, |r| r.0) / 1e3
    );
    Ok(())
}
