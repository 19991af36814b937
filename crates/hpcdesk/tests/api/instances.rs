//! Several hpcdesk instances on one PostgreSQL, as behind a load balancer: one desktop per
//! user across instances, a grant issued by one opens through another's gateway, every
//! instance lists the viewer and none sweeps the desktop it serves, a session ended through
//! another instance closes the viewers this one holds, and a delete through one stops the
//! desktop every instance listed.

use std::time::Duration;

use crate::helpers::*;
use crate::viewer::{Connect, connect, ws_url};

/// A database of its own on the test PostgreSQL (`HPCDESK_TEST_POSTGRES_URL`), dropped
/// afterwards. `None` outside CI when there is none; a failure in CI.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(test: &str) -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("HPCDESK_TEST_POSTGRES_URL") else {
            let msg = format!(
                "{test}: HPCDESK_TEST_POSTGRES_URL is not set (run `ci/postgres.sh up` as root)"
            );
            assert!(!in_ci(), "{msg} — required in CI");
            eprintln!("SKIPPED {msg}");
            return None;
        };
        let name = format!("hpcdesk_i_{}", uuid::Uuid::new_v4().simple());
        run_sql(&admin_url, &format!("CREATE DATABASE \"{name}\""), &[]);
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        run_sql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            &[],
        );
    }
}

/// Runs one statement with text parameters `$1…`.
fn run_sql(url: &str, sql: &str, params: &[&str]) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for p in params {
            q = q.bind(*p);
        }
        q.execute(&mut c).await.unwrap();
    });
}

#[test]
fn two_instances_on_one_postgres_share_desktops_grants_viewers_and_deletes() {
    if !real_parts("several instances") {
        return;
    }
    let Some(db) = PgDatabase::create("several instances") else {
        return;
    };
    // What a site shares between instances: the store, the server secret (grants and sealed
    // VNC passwords), the token secret (in every config already) and the node.
    let node = format!("mi{}", std::process::id());
    let opts = |idle_after: &str| Options {
        node: Some(node.clone()),
        env: vec![
            ("HPCDESK_STORE__URL".into(), db.url.clone()),
            (
                "HPCDESK_SERVER__SECRET".into(),
                "a-server-secret-both-instances-share".into(),
            ),
            ("HPCDESK_LIFECYCLE__IDLE_AFTER".into(), idle_after.into()),
        ],
        ..Options::default()
    };
    let a = TestApp::spawn_with(opts("24h"));
    // b sweeps anything idle for a second: only a viewer on a keeps the desktop.
    let b = TestApp::spawn_with(opts("1s"));
    let token = a.token("multi");

    let created = a.create(&token);
    assert_eq!(created["code"], "0", "{created}\n{}", a.log_text());
    let id = created["data"]["sessionId"].as_str().unwrap().to_owned();
    let again = b.create(&token);
    assert_eq!(again["code"], "0", "{again}");
    assert_eq!(
        again["data"]["sessionId"], id,
        "one desktop per user on every instance"
    );
    assert_eq!(a.xvnc_pids().len(), 1);
    assert_eq!(b.list(&token)[0]["status"], "running");

    // A grant from b opens through a's gateway.
    let l = b.launch_url(&token, &id);
    assert_eq!(l["code"], "0", "{l}");
    let url = l["data"]["novncUrl"].as_str().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut viewer = match rt.block_on(connect(&ws_url(&a.base, &url))) {
        Connect::Open(v) => *v,
        Connect::Refused(status, body) => panic!("a refused b's grant {status}: {body}"),
    };
    let init = rt.block_on(viewer.handshake());
    assert_eq!((init.width, init.height), (1024, 768));

    // b lists the viewer a holds, and its sweep keeps the desktop.
    assert!(
        eventually(Duration::from_secs(5), || b.list(&token)[0]["connections"]
            == 1),
        "b does not see a's viewer: {:?}",
        b.list(&token)
    );
    std::thread::sleep(Duration::from_millis(1100));
    let admin = token_with("mi-admin", &compute_user(), |c| c.role = "9".into());
    let swept = b.call("POST", "/hpcdesk/v1/sweep", Some(&admin)).1;
    assert_eq!(swept["code"], "0", "{swept}");
    assert_eq!(swept["data"]["inUse"], 1, "{swept}");
    assert_eq!(swept["data"]["swept"], serde_json::json!([]), "{swept}");

    // Another instance ends the session (its delete has marked the row; the desktop is not
    // gone yet): a closes the viewer it holds within about a second, with "deleted" (4001,
    // which tells noVNC not to reconnect).
    run_sql(
        &db.url,
        "UPDATE sessions SET state = 'stopped', status_reason = 'deleted elsewhere' \
         WHERE session_id = $1",
        &[&id],
    );
    let started = std::time::Instant::now();
    let code = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), viewer.closed())
            .await
            .expect("a kept serving a stopped session's viewer")
    });
    assert_eq!(code, Some(4001));
    assert!(started.elapsed() < Duration::from_millis(2500));

    // The delete through b stops the desktop; a lists nothing.
    let deleted = b.delete(&token, &id);
    assert_eq!(deleted["code"], "0", "{deleted}");
    assert!(a.list(&token).is_empty(), "{:?}", a.list(&token));
    assert!(eventually(Duration::from_secs(5), || a
        .xvnc_pids()
        .is_empty()));

    // Neither log holds the database password.
    for app in [&a, &b] {
        assert!(
            !app.log_text().contains("hpcdesk-ci"),
            "the store password was logged"
        );
    }
}
