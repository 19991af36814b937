//! A time limit on every call of a [`Store`]: [`Bounded`].
//!
//! A database that is down refuses connections, and the pools' acquire timeouts turn that
//! into [`StoreError::Unavailable`] within a second. A database that is *unreachable* (its
//! host gone, packets dropped) can leave a query on an established connection waiting for
//! TCP to give up, which takes minutes. Every call through [`Bounded`] ends within
//! [`CALL_LIMIT`] either way, as `Unavailable`, so no request or background round of
//! hpcdesk waits on the database longer than that. A write cut off this way may still be
//! committed by the database: each write is a single conditional statement or transaction,
//! so it is either whole or not there, and callers treat "unavailable" as "may retry".

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hpcdesk_core::{SessionId, SessionState};

use crate::{
    AccessKeyRecord, AuditEvent, AuditFilter, Claim, NewSession, OrgRecord, SessionRecord, Started,
    Store, StoreError, UserRecord,
};

/// The longest any store call may take.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

/// `inner` with every call bounded by `limit`.
pub struct Bounded {
    inner: Arc<dyn Store>,
    limit: Duration,
}

impl Bounded {
    pub fn new(inner: Arc<dyn Store>, limit: Duration) -> Self {
        Bounded { inner, limit }
    }

    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // Many calls are answered at once, from memory (a cached session, a queued audit
        // line): those need no timer, whose setting and clearing is a good part of their cost.
        let mut call = std::pin::pin!(call);
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(answer) = first {
            return answer;
        }
        match tokio::time::timeout(self.limit, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the database did not answer within {}",
                humantime::format_duration(self.limit)
            ))),
        }
    }
}

/// Implements [`Store`] for [`Bounded`] from the list of its methods: each forwards its
/// arguments to the inner store within the time limit.
macro_rules! bounded {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        #[async_trait]
        impl Store for Bounded {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    self.within(self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

bounded! {
    fn claim_session(&self, new: NewSession) -> Claim;
    fn session_started(&self, key: &str, started: Started) -> Option<SessionRecord>;
    fn session_queued(
        &self,
        key: &str,
        session_id: &SessionId,
        handle: &str,
        vnc_password_sealed: &[u8],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<SessionRecord>;
    fn session_progress(
        &self,
        key: &str,
        state: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> bool;
    fn start_failed(
        &self,
        key: &str,
        at: Option<SessionId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> bool;
    fn transition(
        &self,
        key: &str,
        from: &[SessionState],
        to: SessionState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> bool;
    fn dismiss(&self, key: &str, now: DateTime<Utc>) -> ();
    fn session_by_key(&self, key: &str) -> Option<Arc<SessionRecord>>;
    fn visible_session(&self, id: &SessionId) -> Option<Arc<SessionRecord>>;
    fn list_sessions(&self, owner: Option<&str>) -> Vec<SessionRecord>;
    fn sessions_in(&self, states: &[SessionState]) -> Vec<SessionRecord>;
    fn sessions_ended_since(&self, since: DateTime<Utc>) -> Vec<SessionRecord>;
    fn session_by_marker(&self, marker: &str) -> Option<SessionRecord>;
    fn fresh_instances(&self, fresh_after: DateTime<Utc>) -> Vec<String>;
    fn ping(&self) -> ();
    fn set_ends_at(&self, key: &str, ends_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<SessionRecord>;
    fn record_activity(&self, key: &str, last_input: DateTime<Utc>) -> ();
    fn add_user(&self, user: UserRecord) -> ();
    fn user(&self, name: &str) -> Option<UserRecord>;
    fn list_users(&self) -> Vec<UserRecord>;
    fn set_user_status(&self, name: &str, status: &str, now: DateTime<Utc>) -> ();
    fn set_user_password(&self, name: &str, password_hash: &str, now: DateTime<Utc>) -> ();
    fn add_org(&self, org: OrgRecord) -> ();
    fn org(&self, org_id: &str) -> Option<OrgRecord>;
    fn list_orgs(&self) -> Vec<OrgRecord>;
    fn add_access_key(&self, key: AccessKeyRecord) -> ();
    fn access_key(&self, access_key: &str) -> Option<AccessKeyRecord>;
    fn list_access_keys(&self) -> Vec<AccessKeyRecord>;
    fn revoke_access_key(&self, access_key: &str, now: DateTime<Utc>) -> ();
    fn use_signature(
        &self,
        signature: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool;
    fn publish_viewers(
        &self,
        instance: &str,
        changed: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> ();
    fn viewers_elsewhere(
        &self,
        instance: &str,
        fresh_after: DateTime<Utc>,
    ) -> std::collections::HashMap<String, u32>;
    fn withdraw_instance(&self, instance: &str) -> ();
    fn not_running(&self, keys: &[String]) -> Vec<String>;
    fn record_audit(&self, event: AuditEvent) -> ();
    fn queue_audit(&self, event: AuditEvent) -> ();
    fn flush_audit(&self) -> ();
    fn audit(&self, filter: AuditFilter) -> Vec<AuditEvent>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_is_unavailable_after_the_limit() {
        let limit = Duration::from_millis(200);
        let store = Bounded::new(
            Arc::new(
                crate::SqliteStore::open(&"sqlite::memory:".parse().unwrap(), crate::Access::Serve)
                    .await
                    .unwrap(),
            ),
            limit,
        );
        let started = tokio::time::Instant::now();
        let err = store
            .within(std::future::pending::<Result<(), StoreError>>())
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            err.to_string().contains("did not answer within 200ms"),
            "{err}"
        );
        assert!(started.elapsed() >= limit);
        // Calls that answer go through as they are.
        store.ping().await.unwrap();
        assert!(store.list_sessions(None).await.unwrap().is_empty());
    }
}
