//! The idle sweep with time under the test's control (a manual clock, no sleeping through
//! days): an idle session is swept, one with an open viewer is kept, one with recent input is
//! kept. The service runs in-process with the real local launcher and real Xvnc; the sweep is
//! triggered the way an operator does, with `hpcdesk sweep`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hpcdesk_server::Clock;
use serde_json::Value;

use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A token valid for a year of test time.
fn long_token(user: &str, role: &str) -> String {
    let claims = hpcdesk_server::auth::claims_for(
        user,
        &compute_user(),
        CLUSTER,
        role,
        "Normal",
        Utc::now().timestamp_millis(),
        Duration::from_secs(365 * 86400),
    );
    hpcdesk_server::auth::mint(&hpcdesk_server::config::Secret::new(SECRET), &claims)
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, token: &str) -> Value {
    http.request(method, url)
        .header("token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn the_idle_sweep_deletes_only_idle_sessions() {
    if !real_parts("idle sweep") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = format!("sw{}", std::process::id());
    let env = [
        ("HPCDESK_SERVER__DATA_DIR", dir.path().display().to_string()),
        ("HPCDESK_AUTH__JWT_SECRET", SECRET.to_owned()),
        ("HPCDESK_AUTH__CLUSTER_ID", CLUSTER.to_owned()),
        (
            "HPCDESK_AUTH__ROLES",
            r#"{"1" = "user", "9" = "admin"}"#.to_owned(),
        ),
        ("HPCDESK_LAUNCHER__NODE_NAME", node.clone()),
        (
            "HPCDESK_LAUNCHER__AGENT",
            agent_binary().display().to_string(),
        ),
        ("HPCDESK_LAUNCHER__GEOMETRY", "800x600".to_owned()),
        ("HPCDESK_LAUNCHER__DISPLAY_MIN", "20".to_owned()),
        // Grants outlive the test's days, so a refusal is the sweep's doing.
        ("HPCDESK_GATEWAY__GRANT_TTL", "7d".to_owned()),
        // Reconcile would not change the outcome; keep it out of the way.
        ("HPCDESK_LIFECYCLE__RECONCILE_EVERY", "1h".to_owned()),
    ];
    let config =
        hpcdesk_server::Config::load(None, env.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .unwrap();
    let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));

    rt.block_on(async {
        let launcher = hpcdesk_server::startup::build_launcher(&config).unwrap();
        let state = hpcdesk_server::build_with(config, launcher, clock.clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(hpcdesk_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let vnc = format!("{base}/hpc/openapi/v2/desktop/vnc");
        let (idle, watched, busy) = (
            long_token("sw-idle", "1"),
            long_token("sw-watched", "1"),
            long_token("sw-busy", "1"),
        );
        let mut ids = Vec::new();
        for t in [&idle, &watched, &busy] {
            let v = call(&http, reqwest::Method::PUT, vnc.clone(), t).await;
            assert_eq!(v["code"], "0", "{v}");
            ids.push(v["data"]["sessionId"].as_str().unwrap().to_owned());
        }
        let launch = |token: String, id: String| {
            let http = http.clone();
            let vnc = vnc.clone();
            async move {
                let l = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{vnc}/{id}/launchurl"),
                    &token,
                )
                .await;
                l["data"]["novncUrl"].as_str().unwrap().to_owned()
            }
        };

        // A viewer stays open on `watched` the whole time.
        let url = launch(watched.clone(), ids[1].clone()).await;
        let Connect::Open(mut watcher) = connect(&ws_url(&base, &url)).await else {
            panic!("viewer refused");
        };
        watcher.handshake().await;

        // 23 hours later someone types into `busy`, then leaves.
        clock.advance(chrono::Duration::hours(23));
        let url = launch(busy.clone(), ids[2].clone()).await;
        let Connect::Open(mut typist) = connect(&ws_url(&base, &url)).await else {
            panic!("viewer refused");
        };
        typist.handshake().await;
        typist.type_key(0xffe1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(typist);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A launch URL of `idle`, never used (a swept session has no open viewer: one with
        // a viewer is never swept).
        let idle_url = launch(idle.clone(), ids[0].clone()).await;

        // Two more hours: `idle` has had nothing for 25 h.
        clock.advance(chrono::Duration::hours(2));
        let user_try = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/hpcdesk/v1/sweep"),
            &idle,
        )
        .await;
        assert_eq!(user_try["code"], "10008", "only admins sweep: {user_try}");

        let admin = long_token("sw-admin", "9");
        let out = tokio::task::spawn_blocking({
            let base = base.clone();
            move || run_cli(&["sweep", "--api", &base, "--token", &admin], &[])
        })
        .await
        .unwrap();
        assert!(out.0, "hpcdesk sweep failed: {}\n{}", out.1, out.2);
        assert!(out.1.contains("swept 1"), "{}", out.1);
        assert!(out.1.contains(&ids[0]), "{}", out.1);

        let list = |token: String| {
            let http = http.clone();
            let vnc = vnc.clone();
            async move { call(&http, reqwest::Method::GET, vnc, &token).await["data"].clone() }
        };
        assert_eq!(
            list(idle.clone()).await,
            serde_json::json!([]),
            "idle session swept"
        );
        assert_eq!(list(watched.clone()).await[0]["status"], "running");
        assert_eq!(list(busy.clone()).await[0]["status"], "running");
        // The swept desktop's processes are gone; the others still run.
        let swept_display: u64 = ids[0].rsplit("--").next().unwrap().parse().unwrap();
        let alive = |d: u64| {
            procs().into_iter().any(|p| {
                let argv = cmdline(p);
                !zombie(p)
                    && argv.first().is_some_and(|a| a.contains("Xvnc"))
                    && argv.iter().any(|a| a == &format!(":{d}"))
                    && argv.iter().any(|a| a.contains(&format!("/{node}-{d}/")))
            })
        };
        assert!(!alive(swept_display));
        // Its grant, which has not expired, is refused from now on.
        match connect(&ws_url(&base, &idle_url)).await {
            Connect::Refused(403, why) => assert!(!why.contains("expired"), "{why}"),
            _ => panic!("the grant of a swept session still opens"),
        }

        // The open viewer is still served.
        let (rects, _, _) = watcher.first_update(800, 600).await;
        assert!(rects >= 1);
        drop(watcher);

        for (t, id) in [(&watched, &ids[1]), (&busy, &ids[2])] {
            let v = call(&http, reqwest::Method::DELETE, format!("{vnc}/{id}"), t).await;
            assert_eq!(v["code"], "0");
        }
        let _ = stop.send(());
        let _ = server.await;
    });
}
