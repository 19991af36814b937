//! `hpcdesk-bench api`: requests per second and latency of `launchurl` and `list` at 64
//! concurrent clients, against a trivial axum handler in the same process (the framework
//! ceiling); and `hpcdesk-bench create`: create → ready with the real local launcher against
//! Xvnc's own start time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpStream;

use crate::median;
use crate::procs::{self, Error};

#[derive(Debug, Clone, clap::Args)]
pub struct ApiOptions {
    /// Concurrent clients (each one keep-alive connection).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per measurement (one case's turn in a round).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Rounds, each measuring every case in turn.
    #[arg(long, default_value_t = 15)]
    reps: usize,
    /// Leave out the server's log. By default it logs as `hpcdesk serve` does (a line per
    /// request at `info`), to a file, as the journal or a redirected stderr would take it.
    #[arg(long)]
    no_log: bool,
}

struct Load {
    per_second: f64,
    /// The server process's CPU time per request (µs), from /proc: steadier than
    /// throughput on this noisy machine, and blind to the load generator's own share.
    server_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// `clients` connections sending `GET path` (with `token`) for `secs`, to the server process
/// `server`.
async fn load(
    server: u32,
    addr: &str,
    path: &str,
    token: Option<&str>,
    clients: usize,
    secs: f64,
) -> Result<Load, Error> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let path = path.to_owned();
        let host = hyper::header::HeaderValue::from_str(addr).map_err(|e| e.to_string())?;
        // Parsed once: every request carries a copy of the same header value.
        let token = token
            .map(hyper::header::HeaderValue::from_str)
            .transpose()
            .map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let mut req = hyper::Request::get(&path).header("host", host.clone());
                if let Some(t) = &token {
                    req = req.header("token", t.clone());
                }
                let req = req.body(Empty::<Bytes>::new()).expect("request");
                let t0 = Instant::now();
                let ok = match send.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(b) => {
                                let body = b.to_bytes();
                                status.is_success()
                                    && (body.as_ref() == b"pong"
                                        || body.windows(10).any(|w| w == b"\"code\":\"0\""))
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => break,
                };
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                if !ok {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let start = Instant::now();
    let cpu0 = procs::cpu_seconds(server);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64().max(secs);
    let cpu = procs::cpu_seconds(server) - cpu0;
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Load {
        per_second: all.len() as f64 / elapsed,
        server_us: cpu * 1e6 / all.len().max(1) as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
    })
}

