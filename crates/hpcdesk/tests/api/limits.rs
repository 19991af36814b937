//! Slow and oversized requests: a request trickled byte by byte is cut off within
//! `limits.request_timeout`; at most `limits.max_incomplete_requests` connections may be
//! sending a request at once; an oversized body sent by a client that writes it all before
//! reading (Python's urllib) still gets the 10012 envelope.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn limited_app() -> TestApp {
    TestApp::spawn_with(Options {
        extra_toml: "[limits]\nrequest_timeout = \"3s\"\nmax_incomplete_requests = 4\n".into(),
        ..Options::default()
    })
}

fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Whether the server has closed `s` (reads end or fail with a reset); what it sent first
/// is returned too.
fn closed(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None;
            }
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

/// Sends `head`, then one byte of `rest` per second, until the server closes; returns how
/// long after the start that was and what it answered.
fn trickle(app: &TestApp, head: &str, rest: &[u8]) -> (Duration, String) {
    let mut s = connect(app);
    let t = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    for b in rest.iter().cycle() {
        if let Some(answer) = closed(&mut s) {
            return (t.elapsed(), answer);
        }
        if s.write_all(&[*b]).is_err() {
            return (t.elapsed(), String::new());
        }
        std::thread::sleep(Duration::from_millis(800));
        assert!(t.elapsed() < Duration::from_secs(30), "never cut off");
    }
    unreachable!()
}

#[test]
fn a_trickled_body_or_header_is_cut_off_within_the_request_timeout() {
    let app = limited_app();
    let token = app.token("trickle");
    let head = format!(
        "PUT /hpc/openapi/v2/desktop/vnc HTTP/1.1\r\nHost: x\r\ntoken: {token}\r\n\
         Content-Length: 1000\r\n\r\n"
    );
    let (after, answer) = trickle(&app, &head, b"{");
    eprintln!("trickled body cut off after {after:?}: {answer:?}");
    assert!(after >= Duration::from_millis(2900), "{after:?}");
    assert!(after < Duration::from_millis(4500), "{after:?}");
    assert!(answer.contains("408"), "{answer}");
    assert!(answer.contains("\"code\":\"10004\""), "{answer}");
    assert!(answer.contains("did not arrive within 3s"), "{answer}");
    assert!(app.list(&token).is_empty(), "nothing was created");

    let (after, _) = trickle(&app, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a");
    eprintln!("trickled header cut off after {after:?}");
    assert!(after < Duration::from_millis(4500), "{after:?}");
}

#[test]
fn connections_beyond_the_incomplete_request_cap_are_closed_and_the_server_recovers() {
    let app = limited_app();
    // Four slow clients hold every slot…
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&app);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // …so a fifth is closed at once, before it could send anything useful.
    let mut fifth = connect(&app);
    let t = Instant::now();
    let mut shut = None;
    while t.elapsed() < Duration::from_secs(2) && shut.is_none() {
        shut = closed(&mut fifth);
    }
    assert!(shut.is_some(), "the connection over the cap was not closed");
    // A slow client that completes its request is served, and frees its slot.
    slow[0].write_all(b"\r\n").unwrap();
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 12];
    slow[0].read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert_eq!(
        app.call("GET", "/healthz", None).0,
        200,
        "a slot is free again"
    );
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..8 {
        assert_eq!(app.call("GET", "/healthz", None).0, 200);
    }
}

#[test]
fn an_8_mib_body_from_python_urllib_gets_the_10012_envelope() {
    let app = TestApp::spawn();
    let token = app.token("big-body");
    let script = r#"
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/hpc/openapi/v2/desktop/vnc",
                             data=b"x" * (8 << 20), method="PUT",
                             headers={"token": sys.argv[2], "Content-Type": "text/plain"})
with urllib.request.urlopen(req, timeout=30) as r:
    print(r.status, r.read().decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &app.base, &token])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "urllib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(status, "200");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], "10012", "{v}");
    assert_eq!(v["msg"], "request body is larger than 65536 bytes");
    assert!(app.list(&token).is_empty(), "nothing was created");
}
