//! The SCNet Python example from the seed document, run unchanged but for the host (and the
//! token, which was signed for another cluster), against a real session whose id is the one
//! the example names: `gv101--test_1215--SIG--4`.

use std::process::Command;

use crate::helpers::*;

const EXAMPLE: &str = include_str!("../fixtures/scnet_launchurl_example.py");
const SEED_TOKEN_PREFIX: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb21wdXRlVXNlciI6InNsdXJtdGVzdCIs";

#[test]
fn the_scnet_python_example_prints_a_success_envelope() {
    if !real_parts("SCNet python example") {
        return;
    }
    let python_ok = Command::new("/usr/bin/python3")
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success());
    let seed_user_exists = nix::unistd::User::from_name("test_1215")
        .ok()
        .flatten()
        .is_some();
    if !(python_ok && seed_user_exists && nix::unistd::Uid::effective().is_root()) {
        let msg = "SCNet python example: needs root, the account test_1215 and python3-requests";
        assert!(!in_ci(), "{msg} — required in CI");
        eprintln!("SKIPPED {msg}");
        return;
    }
    let app = TestApp::spawn_with(Options {
        node: Some("gv101".into()),
        display_min: 4,
        display_max: 4,
        ..Options::default()
    });
    let token = token_with("test_1215", "test_1215", |_| {});
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", app.log_text());
    assert_eq!(created["data"]["sessionId"], "gv101--test_1215--SIG--4");

    let seed_token = EXAMPLE
        .split('\'')
        .find(|s| s.starts_with(SEED_TOKEN_PREFIX))
        .expect("the example carries the seed token");
    let script = EXAMPLE
        .replace("https://api01.xxx.com:65106", &app.base)
        .replace(seed_token, &token);
    assert_ne!(script, EXAMPLE);
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["code"], "0", "{v}");
    assert_eq!(v["msg"], "success");
    assert_eq!(v["data"]["withDomain"], false);
    assert!(
        v["data"]["novncUrl"]
            .as_str()
            .unwrap()
            .starts_with("/vnc.html?path=/vncws?token=")
    );
    assert_eq!(app.delete(&token, "gv101--test_1215--SIG--4")["code"], "0");
}
