//! Token issuance, region info, abuse limits and the audit log, as a portal and an operator
//! use them.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

const PASSWORD: &str = "Correct-Horse-7";

/// Adds a user and an org with the admin CLI, on the app's own config.
fn provision(app: &TestApp, user: &str, org: &str) {
    let cfg = path_of(&app.config);
    let (ok, out, err) = run_cli_stdin(
        &[
            "--config",
            &cfg,
            "user",
            "add",
            user,
            "--compute-user",
            &compute_user(),
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "user add: {out}{err}");
    let (ok, out, err) = run_cli(&["--config", &cfg, "org", "add", org], &[]);
    assert!(ok, "org add: {out}{err}");
}

fn login(app: &TestApp, user: &str, password: &str, org: &str) -> (u16, Value) {
    app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", user)
            .header("password", password)
            .header("orgId", org)
    })
}

fn token_of(v: &Value) -> String {
    assert_eq!(v["code"], "0", "{v}");
    v["data"][0]["token"].as_str().unwrap().to_owned()
}

#[test]
fn a_portal_runs_the_whole_scnet_flow_from_nothing() {
    if !real_parts("SCNet flow") {
        return;
    }
    let app = TestApp::spawn();
    provision(&app, "tina", "portal-7");

    // 1. tokens
    let (_, v) = login(&app, "tina", PASSWORD, "portal-7");
    let token = token_of(&v);
    assert_eq!(v["data"][0]["clusterId"], CLUSTER);
    assert!(v["data"][0]["clusterName"].is_string());
    // 2. region info
    let (_, center) = app.call("GET", "/ac/openapi/v2/center", Some(&token));
    assert_eq!(center["code"], "0", "{center}");
    let hpc_url = center["data"]["hpcUrls"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hpc_url, app.base);
    assert_eq!(center["data"]["hpcUrls"][0]["enable"], "true");
    assert_eq!(
        center["data"]["clusterUserInfo"]["userName"],
        compute_user().as_str()
    );
    let home = nix::unistd::User::from_name(&compute_user())
        .unwrap()
        .unwrap()
        .dir;
    assert_eq!(
        center["data"]["clusterUserInfo"]["homePath"],
        home.display().to_string().as_str()
    );
    let (_, state) = app.call("GET", "/ac/openapi/v2/tokens/state", Some(&token));
    assert_eq!(state["data"], "token is valid");
    // 3. desktop with the issued token, opened through hpcUrls[0] + novncUrl
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let launch = app.launch_url(&token, &id);
    let novnc = launch["data"]["novncUrl"].as_str().unwrap();
    let full = format!("{hpc_url}{novnc}");
    let page = reqwest::blocking::get(&full).unwrap();
    assert_eq!(page.status(), 200, "{full}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Connect::Open(mut viewer) = rt.block_on(connect(&ws_url(&hpc_url, novnc))) else {
        panic!("the launch URL was refused");
    };
    assert_eq!(rt.block_on(viewer.handshake()).width, 1024);
    drop(viewer);
    assert_eq!(app.delete(&token, &id)["code"], "0");

    // 4. renewal: a fresh token for the same account
    let (_, renewed) = app.call("POST", "/ac/openapi/v2/tokens/next", Some(&token));
    let renewed = token_of(&renewed);
    assert_ne!(renewed, token);
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&renewed))
            .1["code"],
        "0"
    );

    // The audit log tells the story.
    let k = kinds(&audit(&app, "tina"));
    for kind in [
        "token_issued",
        "session_created",
        "viewer_connected",
        "viewer_disconnected",
        "session_deleted",
    ] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing in {k:?}");
    }
}

