//! The `ssh` launcher against two real sshd "nodes" in network namespaces (`ci/nodes.sh`):
//! placement spreads desktops, a stopped node gets none, no node at all is 815201 with
//! nothing half-created, and a desktop on a node opens in the browser through the gateway.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::browser::{browser_parts, type_in_desktop};
use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

const NODES: [(&str, &str); 2] = [("vnode1", "10.213.1.2"), ("vnode2", "10.213.2.2")];

fn nodes_dir() -> PathBuf {
    std::env::var_os("HPCDESK_NODES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/hpcdesk-nodes"))
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/nodes.sh")
}

fn nodes(action: &str, which: &[&str]) {
    let out = Command::new(script())
        .arg(action)
        .args(which)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ci/nodes.sh {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reachable(addr: &str) -> bool {
    TcpStream::connect_timeout(
        &format!("{addr}:22").parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Tests that take nodes down run one at a time and leave both nodes up, even on panic.
struct Exclusive(#[allow(dead_code)] MutexGuard<'static, ()>);

/// Waits for any other SSH test (which may have a node down), then checks the test nodes are
/// up: `None` skips loudly outside CI, and fails in CI.
fn ssh_parts(test: &str) -> Option<Exclusive> {
    static LOCK: Mutex<()> = Mutex::new(());
    if !real_parts(test) {
        return None;
    }
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let key = nodes_dir().join("ssh/client_ed25519");
    let ok = key.exists() && NODES.iter().all(|(_, a)| reachable(a));
    if !ok {
        let msg = format!("{test}: the sshd test nodes are not up (run `ci/nodes.sh up` as root)");
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return None;
    }
    Some(Exclusive(guard))
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        // Whatever desktops a failed test left on the nodes.
        for p in procs() {
            let argv = cmdline(p);
            if argv.first().is_some_and(|a| a.contains("Xvnc"))
                && argv.iter().any(|a| a.contains("/.hpcdesk/desktops/vnode"))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        nodes("up", &[]);
        // Let the links settle before another test (a browser) runs.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn ssh_app() -> TestApp {
    ssh_app_with(Options::default())
}

pub fn ssh_app_with(opts: Options) -> TestApp {
    let dir = nodes_dir();
    let mut extra = format!(
        "[launcher.ssh]\nagent = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"3s\"\nprobe_every = \"1s\"\nprobe_user = \"{}\"\n",
        agent_binary().display(),
        dir.join("ssh/client_ed25519").display(),
        dir.join("ssh/known_hosts").display(),
        compute_user(),
    );
    for (name, addr) in NODES {
        extra.push_str(&format!(
            "\n[[launcher.nodes]]\nname = \"{name}\"\naddress = \"{addr}\"\nmax_load_per_core = 100.0\nmin_free_mem_mib = 1\n"
        ));
    }
    TestApp::spawn_with(Options {
        launcher_toml: "kind = \"ssh\"".into(),
        extra_toml: extra,
        ..opts
    })
}

fn node_desktops() -> usize {
    procs()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            !zombie(*p)
                && argv.first().is_some_and(|a| a.contains("Xvnc"))
                && argv.iter().any(|a| a.contains("/.hpcdesk/desktops/vnode"))
        })
        .count()
}

#[test]
fn desktops_spread_over_the_nodes_and_open_through_the_gateway() {
    let Some(_x) = ssh_parts("ssh spread") else {
        return;
    };
    let app = ssh_app();
    let (ta, tb) = (app.token("ssh-a"), app.token("ssh-b"));
    let a = app.create(&ta);
    assert_eq!(a["code"], "0", "{a}\n{}", app.log_text());
    let b = app.create(&tb);
    assert_eq!(b["code"], "0", "{b}");
    let mut hosts = [
        a["data"]["hostName"].as_str().unwrap().to_owned(),
        b["data"]["hostName"].as_str().unwrap().to_owned(),
    ];
    hosts.sort();
    assert_eq!(
        hosts,
        ["vnode1", "vnode2"],
        "two desktops on two idle nodes spread"
    );
    let id_a = a["data"]["sessionId"].as_str().unwrap().to_owned();
    let id_b = b["data"]["sessionId"].as_str().unwrap().to_owned();
    assert!(id_a.starts_with(&format!(
        "{}--{}--SIG--",
        hosts.iter().find(|h| id_a.starts_with(h.as_str())).unwrap(),
        compute_user()
    )));

    // The gateway reaches the desktop on its node.
    let url = app.launch_url(&tb, &id_b)["data"]["novncUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Connect::Open(mut v) = rt.block_on(connect(&ws_url(&app.base, &url))) else {
        panic!("refused");
    };
    assert_eq!(rt.block_on(v.handshake()).width, 1024);
    let (rects, _, _) = rt.block_on(v.first_update(1024, 768));
    assert!(rects >= 1);
    drop(v);

    // And in the browser: a command typed into the node's desktop runs there.
    if browser_parts("ssh browser") {
        let ran_on = type_in_desktop(
            &format!("{}{url}", app.base),
            |marker| format!("hostname > ~/{marker}"),
            None,
        );
        assert_eq!(
            ran_on.trim(),
            b["data"]["hostName"].as_str().unwrap(),
            "ran on the node"
        );
    }

    // `hpcdesk nodes` shows both nodes with one session each.
    let admin = token_with("ssh-admin", &compute_user(), |c| c.role = "9".into());
    let (ok, out, err) = run_cli(
        &["nodes", "--api", &app.base, "--token", &admin, "--json"],
        &[],
    );
    assert!(ok, "nodes: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for n in v["data"].as_array().unwrap() {
        assert_eq!(n["reachable"], true, "{n}");
        assert_eq!(n["sessions"], 1, "{n}");
        assert!(n["cores"].as_u64().unwrap() >= 1);
    }

    assert_eq!(app.delete(&ta, &id_a)["code"], "0");
    assert_eq!(app.delete(&tb, &id_b)["code"], "0");
    assert!(
        eventually(Duration::from_secs(5), || node_desktops() == 0),
        "desktops left on the nodes"
    );
}

#[test]
fn a_stopped_node_gets_no_desktops_and_no_node_at_all_is_815201() {
    let Some(_x) = ssh_parts("ssh node down") else {
        return;
    };
    let app = ssh_app();
    nodes("down", &["vnode1"]);
    // Placement goes by the background probes: wait until they have seen the node go (a
    // create in between may still be sent to it and fail there).
    let admin = token_with("ssh-admin", &compute_user(), |c| c.role = "9".into());
    let mut last = serde_json::Value::Null;
    let seen_down = eventually(Duration::from_secs(30), || {
        let (_, nodes) = app.call("GET", "/hpcdesk/v1/nodes", Some(&admin));
        let down = nodes["data"].as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["name"] == "vnode1" && n["reachable"] == false)
        });
        last = nodes;
        down
    });
    let netns = Command::new("sh")
        .args([
            "-c",
            "ip netns list; ip -br link; ps -eo pid,netns,args | grep -v ' - '",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        seen_down,
        "the probes never saw vnode1 go: {last}\n{netns}\n{}",
        app.log_text()
    );
    let tc = app.token("ssh-c");
    let c = app.create(&tc);
    assert_eq!(c["code"], "0", "{c}\n{}", app.log_text());
    assert_eq!(c["data"]["hostName"], "vnode2", "the only node up");
    let id_c = c["data"]["sessionId"].as_str().unwrap().to_owned();

    nodes("down", &["vnode2"]);
    let td = app.token("ssh-d");
    let d = app.create(&td);
    assert_eq!(d["code"], "815201", "{d}");
    let msg = d["msg"].as_str().unwrap();
    assert!(
        msg.contains("vnode1") && msg.contains("vnode2"),
        "names every node: {msg}"
    );
    assert!(app.list(&td).is_empty(), "nothing half-created");
    assert_eq!(node_desktops(), 0);

    // The desktop whose node vanished is noticed by reconcile.
    assert!(
        eventually(Duration::from_secs(15), || app.list(&tc)[0]["status"]
            == "failed"),
        "{:?}\n{}",
        app.list(&tc),
        app.log_text()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let reason = app.list(&tc)[0]["statusReason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("unreachable"), "{reason}");
    // It can still be deleted.
    assert_eq!(app.delete(&tc, &id_c)["code"], "0");
}

/// `kill -9` of hpcdesk while desktops are being started on the nodes, at each point of a
/// start: afterwards every user has one desktop on a node or none, and no Xvnc is left on a
/// node that no session owns.
#[test]
fn a_crash_during_creates_leaves_no_orphan_desktop_on_the_nodes() {
    let Some(_x) = ssh_parts("ssh crash") else {
        return;
    };
    let spawn = || {
        ssh_app_with(Options {
            reconcile_every: "2s",
            ..Options::default()
        })
    };
    let rig = crate::crash::Rig {
        spawn: &spawn,
        nodes: Some(NODES.iter().map(|(n, _)| (*n).to_owned()).collect()),
        in_flight: 8,
    };
    crate::crash::every_point(&rig);
}

/// An account whose `.bashrc` prints without end (ssh runs the agent through it): its
/// create answers 815008 within the launcher's timeouts and says why, hpcdesk's memory
/// stays bounded, and another user's create at the same time succeeds.
#[test]
fn an_account_whose_shell_prints_forever_gets_815008_and_slows_no_one_else() {
    let Some(_x) = ssh_parts("ssh flood") else {
        return;
    };
    if !flood_user("ssh flood") {
        return;
    }
    let _bashrc = HomeFile::replace(".bashrc", b"yes 'all work and no play'\n");
    let app = ssh_app();
    let pid = app.pid().unwrap();
    let before = rss_kib(pid);
    let flooded = create_in_background(&app, &token_with("ssh-flood", FLOOD_USER, |_| {}));
    let calm = app.token("ssh-calm");
    let ok = app.create(&calm);
    assert_eq!(
        ok["code"],
        "0",
        "the other user's create: {ok}\n{}",
        app.log_text()
    );
    let (v, took) = flooded.join().unwrap();
    let v = v.expect("an answer");
    let after = rss_kib(pid);
    eprintln!("flooded create: {took:?}, {v}; hpcdesk RSS {before} KiB -> {after} KiB");
    assert_eq!(v["code"], "815008", "{v}");
    assert!(v["msg"].as_str().unwrap().contains("start-up files"), "{v}");
    // The launcher's timeouts: the probe (10 s) and ssh's connect timeout (3 s).
    assert!(took < Duration::from_secs(13), "{took:?}");
    assert!(
        after.saturating_sub(before) < 100 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
    let id = ok["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&calm, &id)["code"], "0");
    // Once the flood was cut off, the account's shell went on to run the agent, which read
    // the password already sent and started a desktop for the failed session: it carries
    // that session's marker, and reconcile (every second here) stops it.
    assert!(
        eventually(Duration::from_secs(5), || node_desktops() == 0),
        "a desktop of the failed start is left"
    );
}

/// A user's shell start-up file can answer in the agent's place (ssh runs the agent through
/// it). It cannot steer anyone else's placement (the nodes are probed by hpcdesk's service
/// account, never through a user's shell), nor send the gateway anywhere: a reply naming
/// another address is not connected to, the node's configured address is.
#[test]
fn a_users_start_up_file_cannot_steer_placement_or_the_gateway() {
    let Some(_x) = ssh_parts("ssh poisoning") else {
        return;
    };
    if !flood_user("ssh poisoning") {
        return;
    }
    // Where a made-up reply points: the host's side of vnode2's link, a port of display 33.
    let trap = std::net::TcpListener::bind("10.213.2.1:5933").expect("trap listener");
    trap.set_nonblocking(true).unwrap();
    let app = ssh_app();
    let b = app.token("ssh-b");
    // Where B lands on two idle nodes, before anything.
    let first = app.create(&b);
    assert_eq!(first["code"], "0", "{first}");
    let baseline = first["data"]["hostName"].as_str().unwrap().to_owned();
    let id = first["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&b, &id)["code"], "0");

    // A's .bashrc answers every command itself and exits before the agent runs: a probe
    // that says every node is full, and a start whose desktop is at the trap.
    let probe = r#"{"node":"vnode1","cores":1,"load1":99.0,"mem_total_kib":1,"mem_available_kib":1,"desktops":999}"#;
    let start = r#"{"node":"vnode1","display":33,"port":5933,"host":"10.213.2.1","xvnc_pid":1,"marker":"vnode1-33-x","warnings":[]}"#;
    let bashrc = format!("echo '{probe}'\necho '{start}'\nexit 0\n");
    let _bashrc = HomeFile::replace(".bashrc", bashrc.as_bytes());
    let a = token_with("ssh-a", FLOOD_USER, |_| {});
    let made_up = app.create(&a);
    eprintln!("A's made-up start: {made_up}");
    // Right after A's attempt, B still gets a desktop (A's shell never fed a probe)…
    let right_after = app.create(&b);
    assert_eq!(
        right_after["code"],
        "0",
        "{right_after}\n{}",
        app.log_text()
    );
    let id = right_after["data"]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.delete(&b, &id)["code"], "0");
    // …and once a probe round has passed, where it did before A.
    std::thread::sleep(Duration::from_millis(2500));
    let second = app.create(&b);
    assert_eq!(second["code"], "0", "{second}\n{}", app.log_text());
    assert_eq!(
        second["data"]["hostName"],
        baseline.as_str(),
        "B's placement moved after A's made-up probe"
    );

    // Whatever A's session says, the gateway is never sent to the trap.
    if made_up["code"] == "0" {
        let a_id = made_up["data"]["sessionId"].as_str().unwrap().to_owned();
        // Placed where hpcdesk chose, whatever node the reply named.
        let host = made_up["data"]["hostName"].as_str().unwrap();
        assert!(NODES.iter().any(|(n, _)| *n == host), "{made_up}");
        let url = app.launch_url(&a, &a_id);
        if let Some(u) = url["data"]["novncUrl"].as_str() {
            let rt = crate::viewer::runtime();
            let _ = rt.block_on(connect(&ws_url(&app.base, u)));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        trap.accept().is_err(),
        "the gateway connected to the address A's reply named"
    );
    let b_id = second["data"]["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&b, &b_id)["code"], "0");
}

/// Off loopback the leg between the gateway and Xvnc is encrypted: a node's Xvnc offers only
/// VeNCrypt (TLS with the desktop's own certificate, then the VNC password inside), and a
/// client that asks for plain VNC authentication is refused. The gateway still reaches it.
#[test]
fn the_gateway_to_node_leg_is_tls_and_plain_vnc_auth_is_refused() {
    use std::io::{Read, Write};
    let Some(_x) = ssh_parts("ssh tls") else {
        return;
    };
    let app = ssh_app();
    let token = app.token("ssh-tls");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    let node = created["data"]["hostName"].as_str().unwrap().to_owned();
    let display = created["data"]["displayNumber"].as_u64().unwrap();
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let addr = NODES.iter().find(|(n, _)| *n == node).unwrap().1;
    let port = 5900 + display as u16;

    let offer = |choose: Option<u8>| -> (Vec<u8>, Vec<u8>) {
        let mut s = TcpStream::connect((addr, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut banner = [0u8; 12];
        s.read_exact(&mut banner).unwrap();
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; usize::from(n[0])];
        s.read_exact(&mut types).unwrap();
        let mut after = Vec::new();
        if let Some(t) = choose {
            s.write_all(&[t]).unwrap();
            let _ = s.read_to_end(&mut after);
        }
        (types, after)
    };
    let (types, _) = offer(None);
    assert_eq!(types, vec![19], "the node's Xvnc offers VeNCrypt only");
    // Asking for plain VNC authentication anyway: the connection is closed (or fails), and
    // no DES challenge is ever sent in clear.
    let (_, answer) = offer(Some(2));
    assert!(
        answer.is_empty() || (answer.len() != 16 && answer[..4] != [0, 0, 0, 0]),
        "plain VNC auth was not refused: {answer:?}"
    );

    // Through the gateway the desktop works (over TLS).
    let rt = crate::viewer::runtime();
    let (mut v, init, _) = crate::viewer::open_viewer(&rt, &app, &token, &id);
    assert!(rt.block_on(v.full_update(init.width, init.height)) >= 1);
    drop(v);
    assert_eq!(app.delete(&token, &id)["code"], "0");
}
