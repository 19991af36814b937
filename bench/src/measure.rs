//! The measurements of one run, and the report with ratios.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::client::{Conn, Target, open};
use crate::median;
use crate::procs::{self, Child, Error};
use crate::servers::{self, CHUNK, Servers};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Concurrent-connection counts to try.
    /// (10 000 viewers need 20 000 sockets in a gateway: more than a process may open where
    /// the hard RLIMIT_NOFILE is 20 000, as on the project's CI machines.)
    #[arg(long, value_delimiter = ',', default_value = "1000,9900")]
    conns: Vec<usize>,
    /// The websockify executable (websockify 0.13 from PyPI); skipped if absent.
    #[arg(long, default_value = "websockify")]
    websockify: String,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Have the upload client mask every message anew, as a WebSocket library does, instead
    /// of sending one frame masked once (the layout before 2026-12-06). The client shares the
    /// two cores with the relays, and only the WebSocket variants' clients mask.
    #[arg(long)]
    mask_each: bool,
    /// hpcdesk's gateway splices the screen (`gateway.splice = true`) instead of copying it.
    #[arg(long)]
    splice: bool,
    /// Worker threads of hpcdesk's gateway and of the plain relay (Tokio's
    /// `TOKIO_WORKER_THREADS`; default one per core). With one, the round trips beside a
    /// download show how a busy viewer shares its thread with the others.
    #[arg(long)]
    gateway_threads: Option<usize>,
}

/// Prints each variant's runs of one row and returns their medians.
fn report_runs(label: &str, variants: &[Variant], runs: Vec<Vec<f64>>) -> Vec<Option<f64>> {
    variants
        .iter()
        .zip(runs)
        .map(|(v, r)| {
            eprintln!("  {label} {}: {r:.0?}", v.name);
            Some(median(r))
        })
        .collect()
}

struct Variant {
    name: &'static str,
    /// Download, upload, echo, paced download.
    targets: [Target; 4],
    /// The process whose memory is measured.
    pid: Option<i32>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// MB/s (10^6 bytes) streamed by the download server over `conns` connections.
async fn download(t: &Target, conns: usize, secs: f64) -> Result<f64, Error> {
    let mut opened = Vec::new();
    for _ in 0..conns {
        opened.push(open(t).await?);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while Instant::now() < deadline {
                    match c.recv_some(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                c.close().await;
                total
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// An RFB ClientCutText message of exactly 64 KiB, so hpcdesk's framer sees valid input.
fn upload_chunk() -> Bytes {
    let mut m = vec![b'x'; CHUNK];
    m[..4].copy_from_slice(&[6, 0, 0, 0]);
    m[4..8].copy_from_slice(&((CHUNK - 8) as u32).to_be_bytes());
    Bytes::from(m)
}

/// MB/s received by the upload server from one connection; `mask_each`: see
/// [`Options::mask_each`].
async fn upload(
    t: &Target,
    stats: std::net::SocketAddr,
    secs: f64,
    mask_each: bool,
) -> Result<f64, Error> {
    let mut c = open(t).await?;
    let message = upload_chunk();
    let chunk = c.prepare(&message);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = servers::uploaded(stats).await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        if mask_each {
            c.send(message.clone()).await?;
        } else {
            c.send_prepared(&chunk).await?;
        }
    }
    let got = servers::uploaded(stats).await? - before;
    let elapsed = start.elapsed().as_secs_f64();
    c.close().await;
    Ok(got as f64 / elapsed / 1e6)
}

/// A 10-byte RFB FramebufferUpdateRequest, echoed by the echo server.
const PING: &[u8] = &[3, 1, 0, 0, 0, 0, 0, 8, 0, 8];

/// Round-trip times (µs), sorted.
async fn round_trips(t: &Target, n: usize) -> Result<Vec<f64>, Error> {
    let mut c = open(t).await?;
    let msg = Bytes::from_static(PING);
    for _ in 0..50 {
        c.send(msg.clone()).await?;
        c.recv_exact(PING.len()).await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        c.send(msg.clone()).await?;
        c.recv_exact(PING.len()).await?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    c.close().await;
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v)
}

/// Round trips while another viewer downloads through the same way, flat out (`paced`
/// false) or at the paced server's fixed rate.
async fn round_trips_under_load(v: &Variant, n: usize, paced: bool) -> Result<Vec<f64>, Error> {
    let mut load = open(&v.targets[if paced { 3 } else { 0 }]).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let loader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        while !stop2.load(Ordering::Relaxed) {
            if matches!(load.recv_some(&mut buf).await, Ok(0) | Err(_)) {
                break;
            }
        }
        load.close().await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = round_trips(&v.targets[2], n).await;
    stop.store(true, Ordering::Relaxed);
    let _ = loader.await;
    r
}

struct Concurrency {
    n: usize,
    held: usize,
    errors: usize,
    secs: f64,
    pss_before_kib: u64,
    pss_after_kib: u64,
}

/// Opens `n` connections (64 at a time: more concurrent SYNs on loopback here make a few
/// wait out a one-second retransmit, whatever the gateway), 3 echoes each, holds them all,
/// then closes.
async fn concurrent(v: &Variant, n: usize) -> Concurrency {
    let pss_before_kib = v.pid.map(procs::pss_kib).unwrap_or(0);
    let gate = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            let t = v.targets[2].clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let fut = async {
                    let mut c = open(&t).await.map_err(|e| format!("open: {e}"))?;
                    for _ in 0..3 {
                        c.send(Bytes::from_static(PING))
                            .await
                            .map_err(|e| format!("send: {e}"))?;
                        c.recv_exact(PING.len())
                            .await
                            .map_err(|e| format!("echo: {e}"))?;
                    }
                    Ok::<_, String>(c)
                };
                tokio::time::timeout(Duration::from_secs(30), fut)
                    .await
                    .map_err(|_| "timed out".to_owned())?
            })
        })
        .collect();
    let mut held: Vec<Conn> = Vec::new();
    let mut errors = 0;
    let mut causes: Vec<String> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => held.push(c),
            Ok(Err(e)) => {
                errors += 1;
                if causes.len() < 3 && !causes.contains(&e) {
                    causes.push(e);
                }
            }
            Err(e) => {
                errors += 1;
                causes.push(e.to_string());
            }
        }
    }
    if !causes.is_empty() {
        eprintln!("    {} errors through {}, e.g. {causes:?}", errors, v.name);
    }
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pss_after_kib = v.pid.map(procs::pss_kib).unwrap_or(0);
    let count = held.len();
    let closing: Vec<_> = held.into_iter().map(|c| tokio::spawn(c.close())).collect();
    for c in closing {
        let _ = c.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Concurrency {
        n,
        held: count,
        errors,
        secs,
        pss_before_kib,
        pss_after_kib,
    }
}

