//! In-process tests of `sessions` under Tokio's paused clock: waiting for a desktop to be
//! ready and following a queued job take minutes of desktop time and milliseconds of test
//! time, and what is measured is what the caller sees at each moment.
//!
//! The service is built before the clock is paused (opening SQLite must not see time jump).
//! Then [`pause`] stops the clock and keeps the runtime from ever idling (a task that only
//! yields), so Tokio never advances the clock by itself while the store's worker thread is
//! busy: time moves only when the test moves it ([`pass`]), and after each step the tasks,
//! and the store, catch up ([`settle`]).

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use hpcdesk_core::{DisplayNumber, NodeName};
use hpcdesk_launcher::fake::{Call, FakeLauncher, Plan};
use hpcdesk_launcher::{Launched, Progress};
use hpcdesk_server::AppState;
use support::{Answer, DESKTOPS, call, service, token};
use tokio::task::JoinHandle;

/// Stops the clock; the returned guard keeps the runtime busy (see the module) until dropped.
fn pause() -> Spinner {
    tokio::time::pause();
    Spinner(tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    }))
}

struct Spinner(JoinHandle<()>);

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lets every task run as far as it can without the clock moving, with the store's worker
/// thread given real time to answer.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Moves the paused clock forward by `by`, half a second at a time, settling after each step.
async fn pass(by: Duration) {
    pass_by(by, Duration::from_millis(500)).await
}

/// Moves the clock in `step`s until `done` holds, for at most `limit`; returns how far it
/// moved. A machine under load may let a woken task take a step longer to reach its next
/// timer: tests bound what happens by when it must have happened, not to the step.
async fn pass_until(limit: Duration, step: Duration, done: impl Fn() -> bool) -> Duration {
    let mut gone = Duration::ZERO;
    while !done() && gone < limit {
        pass_by(step, step).await;
        gone += step;
    }
    gone
}

async fn pass_by(by: Duration, step: Duration) {
    let mut gone = Duration::ZERO;
    while gone < by {
        // Tokio rounds a timer's deadline up to its next millisecond: one more, so that a
        // sleep of exactly `step` that began at the last step ends at this one.
        tokio::time::advance(step + Duration::from_millis(1)).await;
        settle().await;
        gone += step;
    }
}

fn create(app: &AppState, user: &str) -> JoinHandle<Answer> {
    let (app, t) = (app.clone(), token(user));
    tokio::spawn(async move { call(&app, Method::PUT, DESKTOPS, Some(&t), "").await })
}

#[tokio::test]
async fn a_second_create_waits_for_the_start_in_progress_and_gets_the_same_desktop() {
    let fake =
        Arc::new(FakeLauncher::new(Plan::Ready { port: 5901 }).with_delay(Duration::from_secs(20)));
    let app = service(fake.clone(), &[]).await;
    let _clock = pause();
    let first = create(&app, "alice");
    settle().await;
    assert_eq!(fake.starts(), 1, "the first create is starting the desktop");
    let second = create(&app, "alice");
    pass(Duration::from_secs(19)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "both wait for the desktop"
    );
    pass_until(Duration::from_secs(6), Duration::from_millis(500), || {
        first.is_finished() && second.is_finished()
    })
    .await;
    assert!(
        first.is_finished() && second.is_finished(),
        "both answer once it is ready"
    );
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((a.code(), b.code()), ("0", "0"), "{} {}", a.json, b.json);
    assert_eq!(a.json["data"]["status"], "running");
    assert_eq!(a.json["data"]["sessionId"], b.json["data"]["sessionId"]);
    assert_eq!(fake.starts(), 1, "one desktop, started once");
}

fn launched() -> Launched {
    Launched {
        node: NodeName::parse("n7").unwrap(),
        display: DisplayNumber::new(1).unwrap(),
        host: "10.0.0.7".into(),
        port: 5901,
        handle: "job".into(),
        warnings: Vec::new(),
        tls_pin: None,
        ends_at: None,
    }
}