pub async fn api(opts: ApiOptions) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    let data = std::env::temp_dir().join(format!("hpcdesk-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    // A session to ask launch URLs for; its "desktop" is a port nobody needs to answer.
    let mut args: Vec<String> = vec![
        "hpcdesk".into(),
        "--data".into(),
        data.display().to_string(),
        "--map".into(),
        "bench_api=5999".into(),
    ];
    let log_file = data.join("server.log");
    let stderr = if opts.no_log {
        std::process::Stdio::null()
    } else {
        args.push("--log".into());
        std::fs::File::create(&log_file)?.into()
    };
    let hpcdesk = procs::spawn_with(&me, &args, None, stderr, None).await?;
    let mut addrs = hpcdesk.ready.split_whitespace();
    let api_addr = addrs.next().ok_or("no API address")?.to_owned();
    let ping_addr = addrs.next().ok_or("no trivial address")?.to_owned();
    let token = procs::token("bench_api");
    let created: serde_json::Value = reqwest::Client::new()
        .put(format!("http://{api_addr}/hpc/openapi/v2/desktop/vnc"))
        .header("token", &token)
        .send()
        .await?
        .json()
        .await?;
    let id = created["data"]["sessionId"]
        .as_str()
        .ok_or_else(|| format!("create: {created}"))?
        .to_owned();
    let token = Arc::new(token);

    let cases = [
        (
            "trivial axum handler (ceiling)",
            ping_addr.clone(),
            "/ping".to_owned(),
            // The same request as the API calls', token header included: the ceiling is what
            // the framework does with a request of that size, not with a smaller one.
            Some(token.clone()),
        ),
        (
            "GET …/desktop/vnc (list)",
            api_addr.clone(),
            "/hpc/openapi/v2/desktop/vnc".into(),
            Some(token.clone()),
        ),
        (
            "GET …/{id}/launchurl",
            api_addr.clone(),
            format!("/hpc/openapi/v2/desktop/vnc/{id}/launchurl"),
            Some(token.clone()),
        ),
    ];
    eprintln!(
        "hpcdesk API benchmark: {} clients, {} s per run, median of {}, server log {}",
        opts.clients,
        opts.seconds,
        opts.reps,
        if opts.no_log {
            "left out"
        } else {
            "on (as hpcdesk serve)"
        }
    );
    // Rounds of every case in turn, so that each ratio compares runs made moments apart on
    // this noisy machine: short turns (the machine's speed drifts over seconds), in the
    // opposite order every other round (so that a drift favours no case). The table shows
    // medians, the ratio being the median of the rounds'.
    let mut runs: Vec<Vec<Load>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..opts.reps {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, addr, path, tok) = &cases[i];
            let l = load(
                hpcdesk.pid as u32,
                addr,
                path,
                tok.as_deref().map(String::as_str),
                opts.clients,
                opts.seconds,
            )
            .await?;
            eprintln!(
                "  {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, server {:.1} µs CPU/req",
                l.per_second, l.p50_ms, l.p99_ms, l.errors, l.server_us
            );
            runs[i].push(l);
        }
    }
    println!();
    println!(
        "| {:<32} | {:>8} | {:>8} | {:>8} | {:>6} | {:>10} | {:>13} |",
        "", "req/s", "p50 ms", "p99 ms", "errors", "÷ ceiling", "server µs/req"
    );
    println!(
        "|:{}|{}:|{}:|{}:|{}:|{}:|{}:|",
        "-".repeat(33),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(7),
        "-".repeat(11),
        "-".repeat(14)
    );
    for (i, (name, ..)) in cases.iter().enumerate() {
        let r = &runs[i];
        let ratio = median(
            r.iter()
                .zip(&runs[0])
                .map(|(l, c)| l.per_second / c.per_second)
                .collect(),
        );
        println!(
            "| {name:<32} | {:>8.0} | {:>8.2} | {:>8.2} | {:>6} | {ratio:>9.2}× | {:>13.0} |",
            median(r.iter().map(|l| l.per_second).collect()),
            median(r.iter().map(|l| l.p50_ms).collect()),
            median(r.iter().map(|l| l.p99_ms).collect()),
            r.iter().map(|l| l.errors).sum::<usize>(),
            median(r.iter().map(|l| l.server_us).collect()),
        );
    }
    drop(hpcdesk);
    if !opts.no_log {
        // Proof that the server did log: the lines it wrote during the run.
        let lines =
            std::fs::read(&log_file).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        println!();
        println!(
            "The server logged {lines} lines (as `hpcdesk serve` at info; --no-log leaves them out)."
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateOptions {
    /// The hpcdesk binary to run (release build).
    #[arg(long)]
    hpcdesk: PathBuf,
    /// The account desktops run as (the benchmark must run as root).
    #[arg(long, default_value = "hdtest")]
    user: String,
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

/// Waits until `port` on loopback accepts a connection.
async fn port_open(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    false
}

pub async fn create(opts: CreateOptions) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !nix::unistd::Uid::effective().is_root() {
        return Err("create → ready needs root (desktops run as --user)".into());
    }
    // Xvnc's own start time: exec → port open, same geometry, no desktop.
    let mut xvnc_ms = Vec::new();
    for i in 0..opts.runs {
        let display = 90 + i as u16 % 5;
        let port = 5900 + display;
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new("Xvnc")
            .args([
                &format!(":{display}"),
                "-rfbport",
                &port.to_string(),
                "-localhost",
                "-SecurityTypes",
                "None",
                "-geometry",
                "1920x1080",
                "-nolisten",
                "tcp",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        if !port_open(port, Duration::from_secs(10)).await {
            return Err("Xvnc did not open its port".into());
        }
        xvnc_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        child.kill().await?;
        let _ = child.wait().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // hpcdesk: PUT until the desktop answers RFB (local launcher, twm + xterm).
    let dir =
        PathBuf::from("/var/tmp").join(format!("hpcdesk-bench-create-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let agent = dir.join("hpcdesk");
    std::fs::copy(&opts.hpcdesk, &agent)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut server = tokio::process::Command::new(&agent)
        .arg("serve")
        .env("HPCDESK_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("HPCDESK_SERVER__DATA_DIR", dir.join("data"))
        .env("HPCDESK_AUTH__JWT_SECRET", procs::SECRET)
        .env("HPCDESK_LAUNCHER__NODE_NAME", "benchnode")
        .env("HPCDESK_LAUNCHER__DISPLAY_MIN", "60")
        .env("HPCDESK_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if !port_open(port, Duration::from_secs(10)).await {
        return Err("hpcdesk serve did not start".into());
    }
    let token = procs::token(&opts.user);
    let http = reqwest::Client::new();
    let vnc = format!("http://127.0.0.1:{port}/hpc/openapi/v2/desktop/vnc");
    let mut create_ms = Vec::new();
    for _ in 0..opts.runs {
        let t0 = Instant::now();
        let v: serde_json::Value = http
            .put(&vnc)
            .header("token", &token)
            .send()
            .await?
            .json()
            .await?;
        let display = v["data"]["displayNumber"]
            .as_u64()
            .ok_or_else(|| format!("create: {v}"))?;
        let port = 5900 + display as u16;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut banner = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut banner).await?;
        create_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let id = v["data"]["sessionId"].as_str().unwrap_or_default();
        http.delete(format!("{vnc}/{id}"))
            .header("token", &token)
            .send()
            .await?;
    }
    server.kill().await?;
    let _ = std::fs::remove_dir_all(&dir);
    let (x, c) = (median(xvnc_ms.clone()), median(create_ms.clone()));
    eprintln!("  Xvnc exec → port open (ms): {xvnc_ms:.1?}");
    eprintln!("  hpcdesk PUT → RFB answers (ms): {create_ms:.1?}");
    println!();
    println!("| create → ready, p50 of {} | ms |", opts.runs);
    println!("|:--|--:|");
    println!("| Xvnc's own start (exec → port open) | {x:.1} |");
    println!(
        "| hpcdesk create (PUT → desktop answers RFB, X usable, twm + xterm started) | {c:.1} |"
    );
    println!("| ratio | {:.2}× |", c / x);
    Ok(())
}