/// Signs and sends an AK/SK token request with Python's hmac, as a client written from the
/// SCNet description would.
fn python_key_login(app: &TestApp, user: &str, ak: &str, sk: &str, ts: Option<i64>) -> Value {
    let script = r#"
import hashlib, hmac, json, sys, time, urllib.request
base, user, ak, sk, ts = sys.argv[1:6]
if ts == "now":
    ts = str(int(time.time()))
msg = json.dumps({"accessKey": ak, "timestamp": ts, "user": user}, separators=(",", ":"))
sig = hmac.new(sk.encode(), msg.encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(base + "/api/user/v3/tokens", data=b"", method="POST",
    headers={"user": user, "accessKey": ak, "timestamp": ts, "signature": sig})
print(json.dumps(json.load(urllib.request.urlopen(req))))
"#;
    let ts = ts.map(|t| t.to_string()).unwrap_or_else(|| "now".into());
    let out = Command::new("python3")
        .args(["-c", script, &app.base, user, ak, sk, &ts])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn access_keys_work_with_a_python_hmac_client_and_refuse_bad_stale_and_replayed_signatures() {
    let app = TestApp::spawn();
    provision(&app, "uma", "org-x");
    let cfg = path_of(&app.config);
    let (ok, out, err) = run_cli(&["--config", &cfg, "key", "create", "uma", "--json"], &[]);
    assert!(ok, "{err}");
    let keys: Value = serde_json::from_str(&out).unwrap();
    let (ak, sk) = (
        keys["accessKey"].as_str().unwrap(),
        keys["secretKey"].as_str().unwrap(),
    );

    let v = python_key_login(&app, "uma", ak, sk, None);
    let token = token_of(&v);
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&token))
            .1["code"],
        "0"
    );

    let wrong = python_key_login(&app, "uma", ak, "not-the-secret-key", None);
    assert_eq!(wrong["code"], "10008", "{wrong}");
    let stale_ts = chrono::Utc::now().timestamp() - 3600;
    let stale = python_key_login(&app, "uma", ak, sk, Some(stale_ts));
    assert_eq!(stale["code"], "10008", "{stale}");
    // (Not the current second: the first login above may have signed that one already.)
    let fixed_ts = chrono::Utc::now().timestamp() - 7;
    assert_eq!(
        python_key_login(&app, "uma", ak, sk, Some(fixed_ts))["code"],
        "0"
    );
    let replay = python_key_login(&app, "uma", ak, sk, Some(fixed_ts));
    assert_eq!(
        replay["code"], "10008",
        "a replayed signature must be refused: {replay}"
    );
    // Another user's key does not sign for this one.
    let other = python_key_login(&app, "someone-else", ak, sk, None);
    assert_eq!(other["code"], "10008");
    // A revoked key stops working.
    assert!(run_cli(&["--config", &cfg, "key", "revoke", ak], &[]).0);
    assert_eq!(python_key_login(&app, "uma", ak, sk, None)["code"], "10008");
    // `key list` never shows the secret.
    let (_, list, _) = run_cli(&["--config", &cfg, "key", "list", "--json"], &[]);
    assert!(list.contains(ak) && !list.contains(sk));
    assert!(!app.log_text().contains(sk), "a secret key was logged");
}

#[test]
fn refused_logins_are_plain_and_leave_nothing_behind() {
    let app = TestApp::spawn_with(Options {
        extra_toml: "[limits]\nlogin_failures = 3\nlogin_lockout = \"3s\"\n".into(),
        ..Options::default()
    });
    provision(&app, "vera", "org-v");
    let admin = token_with("auditor", &compute_user(), |c| c.role = "9".into());

    let (_, v) = login(&app, "vera", "wrong-password", "org-v");
    assert_eq!(v["code"], "10008", "{v}");
    assert_eq!(v["msg"], "wrong user name, password or orgId");
    let (_, v) = login(&app, "vera", PASSWORD, "no-such-org");
    assert_eq!(v["code"], "10008");
    let (_, v) = login(&app, "nobody", PASSWORD, "org-v");
    assert_eq!(v["code"], "10008");
    // Missing headers are 10003; other versions 10009.
    let (_, v) = app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", "vera")
    });
    assert_eq!(v["code"], "10003");
    let (_, v) = app.call_with("POST", "/ac/openapi/v3/tokens", None, |b| {
        b.header("user", "vera")
            .header("password", PASSWORD)
            .header("orgId", "org-v")
    });
    assert_eq!(v["code"], "10009");

    // Brute force: the third failure for vera from here locks her name from here, the right
    // password included.
    let (_, v) = login(&app, "vera", "wrong-again", "org-v");
    assert_eq!(v["code"], "10008");
    let (_, v) = login(&app, "vera", PASSWORD, "org-v");
    assert_eq!(v["code"], "10011", "locked after failures: {v}");
    let (status, v) = app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", "vera")
            .header("password", PASSWORD)
            .header("orgId", "org-v")
    });
    assert_eq!((status, v["code"].as_str()), (200, Some("10011")));
    std::thread::sleep(Duration::from_millis(3200));
    let token = token_of(&login(&app, "vera", PASSWORD, "org-v").1);

    // A disabled account gets token null, and its old token stops working.
    let cfg = path_of(&app.config);
    assert!(run_cli(&["--config", &cfg, "user", "disable", "vera"], &[]).0);
    let (_, v) = login(&app, "vera", PASSWORD, "org-v");
    assert_eq!(v["code"], "0");
    assert!(v["data"][0]["token"].is_null(), "{v}");
    // Its existing token stops working at once, and renewing it gives null.
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&token))
            .1["code"],
        "10008"
    );
    assert_eq!(
        app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&token))
            .1["code"],
        "10008"
    );
    let (_, v) = app.call("POST", "/ac/openapi/v2/tokens/next", Some(&token));
    assert_eq!(
        v["code"], "10008",
        "a token from before the disable is not renewed: {v}"
    );
    assert!(run_cli(&["--config", &cfg, "user", "enable", "vera"], &[]).0);
    // Enabled again, vera logs in anew (the stored status is cached for a second); the token
    // from before the disable stays void.
    assert!(eventually(Duration::from_secs(3), || {
        login(&app, "vera", PASSWORD, "org-v").1["data"][0]["token"].is_string()
    }));
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&token))
            .1["code"],
        "10008"
    );

    // Oversized requests to the token endpoints.
    let (_, v) = app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", "vera")
            .header("password", "p".repeat(20_000))
            .header("orgId", "org-v")
    });
    assert_eq!(v["code"], "10012");
    let (_, v) = app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", "vera")
            .header("password", PASSWORD)
            .header("orgId", "org-v")
            .body("x".repeat(70_000))
    });
    assert_eq!(v["code"], "10012");

    // Nothing but audit lines was written: no session, no issued token for the failures.
    assert!(app.list(&admin).is_empty());
    let k = kinds(&audit(&app, "vera"));
    assert_eq!(
        k.iter().filter(|x| *x == "token_issued").count(),
        2,
        "one before the disable, one after it: {k:?}"
    );
    assert!(
        k.iter().filter(|x| *x == "token_refused").count() >= 3,
        "{k:?}"
    );
    // Neither passwords nor tokens reach the log.
    let log = app.log_text();
    assert!(
        !log.contains(PASSWORD) && !log.contains("wrong-password"),
        "a password was logged"
    );
    assert!(!log.contains(&token), "a token was logged");
}

