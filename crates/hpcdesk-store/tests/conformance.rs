//! One story of the `Store` contract, run against every backend: SQLite always, PostgreSQL
//! when `HPCDESK_TEST_POSTGRES_URL` names a server (`ci/postgres.sh up` prints it; each test
//! gets a database of its own). In CI (`CI=true`) a missing PostgreSQL is a failure.

use std::sync::Arc;

use chrono::{Duration, Utc};
use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId, SessionState};
use hpcdesk_store::{
    Access, AccessKeyRecord, AuditEvent, AuditFilter, Claim, NewSession, OrgRecord, PostgresStore,
    SqliteStore, Started, Store, StoreError, UserRecord,
};

fn new_session(owner: &str) -> NewSession {
    NewSession {
        owner: owner.to_owned(),
        user_id: "1".into(),
        invoker: "org".into(),
        compute_user: ComputeUser::parse("alice").unwrap(),
        geometry: "1024x768".into(),
        desktop: "twm".into(),
        launcher: "local".into(),
        state: SessionState::Starting,
        node: None,
        marker: format!("m{}", uuid_like()),
        starter: "instance-a".into(),
        vnc_password_sealed: vec![9, 9],
        ends_at: None,
        now: Utc::now(),
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn started(display: u32) -> Started {
    let node = NodeName::parse("n1").unwrap();
    let display = DisplayNumber::new(display).unwrap();
    Started {
        session_id: SessionId::new(node.clone(), ComputeUser::parse("alice").unwrap(), display),
        node,
        display,
        host: "127.0.0.1".into(),
        port: display.default_port(),
        vnc_password_sealed: vec![1, 2, 3],
        handle: "{\"pid\":1}".into(),
        state: SessionState::Running,
        tls_pin: Some("ab12".into()),
        ends_at: None,
        now: Utc::now(),
    }
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let url = url.parse().unwrap();
    (
        Arc::new(SqliteStore::open(&url, Access::Serve).await.unwrap()),
        dir,
    )
}

/// A fresh database on the test server, dropped when the value is.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            })
        })
        .join();
    }
}

/// `None` (after saying so) when no server is configured outside CI.
async fn postgres() -> Option<(Arc<dyn Store>, PgDatabase)> {
    use sqlx::Connection;
    let Ok(admin_url) = std::env::var("HPCDESK_TEST_POSTGRES_URL") else {
        let msg = "PostgreSQL conformance: HPCDESK_TEST_POSTGRES_URL is not set \
                   (run `ci/postgres.sh up` as root)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} — required in CI"
        );
        eprintln!("SKIPPED {msg}");
        return None;
    };
    let name = format!("hpcdesk_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let store = PostgresStore::open(&url.parse().unwrap()).await.unwrap();
    Some((Arc::new(store), PgDatabase { admin_url, name }))
}

fn claimed(c: Claim) -> hpcdesk_store::SessionRecord {
    match c {
        Claim::Claimed(r) => r,
        Claim::Existing(r) => panic!("expected a new claim, got existing {r:?}"),
    }
}

async fn a_second_claim_returns_the_live_session(store: Arc<dyn Store>) {
    let first = claimed(store.claim_session(new_session("u1")).await.unwrap());
    match store.claim_session(new_session("u1")).await.unwrap() {
        Claim::Existing(r) => assert_eq!(r.key, first.key),
        Claim::Claimed(_) => panic!("two live sessions for one owner"),
    }
    // Another owner is independent.
    claimed(store.claim_session(new_session("u2")).await.unwrap());
}

async fn concurrent_claims_yield_one_session(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.claim_session(new_session("racer")).await.unwrap() })
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Claim::Claimed(r) => {
                new += 1;
                keys.insert(r.key);
            }
            Claim::Existing(r) => {
                keys.insert(r.key);
            }
        }
    }
    assert_eq!(new, 1);
    assert_eq!(keys.len(), 1);
}