fn progress_calls(fake: &FakeLauncher) -> usize {
    fake.calls()
        .iter()
        .filter(|c| matches!(c, Call::Progress { .. }))
        .count()
}

#[tokio::test]
async fn a_queued_job_is_followed_until_its_desktop_is_ready_and_the_create_answers_running() {
    let fake = Arc::new(FakeLauncher::new(Plan::Queued {
        steps: vec![
            Progress::Pending("Priority".into()),
            Progress::Pending("Resources".into()),
            Progress::Starting("the job runs on n7".into()),
            Progress::Ready(launched()),
        ],
    }));
    let app = service(fake.clone(), &[]).await;
    let _clock = pause();
    let create = create(&app, "alice");
    settle().await;
    assert!(!create.is_finished(), "the create follows the job");
    let l = call(&app, Method::GET, DESKTOPS, Some(&token("alice")), "").await;
    assert_eq!(l.json["data"][0]["status"], "pending");
    assert_eq!(l.json["data"][0]["statusReason"], "Priority");
    let half = Duration::from_millis(500);
    pass_until(Duration::from_secs(3), half, || progress_calls(&fake) >= 3).await;
    let l = call(&app, Method::GET, DESKTOPS, Some(&token("alice")), "").await;
    assert_eq!(l.json["data"][0]["status"], "starting", "{}", l.json);
    assert_eq!(l.json["data"][0]["statusReason"], "the job runs on n7");
    pass_until(Duration::from_secs(3), half, || create.is_finished()).await;
    assert!(create.is_finished());
    let a = create.await.unwrap();
    assert_eq!(a.code(), "0", "{}", a.json);
    assert_eq!(a.json["data"]["status"], "running");
    assert_eq!(a.json["data"]["hostName"], "n7");
    assert_eq!(progress_calls(&fake), 4, "asked every half second, no more");
}

#[tokio::test]
async fn a_job_still_queued_at_the_start_timeout_is_answered_pending_and_followed_on() {
    let fake = Arc::new(FakeLauncher::new(Plan::Queued {
        steps: vec![Progress::Pending("Resources".into())],
    }));
    let app = service(fake.clone(), &[("HPCDESK_LAUNCHER__START_TIMEOUT", "30s")]).await;
    let _clock = pause();
    let create = create(&app, "alice");
    let second = Duration::from_secs(1);
    pass_by(Duration::from_secs(29), second).await;
    assert!(
        !create.is_finished(),
        "the create waits up to launcher.start_timeout"
    );
    pass_until(Duration::from_secs(5), second, || create.is_finished()).await;
    assert!(create.is_finished());
    let a = create.await.unwrap();
    assert_eq!(a.code(), "0", "{}", a.json);
    assert_eq!(a.json["data"]["status"], "pending");
    assert_eq!(a.json["data"]["statusReason"], "Resources");
    // The background watcher takes over from the create.
    let asked = progress_calls(&fake);
    hpcdesk_server::lifecycle::follow_queued(&app)
        .await
        .unwrap();
    assert_eq!(progress_calls(&fake), asked + 1);
}

#[tokio::test]
async fn a_job_that_fails_in_the_queue_is_815008_with_slurms_reason_and_listed_failed() {
    let fake = Arc::new(FakeLauncher::new(Plan::Queued {
        steps: vec![
            Progress::Pending("Priority".into()),
            Progress::Failed("the job failed: NODE_FAIL".into()),
        ],
    }));
    let app = service(fake.clone(), &[]).await;
    let _clock = pause();
    let create = create(&app, "alice");
    pass_until(Duration::from_secs(5), Duration::from_millis(500), || {
        create.is_finished()
    })
    .await;
    assert!(create.is_finished());
    let a = create.await.unwrap();
    assert_eq!((a.code(), a.msg()), ("815008", "the job failed: NODE_FAIL"));
    let l = call(&app, Method::GET, DESKTOPS, Some(&token("alice")), "").await;
    assert_eq!(l.json["data"][0]["status"], "failed");
    assert!(
        fake.calls().iter().any(|c| matches!(c, Call::Stop { .. })),
        "what is left of the job is stopped"
    );
}