#[test]
fn request_rates_are_limited_per_user_and_recover() {
    let app = TestApp::spawn_with(Options {
        extra_toml: "[limits]\nuser_per_second = 2\nuser_burst = 3\n".into(),
        ..Options::default()
    });
    let token = app.token("wanda");
    let other = app.token("xena");
    let codes: Vec<(String, Option<String>)> = (0..8)
        .map(|_| {
            let client = reqwest::blocking::Client::new();
            let r = client
                .get(app.url("/hpc/openapi/v2/desktop/vnc"))
                .header("token", &token)
                .send()
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let v: Value = r.json().unwrap();
            (v["code"].as_str().unwrap().to_owned(), retry)
        })
        .collect();
    assert!(codes[..3].iter().all(|(c, _)| c == "0"), "{codes:?}");
    let limited: Vec<_> = codes.iter().filter(|(c, _)| c == "10011").collect();
    assert!(!limited.is_empty(), "{codes:?}");
    assert!(
        limited.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "{codes:?}"
    );
    // Other users are not affected, and the user recovers.
    assert_eq!(
        app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&other))
            .1["code"],
        "0"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        app.call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&token))
            .1["code"],
        "0"
    );
}

#[test]
fn an_expired_token_renews_within_a_day_and_not_after() {
    let app = TestApp::spawn();
    let recent = token_with("yara", &compute_user(), |c| {
        c.expire_time = (chrono::Utc::now().timestamp_millis() - 3_600_000).to_string()
    });
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&recent))
            .1["code"],
        "10008"
    );
    let (_, v) = app.call("POST", "/ac/openapi/v2/tokens/next", Some(&recent));
    let fresh = token_of(&v);
    assert_eq!(
        app.call("GET", "/ac/openapi/v2/tokens/state", Some(&fresh))
            .1["code"],
        "0"
    );
    let old = token_with("yara", &compute_user(), |c| {
        c.expire_time = (chrono::Utc::now().timestamp_millis() - 25 * 3_600_000).to_string()
    });
    let (_, v) = app.call("POST", "/ac/openapi/v2/tokens/next", Some(&old));
    assert_eq!(v["code"], "10008", "{v}");
    let forged = token_with("yara", &compute_user(), |c| c.cluster_id = "1".into());
    assert_eq!(
        app.call("POST", "/ac/openapi/v2/tokens/next", Some(&forged))
            .1["code"],
        "10008"
    );
}

