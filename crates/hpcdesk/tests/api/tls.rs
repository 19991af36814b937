//! TLS on `serve`'s own listener (`server.tls_cert`, `server.tls_key`): the API over https
//! and the viewer over wss through the same port, and a certificate renewed by SIGHUP while a
//! viewer stays open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::browser::{browser_dir, browser_lock, browser_parts, home_of};
use crate::helpers::*;

/// A new self-signed certificate for 127.0.0.1 and localhost, written as `name`.crt/.key;
/// returns the paths and the certificate's DER.
fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key, c.cert.der().to_vec())
}

/// Replaces `to` with `from` in one step, as a certificate renewal tool does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Takes any certificate and remembers it: the test compares it with the files.
#[derive(Debug)]
struct Remember(Mutex<Option<Vec<u8>>>, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Remember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate a new TLS connection to `base` gets, and the answer to a plain GET of
/// `/healthz` over it (the connection is really served).
fn served_certificate(base: &str) -> (Vec<u8>, String) {
    let addr = base.trim_start_matches("https://");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Remember(Mutex::new(None), provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let cert = verifier
        .0
        .lock()
        .unwrap()
        .clone()
        .expect("no certificate seen");
    (cert, String::from_utf8_lossy(&answer).into_owned())
}

fn hangup(app: &TestApp) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.pid().unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

fn tls_app(cert: &Path, key: &Path) -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            (
                "HPCDESK_SERVER__TLS_CERT".into(),
                cert.display().to_string(),
            ),
            ("HPCDESK_SERVER__TLS_KEY".into(), key.display().to_string()),
        ],
        ..Options::default()
    })
}

/// https and wss through one listener; a renewed certificate taken on SIGHUP by new
/// connections while the open viewer stays open and keeps working; a broken renewal keeps
/// the certificate in use.
#[test]
fn a_desktop_opens_over_https_and_wss_and_a_renewed_certificate_drops_no_viewer() {
    if !real_parts("tls") || !browser_parts("tls") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, first) = write_pair(certs.path(), "served");
    let (next_cert, next_key, second) = write_pair(certs.path(), "renewed");
    let app = tls_app(&cert, &key);
    assert!(app.base.starts_with("https://127.0.0.1:"), "{}", app.base);
    let (seen, health) = served_certificate(&app.base);
    assert_eq!(seen, first, "the configured certificate is served");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Plain HTTP on the TLS port is no way in.
    let plain = reqwest::blocking::get(app.base.replace("https://", "http://") + "/healthz");
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    let token = app.token("tess");
    let created = app.create(&token);
    assert_eq!(created["code"], "0", "{created}");
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let launch = app.launch_url(&token, &id);
    let url = format!(
        "{}{}",
        app.base,
        launch["data"]["novncUrl"].as_str().unwrap()
    );

    let marker = format!("hpcdesk-tls-{}", uuid::Uuid::new_v4().simple());
    let file = home_of(&compute_user()).join(&marker);
    let steps = tempfile::tempdir().unwrap();
    let _one_at_a_time = browser_lock();
    let browser = Command::new("node")
        .arg(browser_dir().join("tls-viewer.mjs"))
        .arg(&url)
        .arg(steps.path())
        .arg(format!("touch ~/{marker}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let connected = eventually(Duration::from_secs(60), || {
        steps.path().join("connected").exists()
    });
    if !connected {
        let out = browser.wait_with_output().unwrap();
        panic!(
            "the viewer did not connect over wss: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            app.log_text()
        );
    }
    assert_eq!(app.list(&token)[0]["connections"], 1);

    // A renewal that left a key of another certificate: refused, the served one stays.
    replace(&next_cert, &cert);
    hangup(&app);
    assert!(
        eventually(Duration::from_secs(10), || app
            .log_text()
            .contains("cannot reload the TLS certificate")),
        "{}",
        app.log_text()
    );
    assert_eq!(
        served_certificate(&app.base).0,
        first,
        "kept after a bad reload"
    );

    // The whole renewal: new connections get the new certificate.
    replace(&next_key, &key);
    hangup(&app);
    assert!(
        eventually(Duration::from_secs(10), || app
            .log_text()
            .contains("TLS certificate reloaded")),
        "{}",
        app.log_text()
    );
    let (seen, health) = served_certificate(&app.base);
    assert_eq!(
        seen, second,
        "a new connection sees the renewed certificate"
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_eq!(
        app.list(&token)[0]["connections"],
        1,
        "the viewer is still there"
    );

    // The viewer that was open all along still types into its desktop.
    std::fs::write(steps.path().join("reloaded"), "").unwrap();
    let out = browser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tls-viewer.mjs failed\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r["status"], "connected", "{r}");
    assert_eq!(
        r["seen"],
        serde_json::json!(["connected"]),
        "never disconnected: {r}"
    );
    let sockets = r["sockets"].as_array().unwrap();
    assert!(
        sockets.len() == 1 && sockets[0].as_str().unwrap().starts_with("wss://127.0.0.1:"),
        "one wss connection: {r}"
    );
    assert!(
        eventually(Duration::from_secs(5), || file.exists()),
        "the command typed after the renewal did not run"
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(app.delete(&token, &id)["code"], "0");
}

/// Without TLS, SIGHUP (what `systemctl reload` sends) changes nothing: the server is not
/// ended by it, as it would be by default.
#[test]
fn sighup_without_tls_is_logged_and_the_server_keeps_serving() {
    let app = TestApp::spawn();
    hangup(&app);
    assert!(
        eventually(Duration::from_secs(10), || app
            .log_text()
            .contains("SIGHUP: nothing to reload")),
        "{}",
        app.log_text()
    );
    let (status, v) = app.call("GET", "/healthz", None);
    assert_eq!(status, 200, "{v}");
}

/// A certificate without its key, or files that cannot serve, stop the server from
/// starting with a message naming the key and the file.
#[test]
fn a_tls_configuration_that_cannot_serve_stops_the_start_with_a_clear_message() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, _, _) = write_pair(certs.path(), "served");
    let junk = certs.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let config = certs.path().join("hpcdesk.toml");
    let run = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra}\n[auth]\njwt_secret = \"{SECRET}\"\n",
                certs.path().join("data").display()
            ),
        )
        .unwrap();
        let out = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&format!("tls_cert = \"{}\"", cert.display()));
    assert!(
        err.contains("server.tls_key") && err.contains("private key"),
        "{err}"
    );
    let err = run(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        junk.display()
    ));
    assert!(
        err.contains("junk.key") && err.contains("private key"),
        "{err}"
    );
}