async fn a_started_session_is_visible_and_listed(store: Arc<dyn Store>) {
    let rec = claimed(store.claim_session(new_session("u3")).await.unwrap());
    assert!(
        store.list_sessions(Some("u3")).await.unwrap().is_empty(),
        "no id yet"
    );
    let s = started(7);
    let id = s.session_id.clone();
    let rec = store.session_started(&rec.key, s).await.unwrap().unwrap();
    assert_eq!(rec.state, SessionState::Running);
    assert_eq!(rec.port, Some(5907));
    assert_eq!(
        rec.tls_pin.as_deref(),
        Some("ab12"),
        "the certificate pin is kept"
    );
    assert_eq!(rec.vnc_password_sealed.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(
        store.visible_session(&id).await.unwrap().unwrap().key,
        rec.key
    );
    assert_eq!(store.list_sessions(Some("u3")).await.unwrap().len(), 1);
    assert!(
        store
            .list_sessions(Some("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.list_sessions(None).await.unwrap().is_empty());

    // Conditional transitions.
    let now = Utc::now();
    assert!(
        !store
            .transition(
                &rec.key,
                &[SessionState::Starting],
                SessionState::Failed,
                "x",
                now
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition(
                &rec.key,
                &[SessionState::Running],
                SessionState::Failed,
                "Xvnc died",
                now
            )
            .await
            .unwrap()
    );
    let failed = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(failed.state, SessionState::Failed);
    assert_eq!(failed.status_reason, "Xvnc died");
    // Failed stays visible (with its reason) until cleared.
    assert!(store.visible_session(&id).await.unwrap().is_some());
    // Stopped is final.
    assert!(
        store
            .transition(
                &rec.key,
                &[SessionState::Failed],
                SessionState::Stopped,
                "deleted",
                now
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition(
                &rec.key,
                &[SessionState::Stopped],
                SessionState::Running,
                "",
                now
            )
            .await
            .unwrap()
    );
    // A stopped session stays listed (with its reason) until it is dismissed.
    assert_eq!(
        store.visible_session(&id).await.unwrap().unwrap().state,
        SessionState::Stopped
    );
    store.dismiss(&rec.key, now).await.unwrap();
    assert!(store.visible_session(&id).await.unwrap().is_none());
    assert!(store.list_sessions(Some("u3")).await.unwrap().is_empty());
}

async fn a_new_claim_clears_old_failures_and_reused_ids(store: Arc<dyn Store>) {
    let a = claimed(store.claim_session(new_session("u4")).await.unwrap());
    store
        .session_started(&a.key, started(9))
        .await
        .unwrap()
        .unwrap();
    store
        .transition(
            &a.key,
            &[SessionState::Running],
            SessionState::Failed,
            "gone",
            Utc::now(),
        )
        .await
        .unwrap();
    let b = claimed(store.claim_session(new_session("u4")).await.unwrap());
    assert_eq!(
        store.session_by_key(&a.key).await.unwrap().unwrap().state,
        SessionState::Stopped
    );
    assert!(
        store.list_sessions(Some("u4")).await.unwrap().is_empty(),
        "the failure is dismissed"
    );
    // Another owner's dead desktop on the same display is superseded when the id is reused.
    let c = claimed(store.claim_session(new_session("u5")).await.unwrap());
    store
        .session_started(&c.key, started(11))
        .await
        .unwrap()
        .unwrap();
    store
        .transition(
            &c.key,
            &[SessionState::Running],
            SessionState::Failed,
            "gone",
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .session_started(&b.key, started(11))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.session_by_key(&c.key).await.unwrap().unwrap().state,
        SessionState::Stopped
    );
    // A start cannot finish on a row that was stopped meanwhile.
    store
        .transition(
            &b.key,
            &SessionState::LIVE,
            SessionState::Stopped,
            "deleted",
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(
        store
            .session_started(&b.key, started(12))
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_failed_start_is_listed_under_its_id_with_the_reason(store: Arc<dyn Store>) {
    let rec = claimed(store.claim_session(new_session("u7")).await.unwrap());
    let id = started(13).session_id;
    store
        .start_failed(
            &rec.key,
            Some(id.clone()),
            "Xvnc exited: bad option",
            Utc::now(),
        )
        .await
        .unwrap();
    let failed = store.visible_session(&id).await.unwrap().unwrap();
    assert_eq!(failed.state, SessionState::Failed);
    assert_eq!(failed.status_reason, "Xvnc exited: bad option");
    assert_eq!(store.list_sessions(Some("u7")).await.unwrap().len(), 1);
    // The owner may create again at once.
    claimed(store.claim_session(new_session("u7")).await.unwrap());
    // A failure before any display was picked is recorded but has nothing to list.
    let rec = claimed(store.claim_session(new_session("u8")).await.unwrap());
    store
        .start_failed(&rec.key, None, "no such account", Utc::now())
        .await
        .unwrap();
    let r = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.status_reason.as_str()),
        (SessionState::Failed, "no such account")
    );
}

async fn activity_only_moves_forward(store: Arc<dyn Store>) {
    let rec = claimed(store.claim_session(new_session("u9")).await.unwrap());
    assert_eq!(rec.last_input_at, None);
    // Read first: a store that caches must still show the write that follows.
    let before = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(before.last_input_at, None);
    let t = Utc::now();
    store.record_activity(&rec.key, t).await.unwrap();
    store
        .record_activity(&rec.key, t - Duration::hours(1))
        .await
        .unwrap();
    let got = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(
        got.last_input_at.unwrap().timestamp_millis(),
        t.timestamp_millis()
    );
}

async fn a_time_limit_is_kept_moved_and_ends_with_the_session(store: Arc<dyn Store>) {
    let ms = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.timestamp_millis());
    let end = Utc::now() + Duration::minutes(20);
    let mut new = new_session("u10");
    new.ends_at = Some(end);
    let rec = claimed(store.claim_session(new).await.unwrap());
    assert_eq!(ms(rec.ends_at), ms(Some(end)));
    // A start that reports no end keeps the one stored; one that does (a job) sets it.
    let got = store
        .session_started(&rec.key, started(31))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ms(got.ends_at), ms(Some(end)));
    let later = end + Duration::hours(1);
    let moved = store
        .set_ends_at(&rec.key, Some(later), Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ms(moved.ends_at), ms(Some(later)));
    let read = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(ms(read.ends_at), ms(Some(later)));
    assert!(
        store
            .transition(
                &rec.key,
                &[SessionState::Running],
                SessionState::Stopped,
                "time limit reached",
                Utc::now()
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_ends_at(&rec.key, Some(later + Duration::hours(1)), Utc::now())
            .await
            .unwrap()
            .is_none(),
        "an ended session's limit moved"
    );
    let mut queued = new_session("u11");
    queued.ends_at = None;
    let rec = claimed(store.claim_session(queued).await.unwrap());
    let mut s = started(32);
    s.ends_at = Some(end);
    let got = store.session_started(&rec.key, s).await.unwrap().unwrap();
    assert_eq!(ms(got.ends_at), ms(Some(end)));
}

async fn viewers_count_per_instance_while_its_heartbeat_is_fresh(store: Arc<dyn Store>) {
    let t0 = Utc::now();
    store
        .publish_viewers("a", &[("s1".into(), 2), ("s2".into(), 1)], t0)
        .await
        .unwrap();
    store
        .publish_viewers("b", &[("s1".into(), 1)], t0)
        .await
        .unwrap();
    let fresh = t0 - Duration::seconds(30);
    let seen_by_b = store.viewers_elsewhere("b", fresh).await.unwrap();
    assert_eq!(seen_by_b.get("s1"), Some(&2));
    assert_eq!(seen_by_b.get("s2"), Some(&1));
    let seen_by_c = store.viewers_elsewhere("c", fresh).await.unwrap();
    assert_eq!(seen_by_c.get("s1"), Some(&3), "summed over instances");

    // A change, then a heartbeat without changes: the counts stay as last published.
    store
        .publish_viewers("a", &[("s2".into(), 0)], t0 + Duration::seconds(10))
        .await
        .unwrap();
    store
        .publish_viewers("a", &[], t0 + Duration::seconds(20))
        .await
        .unwrap();
    let seen_by_b = store.viewers_elsewhere("b", fresh).await.unwrap();
    assert_eq!(seen_by_b.get("s1"), Some(&2));
    assert_eq!(seen_by_b.get("s2"), None, "closed viewers are forgotten");

    // b's heartbeat is now stale: its viewers no longer count.
    let later = t0 + Duration::seconds(15);
    let seen_by_c = store.viewers_elsewhere("c", later).await.unwrap();
    assert_eq!(seen_by_c.get("s1"), Some(&2), "only a's viewers are fresh");

    store.withdraw_instance("a").await.unwrap();
    assert!(
        store
            .viewers_elsewhere("c", later)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn not_running_names_sessions_that_ended_or_never_were(store: Arc<dyn Store>) {
    let live = claimed(store.claim_session(new_session("u1")).await.unwrap());
    store.session_started(&live.key, started(1)).await.unwrap();
    let ended = claimed(store.claim_session(new_session("u2")).await.unwrap());
    store.session_started(&ended.key, started(2)).await.unwrap();
    assert!(
        store
            .transition(
                &ended.key,
                &[SessionState::Running],
                SessionState::Stopped,
                "deleted",
                Utc::now()
            )
            .await
            .unwrap()
    );
    let mut keys = vec![live.key.clone(), ended.key.clone(), "nope".to_owned()];
    // More keys than one statement takes.
    keys.extend((0..1200).map(|i| format!("k{i}")));
    let gone = store.not_running(&keys).await.unwrap();
    assert_eq!(gone.len(), keys.len() - 1);
    assert!(!gone.contains(&live.key));
    assert!(gone.contains(&ended.key));
}

/// Reads between every kind of session write: a store that keeps sessions in memory must
/// show each write to the next read.
async fn every_session_write_shows_in_the_next_read(store: Arc<dyn Store>) {
    let listed = |store: Arc<dyn Store>| async move {
        store
            .list_sessions(Some("w1"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.state, r.status_reason))
            .collect::<Vec<_>>()
    };
    assert!(listed(store.clone()).await.is_empty());
    let a = claimed(store.claim_session(new_session("w1")).await.unwrap());
    assert_eq!(
        store.session_by_key(&a.key).await.unwrap().unwrap().state,
        SessionState::Starting
    );
    let id = started(31).session_id;
    assert!(store.visible_session(&id).await.unwrap().is_none());
    store
        .start_failed(&a.key, Some(id.clone()), "Xvnc said no", Utc::now())
        .await
        .unwrap();
    assert_eq!(
        listed(store.clone()).await,
        vec![(SessionState::Failed, "Xvnc said no".to_owned())]
    );
    assert_eq!(
        store.visible_session(&id).await.unwrap().unwrap().state,
        SessionState::Failed
    );
    // A new claim dismisses the failure.
    let b = claimed(store.claim_session(new_session("w1")).await.unwrap());
    assert!(listed(store.clone()).await.is_empty());
    assert!(store.visible_session(&id).await.unwrap().is_none());
    let queued_id = SessionId::parse("slurm--alice--SIG--77").unwrap();
    store
        .session_queued(
            &b.key,
            &queued_id,
            "{}",
            &[1],
            "queued: Priority",
            Utc::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listed(store.clone()).await,
        vec![(SessionState::Pending, "queued: Priority".to_owned())]
    );
    assert_eq!(
        store
            .visible_session(&queued_id)
            .await
            .unwrap()
            .unwrap()
            .key,
        b.key
    );
}

async fn a_queued_session_is_listed_pending_and_can_start_later(store: Arc<dyn Store>) {
    let rec = claimed(store.claim_session(new_session("u10")).await.unwrap());
    let id = SessionId::parse("slurm--alice--SIG--123").unwrap();
    let q = store
        .session_queued(
            &rec.key,
            &id,
            "{\"job\":123}",
            &[7, 7],
            "queued: Resources",
            Utc::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(q.state, SessionState::Pending);
    assert!(q.queued, "a queued desktop says so");
    assert!(!rec.queued, "a claimed one is not queued yet");
    assert_eq!(q.vnc_password_sealed.as_deref(), Some(&[7u8, 7][..]));
    assert_eq!(q.session_id.as_ref(), Some(&id));
    let listed = store.list_sessions(Some("u10")).await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].status_reason.as_str()),
        (1, "queued: Resources")
    );
    assert!(
        store
            .session_progress(&rec.key, SessionState::Starting, "runs on n1", Utc::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .session_progress(&rec.key, SessionState::Starting, "runs on n1", Utc::now())
            .await
            .unwrap(),
        "nothing changed"
    );
    let listed = store.list_sessions(Some("u10")).await.unwrap();
    assert_eq!(
        (listed[0].state, listed[0].status_reason.as_str()),
        (SessionState::Starting, "runs on n1")
    );
    // A new claim by the same owner returns the queued session.
    assert!(matches!(
        store.claim_session(new_session("u10")).await.unwrap(),
        Claim::Existing(_)
    ));
    let mut s = started(21);
    s.session_id = id.clone();
    let running = store.session_started(&rec.key, s).await.unwrap().unwrap();
    assert_eq!(running.state, SessionState::Running);
    assert_eq!(
        running.session_id.as_ref(),
        Some(&id),
        "the queued id stays"
    );
    assert_eq!(running.display.unwrap().get(), 21);
    assert!(
        !store
            .session_progress(&rec.key, SessionState::Pending, "x", Utc::now())
            .await
            .unwrap(),
        "a running session is not pending again"
    );
}

/// What a start writes before its desktop exists is enough to find the desktop afterwards.
async fn a_session_is_found_by_the_marker_written_before_its_launch(store: Arc<dyn Store>) {
    let new = new_session("mk1");
    let marker = new.marker.clone();
    let rec = claimed(store.claim_session(new).await.unwrap());
    assert_eq!(
        (rec.marker.as_str(), rec.starter.as_str()),
        (marker.as_str(), "instance-a")
    );
    assert_eq!(rec.vnc_password_sealed.as_deref(), Some(&[9u8, 9][..]));
    let found = store.session_by_marker(&marker).await.unwrap().unwrap();
    assert_eq!(found.key, rec.key);
    assert!(store.session_by_marker("").await.unwrap().is_none());
    assert!(store.session_by_marker("nope").await.unwrap().is_none());
    // Ended and dismissed sessions are still found: their desktop, if any, is hpcdesk's.
    store
        .transition(
            &rec.key,
            &[SessionState::Starting],
            SessionState::Stopped,
            "x",
            Utc::now(),
        )
        .await
        .unwrap();
    store.dismiss(&rec.key, Utc::now()).await.unwrap();
    let found = store.session_by_marker(&marker).await.unwrap().unwrap();
    assert_eq!(found.state, SessionState::Stopped);
    // Recently ended sessions are there to look for late desktops.
    let ended = store
        .sessions_ended_since(Utc::now() - Duration::minutes(1))
        .await
        .unwrap();
    assert!(ended.iter().any(|r| r.key == rec.key));
    assert!(
        store
            .sessions_ended_since(Utc::now() + Duration::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn status_reasons_are_stored_bounded(store: Arc<dyn Store>) {
    let rec = claimed(store.claim_session(new_session("rs1")).await.unwrap());
    let flood = "x".repeat(100_000);
    store
        .start_failed(&rec.key, None, &flood, Utc::now())
        .await
        .unwrap();
    let r = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Failed);
    assert_eq!(
        r.status_reason.chars().count(),
        hpcdesk_core::state::MAX_REASON_CHARS
    );
    let rec = claimed(store.claim_session(new_session("rs1")).await.unwrap());
    store
        .transition(
            &rec.key,
            &[SessionState::Starting],
            SessionState::Failed,
            &flood,
            Utc::now(),
        )
        .await
        .unwrap();
    let r = store.session_by_key(&rec.key).await.unwrap().unwrap();
    assert!(r.status_reason.chars().count() <= hpcdesk_core::state::MAX_REASON_CHARS);
}

async fn instances_are_fresh_while_they_beat(store: Arc<dyn Store>) {
    let now = Utc::now();
    store.publish_viewers("i1", &[], now).await.unwrap();
    store
        .publish_viewers("i2", &[], now - Duration::seconds(60))
        .await
        .unwrap();
    let fresh = store
        .fresh_instances(now - Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(fresh, vec!["i1".to_owned()]);
    store.ping().await.unwrap();
}

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        user_id: "1001".into(),
        password_hash: "$argon2id$fake".into(),
        compute_user: ComputeUser::parse("alice").unwrap(),
        role: "1".into(),
        account_status: "Normal".into(),
        home_path: "/home/alice".into(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        tokens_valid_after: None,
    }
}

async fn accounts_orgs_and_keys_are_kept(store: Arc<dyn Store>) {
    store.add_user(user("ann")).await.unwrap();
    assert!(matches!(
        store.add_user(user("ann")).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        store.user("ann").await.unwrap().unwrap().home_path,
        "/home/alice"
    );
    assert!(store.user("nobody").await.unwrap().is_none());
    assert_eq!(
        store.user("ann").await.unwrap().unwrap().tokens_valid_after,
        None
    );
    // A status that is not a disable keeps the tokens issued so far.
    store
        .set_user_status("ann", "Owe", Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.user("ann").await.unwrap().unwrap().tokens_valid_after,
        None
    );
    let t1 = Utc::now();
    store.set_user_status("ann", "Disable", t1).await.unwrap();
    let voided = store.user("ann").await.unwrap().unwrap().tokens_valid_after;
    assert_eq!(
        voided.map(|t| t.timestamp_millis()),
        Some(t1.timestamp_millis())
    );
    store
        .set_user_password("ann", "$argon2id$new", Utc::now())
        .await
        .unwrap();
    let ann = store.user("ann").await.unwrap().unwrap();
    assert_eq!(
        (ann.account_status.as_str(), ann.password_hash.as_str()),
        ("Disable", "$argon2id$new")
    );
    assert!(matches!(
        store.set_user_status("nobody", "Normal", Utc::now()).await,
        Err(StoreError::Missing(_))
    ));
    assert_eq!(store.list_users().await.unwrap().len(), 1);

    let org = OrgRecord {
        org_id: "org1".into(),
        name: "Portal".into(),
        created_at: Utc::now(),
    };
    store.add_org(org.clone()).await.unwrap();
    assert!(matches!(
        store.add_org(org).await,
        Err(StoreError::Exists(_))
    ));
    assert!(store.org("org1").await.unwrap().is_some());
    assert!(store.org("org2").await.unwrap().is_none());

    let key = AccessKeyRecord {
        access_key: "AK1".into(),
        user_name: "ann".into(),
        secret_sealed: vec![1, 2, 3],
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.add_access_key(key.clone()).await.unwrap();
    let mut orphan = key.clone();
    orphan.access_key = "AK2".into();
    orphan.user_name = "nobody".into();
    assert!(matches!(
        store.add_access_key(orphan).await,
        Err(StoreError::Missing(_))
    ));
    assert_eq!(
        store
            .access_key("AK1")
            .await
            .unwrap()
            .unwrap()
            .secret_sealed,
        vec![1, 2, 3]
    );
    let t3 = Utc::now() + Duration::seconds(5);
    store.revoke_access_key("AK1", t3).await.unwrap();
    assert_eq!(
        store
            .user("ann")
            .await
            .unwrap()
            .unwrap()
            .tokens_valid_after
            .map(|t| t.timestamp_millis()),
        Some(t3.timestamp_millis()),
        "revoking a key voids its user's tokens"
    );
    assert!(
        store
            .access_key("AK1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(matches!(
        store.revoke_access_key("AK1", Utc::now()).await,
        Err(StoreError::Missing(_))
    ));
}

async fn a_signature_can_be_used_once(store: Arc<dyn Store>) {
    let now = Utc::now();
    assert!(
        store
            .use_signature("abc", now + Duration::minutes(5), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_signature("abc", now + Duration::minutes(5), now)
            .await
            .unwrap()
    );
    // Once expired it is forgotten (its timestamp can no longer pass anyway).
    let later = now + Duration::minutes(6);
    assert!(
        store
            .use_signature("abc", later + Duration::minutes(5), later)
            .await
            .unwrap()
    );
}

/// Audit lines written and queued at once, concurrently, are all kept; a line written after
/// queued ones is committed no earlier than they are.
async fn audit_lines_written_and_queued_at_once_are_all_kept(store: Arc<dyn Store>) {
    let now = Utc::now();
    let line = |i: u16| AuditEvent {
        at: now,
        kind: "launch_url_issued".into(),
        user: "ag1".into(),
        session_id: format!("s{i}"),
        peer: String::new(),
        detail: String::new(),
    };
    let tasks: Vec<_> = (0..300u16)
        .map(|i| {
            let store = store.clone();
            let e = line(i);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.queue_audit(e).await
                } else {
                    store.record_audit(e).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    store.record_audit(line(300)).await.unwrap();
    let lines = store
        .audit(AuditFilter {
            user: Some("ag1".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(lines.len(), 301);
}

/// Queued lines nobody waits for are written soon on their own (the writer lingers a few
/// milliseconds for more), and a flush returns only once every line queued before it is.
async fn queued_audit_lines_are_written_soon_and_by_a_flush(store: Arc<dyn Store>) {
    let line = |user: &str, i: u16| AuditEvent {
        at: Utc::now(),
        kind: "launch_url_issued".into(),
        user: user.into(),
        session_id: format!("s{i}"),
        peer: String::new(),
        detail: String::new(),
    };
    let count = |user: &'static str| {
        let store = store.clone();
        async move {
            store
                .audit(AuditFilter {
                    user: Some(user.into()),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    for i in 0..3 {
        store.queue_audit(line("soon", i)).await.unwrap();
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count("soon").await < 3 {
        assert!(
            std::time::Instant::now() < until,
            "queued lines not written within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for i in 0..40 {
        let mut e = line("flushed", i);
        // Text that needs escaping comes back as it went in.
        e.detail = format!("view only; \"quoted\" \\ ünïcode\n{i}");
        e.peer = "2001:db8::1".into();
        store.queue_audit(e).await.unwrap();
    }
    store.flush_audit().await.unwrap();
    assert_eq!(
        count("flushed").await,
        40,
        "a flush writes every queued line"
    );
    let lines = store
        .audit(AuditFilter {
            user: Some("flushed".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e.session_id, format!("s{i}"), "in the order queued");
        assert_eq!(e.detail, format!("view only; \"quoted\" \\ ünïcode\n{i}"));
        assert_eq!(e.peer, "2001:db8::1");
        assert_eq!(e.kind, "launch_url_issued");
    }
}

async fn the_audit_log_filters_by_user_and_time(store: Arc<dyn Store>) {
    let t0 = Utc::now();
    for (i, u) in ["a", "b", "a"].iter().enumerate() {
        store
            .record_audit(AuditEvent {
                at: t0 + Duration::seconds(i as i64),
                kind: "session_created".into(),
                user: (*u).into(),
                session_id: format!("s{i}"),
                peer: "127.0.0.1".into(),
                detail: String::new(),
            })
            .await
            .unwrap();
    }
    let all = store.audit(AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].session_id, "s0", "oldest first");
    let a = store
        .audit(AuditFilter {
            user: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    let recent = store
        .audit(AuditFilter {
            since: Some(t0 + Duration::seconds(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let last = store
        .audit(AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last[0].session_id, "s2", "the newest when limited");
}

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, _dir) = sqlite().await;
            super::$name(store).await;
        }
    )*};
}

macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let Some((store, _db)) = postgres().await else { return };
            super::$name(store).await;
        }
    )*};
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            on_sqlite!($($name),*);
        }
        mod postgres {
            use super::*;
            on_postgres!($($name),*);
        }
    };
}

on_every_backend!(
    a_second_claim_returns_the_live_session,
    concurrent_claims_yield_one_session,
    a_started_session_is_visible_and_listed,
    a_new_claim_clears_old_failures_and_reused_ids,
    a_failed_start_is_listed_under_its_id_with_the_reason,
    activity_only_moves_forward,
    a_time_limit_is_kept_moved_and_ends_with_the_session,
    accounts_orgs_and_keys_are_kept,
    a_signature_can_be_used_once,
    the_audit_log_filters_by_user_and_time,
    a_queued_session_is_listed_pending_and_can_start_later,
    viewers_count_per_instance_while_its_heartbeat_is_fresh,
    every_session_write_shows_in_the_next_read,
    not_running_names_sessions_that_ended_or_never_were,
    a_session_is_found_by_the_marker_written_before_its_launch,
    status_reasons_are_stored_bounded,
    instances_are_fresh_while_they_beat,
    audit_lines_written_and_queued_at_once_are_all_kept,
    queued_audit_lines_are_written_soon_and_by_a_flush,
);

/// A SQLite file is locked to the one store that serves it (its sessions live in that
/// store's memory) for as long as that store lives; admin commands beside it need no lock.
#[tokio::test]
async fn a_sqlite_file_serves_one_store_at_a_time_and_admins_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let url: hpcdesk_store::StoreUrl = format!("sqlite://{}/t.db", dir.path().display())
        .parse()
        .unwrap();
    let first = SqliteStore::open(&url, Access::Serve).await.unwrap();
    let second = SqliteStore::open(&url, Access::Serve).await.unwrap_err();
    assert!(matches!(second, StoreError::InUse { .. }), "{second:?}");
    assert!(
        second.to_string().contains("another hpcdesk serve uses"),
        "{second}"
    );
    let admin = SqliteStore::open(&url, Access::Admin).await.unwrap();
    admin
        .add_org(OrgRecord {
            org_id: "o1".into(),
            name: "Org".into(),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    drop(first);
    let again = SqliteStore::open(&url, Access::Serve).await.unwrap();
    assert_eq!(
        again.list_orgs().await.unwrap().len(),
        1,
        "the admin's write is there"
    );
}

/// A SQLite file that refuses writes (read-only here; a full disk is the same to hpcdesk) is
/// "unavailable", with nothing written, and not an internal error.
#[tokio::test]
async fn a_sqlite_file_that_refuses_writes_is_unavailable_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let url = |q: &str| format!("sqlite://{}{q}", path.display()).parse().unwrap();
    let rw = SqliteStore::open(&url(""), Access::Serve).await.unwrap();
    let before = rw.claim_session(new_session("ro0")).await.unwrap();
    drop(rw);
    let ro = SqliteStore::open(&url("?mode=ro"), Access::Serve)
        .await
        .unwrap();
    let err = ro.claim_session(new_session("ro1")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let sessions = ro.sessions_in(&SessionState::LIVE).await.unwrap();
    assert_eq!(sessions.len(), 1, "only the session written before");
    assert_eq!(sessions[0].key, claimed(before).key);
    // The group-committed audit writer says so too, to a caller that waits.
    let line = AuditEvent {
        at: Utc::now(),
        kind: "session_created".into(),
        user: "ro0".into(),
        session_id: String::new(),
        peer: String::new(),
        detail: String::new(),
    };
    assert!(ro.record_audit(line).await.unwrap_err().is_unavailable());
}