fn login_from(app: &TestApp, addr: &str, user: &str, password: &str) -> Value {
    app.call_with("POST", "/ac/openapi/v2/tokens", None, |b| {
        b.header("user", user)
            .header("password", password)
            .header("orgId", "org-x")
            .header("X-Forwarded-For", addr)
    })
    .1
}

/// Someone guessing a user's password from one address locks only that address out of that
/// name: the user logs in from elsewhere. One address guessing many names is stopped too.
#[test]
fn failed_logins_from_one_address_do_not_lock_the_user_out_at_another() {
    let app = TestApp::spawn_with(Options {
        extra_toml: "[limits]\nlogin_failures = 3\nlogin_failures_per_address = 6\n\
                     peer_per_second = 1000\npeer_burst = 1000\n"
            .into(),
        env: vec![("HPCDESK_SERVER__TRUST_FORWARDED_FOR".into(), "true".into())],
        ..Options::default()
    });
    provision(&app, "xena", "org-x");
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, "203.0.113.9", "xena", "guess")["code"],
            "10008"
        );
    }
    let v = login_from(&app, "203.0.113.9", "xena", PASSWORD);
    assert_eq!(v["code"], "10011", "the guesser's address is locked: {v}");
    let v = login_from(&app, "198.51.100.7", "xena", PASSWORD);
    assert_eq!(v["code"], "0", "xena logs in from her own address: {v}");
    assert!(v["data"][0]["token"].is_string());
    // The guessing address, trying other names, reaches its own limit.
    for n in 0..3 {
        login_from(&app, "203.0.113.9", &format!("spray{n}"), "guess");
    }
    let v = login_from(&app, "203.0.113.9", "spray9", "guess");
    assert_eq!(v["code"], "10011", "{v}");
    // Still nothing against xena elsewhere.
    assert_eq!(
        login_from(&app, "198.51.100.8", "xena", PASSWORD)["code"],
        "0"
    );
}

/// `GET …/tokens/state` with `token`: its code.
fn state(app: &TestApp, token: &str) -> String {
    app.call("GET", "/ac/openapi/v2/tokens/state", Some(token))
        .1["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn renew(app: &TestApp, token: &str) -> Value {
    app.call("POST", "/ac/openapi/v2/tokens/next", Some(token))
        .1
}

/// Tokens end with what should end them: a password change, a disable and a revoked access
/// key each void the tokens issued before (refused, not renewable), and a chain of renewals
/// stops `auth.max_session_age` after the login it started from.
#[test]
fn password_changes_disables_and_revoked_keys_void_older_tokens_and_renewal_is_bounded() {
    let app = TestApp::spawn_with(Options {
        env: vec![("HPCDESK_AUTH__MAX_SESSION_AGE".into(), "4s".into())],
        ..Options::default()
    });
    provision(&app, "wes", "org-w");
    let cfg = path_of(&app.config);
    // The stored account is cached for a second: wait for a change to be seen.
    let refused_soon = |t: &str| eventually(Duration::from_secs(3), || state(&app, t) == "10008");

    let before = token_of(&login(&app, "wes", PASSWORD, "org-w").1);
    assert_eq!(state(&app, &before), "0");
    std::thread::sleep(Duration::from_millis(20));
    let (ok, _, err) = run_cli_stdin(
        &["--config", &cfg, "user", "passwd", "wes"],
        "Newer-Horse-8\n",
    );
    assert!(ok, "{err}");
    assert!(
        refused_soon(&before),
        "a token from before the password change still works"
    );
    let v = app
        .call("GET", "/hpc/openapi/v2/desktop/vnc", Some(&before))
        .1;
    assert_eq!(v["code"], "10008");
    assert!(v["msg"].as_str().unwrap().contains("log in again"), "{v}");
    assert_eq!(
        renew(&app, &before)["code"],
        "10008",
        "and cannot be renewed"
    );
    let after = token_of(&login(&app, "wes", "Newer-Horse-8", "org-w").1);
    assert_eq!(state(&app, &after), "0");

    // A revoked access key voids the tokens it (and the rest) issued.
    let (ok, out, err) = run_cli(&["--config", &cfg, "key", "create", "wes", "--json"], &[]);
    assert!(ok, "{err}");
    let keys: Value = serde_json::from_str(&out).unwrap();
    let (ak, sk) = (
        keys["accessKey"].as_str().unwrap(),
        keys["secretKey"].as_str().unwrap(),
    );
    let by_key = token_of(&python_key_login(&app, "wes", ak, sk, None));
    assert_eq!(state(&app, &by_key), "0");
    std::thread::sleep(Duration::from_millis(20));
    assert!(run_cli(&["--config", &cfg, "key", "revoke", ak], &[]).0);
    assert!(
        refused_soon(&by_key),
        "a token of a revoked key still works"
    );
    assert_eq!(renew(&app, &by_key)["code"], "10008");
    assert_eq!(
        state(&app, &after),
        "10008",
        "issued before the revocation too"
    );

    // A chain of renewals ends max_session_age (4 s) after its login.
    let first = token_of(&login(&app, "wes", "Newer-Horse-8", "org-w").1);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let second = token_of(&renew(&app, &first));
    std::thread::sleep(Duration::from_millis(1500));
    let third = token_of(&renew(&app, &second));
    assert_eq!(state(&app, &third), "0");
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(started.elapsed()) + Duration::from_millis(300),
    );
    let v = renew(&app, &third);
    assert_eq!(v["code"], "10008", "renewed past max_session_age: {v}");
    assert!(v["msg"].as_str().unwrap().contains("older than 4s"), "{v}");
    // A fresh login starts a new chain.
    assert_eq!(
        renew(
            &app,
            &token_of(&login(&app, "wes", "Newer-Horse-8", "org-w").1)
        )["code"],
        "0"
    );
}