/// Median time (µs) to open a connection ready for RFB data.
async fn setup(t: &Target, n: usize) -> Result<f64, Error> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let c = open(t).await?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
        c.close().await;
    }
    Ok(median(v))
}

async fn hpcdesk_targets(base: &str) -> Result<[Target; 4], Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for user in ["bench_d", "bench_u", "bench_e", "bench_p"] {
        let token = procs::token(user);
        let vnc = format!("{base}/hpc/openapi/v2/desktop/vnc");
        let created: serde_json::Value = http
            .put(&vnc)
            .header("token", &token)
            .send()
            .await?
            .json()
            .await?;
        let id = created["data"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("create failed: {created}"))?;
        let path = procs::viewer_path(&http, &vnc, id, &token).await?;
        out.push(Target::Ws {
            url: format!("{}{path}", base.replacen("http://", "ws://", 1)),
            rfb: true,
        });
    }
    Ok([
        out[0].clone(),
        out[1].clone(),
        out[2].clone(),
        out[3].clone(),
    ])
}

/// Row values per variant, in variant order.
struct Row {
    label: String,
    values: Vec<Option<f64>>,
}

pub async fn run(opts: Options) -> Result<(), Error> {
    let me = std::env::current_exe()?;
    let me = me.to_string_lossy().into_owned();
    let servers_proc = procs::spawn(&me, &["servers".to_owned()], None).await?;
    let servers =
        Servers::from_line(&servers_proc.ready).ok_or("the servers process said nonsense")?;

    let relay_exe = std::env::current_exe()?.with_file_name("hpcdesk-bench-relay");
    let relay = procs::spawn_with(
        &relay_exe.to_string_lossy(),
        &servers
            .plain
            .iter()
            .flat_map(|a| ["--map".to_owned(), format!("127.0.0.1:0={a}")])
            .collect::<Vec<_>>(),
        None,
        std::process::Stdio::null(),
        opts.gateway_threads,
    )
    .await?;
    let relay_addrs: Vec<std::net::SocketAddr> = relay
        .ready
        .split_whitespace()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;

    let data = std::env::temp_dir().join(format!("hpcdesk-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let hpcdesk = procs::spawn_with(
        &me,
        &[
            "hpcdesk".to_owned(),
            "--data".to_owned(),
            data.display().to_string(),
            "--map".to_owned(),
            format!("bench_d={}", servers.rfb[0].port()),
            "--map".to_owned(),
            format!("bench_u={}", servers.rfb[1].port()),
            "--map".to_owned(),
            format!("bench_e={}", servers.rfb[2].port()),
            "--map".to_owned(),
            format!("bench_p={}", servers.rfb[3].port()),
        ]
        .into_iter()
        .chain(opts.splice.then(|| "--splice".to_owned()))
        .collect::<Vec<_>>(),
        None,
        std::process::Stdio::null(),
        opts.gateway_threads,
    )
    .await?;
    let hpcdesk_base = format!(
        "http://{}",
        hpcdesk.ready.split_whitespace().next().unwrap_or_default()
    );

    let ws_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let tokens = data.join("websockify-tokens");
    std::fs::create_dir_all(&tokens)?;
    std::fs::write(
        tokens.join("targets"),
        format!(
            "d: {}\nu: {}\ne: {}\np: {}\n",
            servers.plain[0], servers.plain[1], servers.plain[2], servers.plain[3]
        ),
    )?;
    let websockify: Option<Child> = match procs::spawn(
        &opts.websockify,
        &[
            format!("127.0.0.1:{ws_port}"),
            "--token-plugin".into(),
            "TokenFile".into(),
            "--token-source".into(),
            tokens.display().to_string(),
        ],
        Some(([127, 0, 0, 1], ws_port).into()),
    )
    .await
    {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("websockify not run ({e}); its column stays empty");
            None
        }
    };

    let ws = |t: &str| Target::Ws {
        url: format!("ws://127.0.0.1:{ws_port}/websockify?token={t}"),
        rfb: false,
    };
    let mut variants = vec![
        Variant {
            name: "raw TCP",
            targets: servers.plain.map(Target::Tcp),
            pid: None,
        },
        Variant {
            name: "plain relay",
            targets: [
                Target::Tcp(relay_addrs[0]),
                Target::Tcp(relay_addrs[1]),
                Target::Tcp(relay_addrs[2]),
                Target::Tcp(relay_addrs[3]),
            ],
            pid: Some(relay.pid),
        },
    ];
    if let Some(w) = &websockify {
        variants.push(Variant {
            name: "websockify",
            targets: [ws("d"), ws("u"), ws("e"), ws("p")],
            pid: Some(w.pid),
        });
    }
    variants.push(Variant {
        name: "hpcdesk",
        targets: hpcdesk_targets(&hpcdesk_base).await?,
        pid: Some(hpcdesk.pid),
    });

    eprintln!(
        "hpcdesk gateway benchmark: {} cores, {} s per throughput run, median of {}, relay threads {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        opts.seconds,
        opts.reps,
        opts.gateway_threads
            .map_or("one per core".to_owned(), |n| n.to_string())
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |label: &str, values: Vec<Option<f64>>| {
        rows.push(Row {
            label: label.to_owned(),
            values,
        })
    };

    // Throughput rounds take the variants in turn, so that a drift of the machine's speed
    // over seconds falls on all of them alike.
    for (label, conns) in [
        ("download, 1 conn (MB/s)", 1),
        ("download, 8 conns (MB/s)", 8),
    ] {
        let mut runs = vec![Vec::new(); variants.len()];
        for _ in 0..opts.reps {
            for (v, r) in variants.iter().zip(&mut runs) {
                r.push(download(&v.targets[0], conns, opts.seconds).await?);
            }
        }
        push(label, report_runs(label, &variants, runs));
    }
    {
        let label = "upload, 1 conn (MB/s)";
        let mut runs = vec![Vec::new(); variants.len()];
        for _ in 0..opts.reps {
            for (v, r) in variants.iter().zip(&mut runs) {
                r.push(upload(&v.targets[1], servers.stats, opts.seconds, opts.mask_each).await?);
            }
        }
        push(label, report_runs(label, &variants, runs));
    }
    {
        // Rounds take the variants in turn, in the opposite order every other round, as the
        // other rows do: a drift of the machine, or what a variant leaves running after its
        // turn (websockify's processes winding down), falls on no variant alone.
        let n = variants.len();
        let mut runs: Vec<[Vec<f64>; 4]> = (0..n).map(|_| Default::default()).collect();
        for round in 0..opts.reps {
            let mut order: Vec<usize> = (0..n).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (v, [a, b, c, d]) = (&variants[i], &mut runs[i]);
                let rt = round_trips(&v.targets[2], opts.round_trips).await?;
                a.push(percentile(&rt, 0.5));
                b.push(percentile(&rt, 0.99));
                let rt = round_trips_under_load(v, opts.round_trips, true).await?;
                c.push(percentile(&rt, 0.99));
                let rt = round_trips_under_load(v, opts.round_trips, false).await?;
                d.push(percentile(&rt, 0.99));
            }
        }
        let (mut p50, mut p99, mut p99_paced, mut p99_flat) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (v, [a, b, c, d]) in variants.iter().zip(runs) {
            eprintln!(
                "  RTT {}: p50 {a:.0?} p99 {b:.0?} p99 paced load {c:.0?} p99 flat-out load {d:.0?}",
                v.name
            );
            p50.push(Some(median(a)));
            p99.push(Some(median(b)));
            p99_paced.push(Some(median(c)));
            p99_flat.push(Some(median(d)));
        }
        push("RTT p50 (µs)", p50);
        push("RTT p99 (µs)", p99);
        push(
            &format!(
                "RTT p99 while another viewer downloads {} MB/s (µs)",
                servers::PACED_MB_S
            ),
            p99_paced,
        );
        push(
            "RTT p99 while another viewer downloads flat out (µs)",
            p99_flat,
        );
    }
    {
        let mut vals = Vec::new();
        for v in &variants {
            vals.push(Some(setup(&v.targets[2], 200).await?));
        }
        push("set-up of a viewer, p50 (µs)", vals);
    }
    for &n in &opts.conns {
        let (mut held, mut errors, mut secs, mut mem, mut per) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for v in &variants {
            if v.name == "websockify" && n > 1000 {
                // It cannot hold more than ~508 (select() fails past fd 1023); see 1 000.
                for col in [&mut held, &mut errors, &mut secs, &mut mem, &mut per] {
                    col.push(None);
                }
                continue;
            }
            let c = concurrent(v, n).await;
            eprintln!(
                "  {} conns {}: held {} errors {} in {:.2} s, PSS {} -> {} KiB",
                c.n, v.name, c.held, c.errors, c.secs, c.pss_before_kib, c.pss_after_kib
            );
            held.push(Some(c.held as f64));
            errors.push(Some(c.errors as f64));
            secs.push(Some(c.secs));
            let has_mem = v.pid.is_some();
            mem.push(has_mem.then_some(c.pss_after_kib as f64 / 1024.0));
            per.push((has_mem && c.held > 0).then(|| {
                (c.pss_after_kib.saturating_sub(c.pss_before_kib)) as f64 / c.held as f64
            }));
        }
        push(&format!("{n} concurrent: held"), held);
        push(&format!("{n} concurrent: errors"), errors);
        push(&format!("{n} concurrent: time to establish (s)"), secs);
        push(&format!("{n} concurrent: gateway PSS (MiB)"), mem);
        push(&format!("{n} concurrent: PSS per idle viewer (KiB)"), per);
    }

    report(&variants, &rows);
    drop(websockify);
    drop(hpcdesk);
    drop(relay);
    drop(servers_proc);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn report(variants: &[Variant], rows: &[Row]) {
    let idx = |name: &str| variants.iter().position(|v| v.name == name);
    let (h, r, w) = (idx("hpcdesk"), idx("plain relay"), idx("websockify"));
    let ratio = |row: &Row, other: Option<usize>| -> String {
        match (
            h.and_then(|i| row.values[i]),
            other.and_then(|i| row.values[i]),
        ) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        }
    };
    let mut header = vec!["".to_owned()];
    header.extend(variants.iter().map(|v| v.name.to_owned()));
    header.push("hpcdesk/relay".into());
    header.push("hpcdesk/websockify".into());
    let mut table = vec![header];
    for row in rows {
        let mut line = vec![row.label.clone()];
        line.extend(row.values.iter().map(|v| fmt(*v)));
        line.push(ratio(row, r));
        line.push(ratio(row, w));
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for (i, line) in table.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            println!(
                "|{}|",
                widths
                    .iter()
                    .enumerate()
                    .map(|(c, w)| if c == 0 {
                        format!(":{}", "-".repeat(w + 1))
                    } else {
                        format!("{}:", "-".repeat(w + 1))
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            );
        }
    }
}