/// Runs a command as root for the test's own set-up; panics with its output if it fails.
fn root_cmd(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pam_logins_check_the_sites_accounts_and_refuse_locked_and_expired_ones() {
    if !real_parts("pam") {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        let msg = "pam: needs root to make the accounts it logs in with";
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return;
    }
    // The site's accounts, made as an operator would, and the shipped PAM service.
    std::fs::write(
        "/etc/pam.d/hpcdesk-test",
        include_str!("../../../../packaging/pam.d-hpcdesk"),
    )
    .unwrap();
    const SITE_PASSWORD: &str = "Site-Pass-42";
    for name in ["hdpam", "hdpamlock", "hdpamold"] {
        if nix::unistd::User::from_name(name).unwrap().is_none() {
            root_cmd(
                "useradd",
                &["--create-home", "--shell", "/bin/bash", name],
                None,
            );
        }
        root_cmd("chpasswd", &[], Some(&format!("{name}:{SITE_PASSWORD}\n")));
        root_cmd("chage", &["-E", "-1", name], None);
    }
    root_cmd("usermod", &["-L", "hdpamlock"], None);
    root_cmd("chage", &["-E", "0", "hdpamold"], None);

    let app = TestApp::spawn_with(Options {
        env: vec![
            ("HPCDESK_AUTH__PASSWORD_BACKEND".into(), "pam".into()),
            ("HPCDESK_AUTH__PAM_SERVICE".into(), "hpcdesk-test".into()),
        ],
        ..Options::default()
    });
    // hpcdesk's records give the role and organisation; their own password is not used.
    provision(&app, "hdpam", "org-pam");
    let cfg = path_of(&app.config);
    for name in ["hdpamlock", "hdpamold"] {
        let (ok, out, err) = run_cli_stdin(
            &[
                "--config",
                &cfg,
                "user",
                "add",
                name,
                "--compute-user",
                name,
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        );
        assert!(ok, "user add: {out}{err}");
    }
    assert_eq!(
        login(&app, "hdpam", PASSWORD, "org-pam").1["code"],
        "10008",
        "hpcdesk's password works with pam"
    );
    let (_, v) = login(&app, "hdpam", SITE_PASSWORD, "org-pam");
    let token = token_of(&v);
    // A desktop for the login name.
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    assert_eq!(created["data"]["userName"], "hdpam");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    assert!(id.contains("--hdpam--"), "{id}");
    assert_eq!(app.delete(&token, &id)["code"], "0");

    for (user, password, why) in [
        ("hdpam", "wrong", "a wrong password"),
        ("hdpamlock", SITE_PASSWORD, "a locked account"),
        ("hdpamold", SITE_PASSWORD, "an expired account"),
        ("hdpam", SITE_PASSWORD, "an organisation it is not in"),
    ] {
        let org = if why.contains("organisation") {
            "org-none"
        } else {
            "org-pam"
        };
        let (_, v) = login(&app, user, password, org);
        assert_eq!(v["code"], "10008", "{why}: {v}");
        assert_eq!(v["msg"], "wrong user name, password or orgId", "{why}: {v}");
    }
    // Refusals count towards the lock-outs, as with hpcdesk's own passwords.
    let events = audit(&app, "hdpamlock");
    assert!(
        kinds(&events).contains(&"token_refused".to_owned()),
        "{events:?}"
    );
    assert!(
        !app.log_text().contains(SITE_PASSWORD),
        "a password was logged"
    );
}
