//! Connection grants, whole: minting a grant token and its `mm`, the key it is stored under,
//! the launch URL that carries them, resolving them for the gateway ([`GrantResolver`]) and
//! purging expired ones.
//!
//! A grant is a random token the store knows only by its hash, bound to one session, with
//! an expiry. Its `mm` is that session's VNC password sealed under a key derived from the
//! server secret and this very token, so neither half is of use without the other, and a
//! copy of the database holds neither. The gateway learns where a desktop is only from a
//! grant that resolves: found by the token's hash, unrevoked, unexpired, bound to a running
//! session, and whose `mm` opens to that session's password (compared in constant time).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hpcdesk_core::SessionState;
use hpcdesk_core::seal::ServerKey;
use hpcdesk_core::wire::LaunchUrl;
use hpcdesk_gateway::{Grant, GrantResolver, Refusal};
use hpcdesk_store::{GrantRecord, SessionRecord, Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::{AppState, Clock, span};

/// Expired grants are kept this long (so a late viewer hears "expired", not "not valid"),
/// then purged.
const KEEP_EXPIRED: chrono::Duration = chrono::Duration::hours(1);

/// The longest token and `mm` looked up; anything longer is not ours.
const MAX_TOKEN: usize = 64;
const MAX_MM: usize = 256;

/// The VNC password a grant carries, of a session's stored passwords: the view-only one for
/// a view-only grant, when the session has one (sessions since view-only passwords store
/// both, 16 bytes), else the full-access one.
pub fn password_for(stored: &[u8], view_only: bool) -> &[u8] {
    match (view_only, stored.len()) {
        (true, 16) => &stored[8..],
        _ => &stored[..stored.len().min(8)],
    }
}

/// A new grant token: a version-7 UUID, whose first 48 bits are the time in milliseconds and
/// whose other 74 bits are random. Unguessable all the same (and useless without its `mm`),
/// while the grants it keys are stored in time order: an insert touches the end of the index
/// rather than a random page of it, which keeps launch URLs cheap on SQLite.
fn new_token(now: DateTime<Utc>) -> String {
    let mut random = [0u8; 10];
    rand::fill(&mut random);
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// Key under which a grant token is stored: for a version-7 token, its time (the first 6
/// bytes, not secret) then the SHA-256 of the whole token; otherwise the SHA-256 alone. The
/// token itself is never stored.
fn stored_key(token: &str) -> Vec<u8> {
    let digest = Sha256::digest(token.as_bytes());
    match uuid::Uuid::try_parse(token) {
        Ok(u) if u.get_version_num() == 7 => {
            let mut key = u.as_bytes()[..6].to_vec();
            key.extend_from_slice(&digest);
            key
        }
        _ => digest.to_vec(),
    }
}

/// The viewer page's address for a grant: relative to the API's origin, or absolute under
/// `server.public_url`.
fn launch_url(app: &AppState, token: &str, mm: &str, view_only: bool) -> LaunchUrl {
    let public = app.config.public_url.as_ref();
    let mut path = format!(
        "/vnc.html?path={}/vncws?token={token}&mm={mm}&resize=remote",
        public.map_or("", |p| p.path.as_str())
    );
    if view_only {
        path.push_str("&view_only=true");
    }
    match public {
        Some(p) => LaunchUrl {
            novnc_url: format!("{}{path}", p.base),
            with_domain: true,
        },
        None => LaunchUrl {
            novnc_url: path,
            with_domain: false,
        },
    }
}

/// Issues a grant to the running session `rec` (the caller has checked who may ask) and
/// returns its launch URL. The grant is stored before the URL exists.
pub async fn issue(
    app: &AppState,
    rec: &SessionRecord,
    view_only: bool,
) -> Result<LaunchUrl, ApiError> {
    let sealed = rec
        .vnc_password_sealed
        .as_deref()
        .ok_or_else(|| ApiError::invariant("a running session without its VNC password"))?;
    let passwords = app
        .server_key
        .open_at_rest(sealed)
        .map_err(ApiError::internal)?;
    // Sessions from before view-only passwords have only the first: their view-only viewers
    // are restrained by the gateway alone.
    let password = password_for(&passwords, view_only);
    let now = app.clock.now();
    let token = new_token(now);
    app.store
        .insert_grant(GrantRecord {
            token_hash: stored_key(&token),
            session_key: rec.key.clone(),
            owner: rec.owner.clone(),
            view_only,
            created_at: now,
            expires_at: now + span(app.config.gateway.grant_ttl.0),
            revoked: false,
        })
        .await?;
    let mm = app.server_key.seal_for_grant(&token, password);
    Ok(launch_url(app, &token, &mm, view_only))
}

/// Removes grants that expired more than an hour ago. Returns how many.
pub async fn purge(app: &AppState) -> Result<u64, StoreError> {
    app.store.purge_grants(app.clock.now() - KEEP_EXPIRED).await
}

/// The store's side of [`GrantResolver`], for the gateway.
pub struct StoreGrants {
    pub store: Arc<dyn Store>,
    pub key: ServerKey,
    pub clock: Arc<dyn Clock>,
}

/// A grant that resolved, with its session, and whether it has expired (see
/// [`StoreGrants::resolve_with`]).
pub struct Resolved {
    pub grant: Grant,
    pub session: SessionRecord,
    pub expired: bool,
}

#[async_trait]
impl GrantResolver for StoreGrants {
    async fn resolve(&self, token: &str, mm: &str) -> Result<Grant, Refusal> {
        self.resolve_with(token, mm, false).await.map(|r| r.grant)
    }
}

impl StoreGrants {
    /// The resolver over `app`'s store.
    pub fn of(app: &crate::state::AppState) -> Self {
        StoreGrants {
            store: app.store.clone(),
            key: app.server_key.clone(),
            clock: app.clock.clone(),
        }
    }

    /// Resolves a grant; with `expired_ok`, one past its expiry too (and says so): an open
    /// viewer may still act on its desktop (extend it) after its link stopped opening new
    /// connections. Revoked grants and ended sessions never resolve; a session ended by its
    /// time limit says so ([`Refusal::TimeLimit`]).
    pub async fn resolve_with(
        &self,
        token: &str,
        mm: &str,
        expired_ok: bool,
    ) -> Result<Resolved, Refusal> {
        if token.len() > MAX_TOKEN || mm.len() > MAX_MM {
            return Err(Refusal::UnknownGrant);
        }
        let internal = |e: StoreError| {
            tracing::error!(source = "store", error = %e, "grant lookup failed");
            Refusal::Internal
        };
        let grant = self
            .store
            .grant(&stored_key(token))
            .await
            .map_err(internal)?
            .ok_or(Refusal::UnknownGrant)?;
        let session = || async {
            self.store
                .session_by_key(&grant.session_key)
                .await
                .map_err(internal)?
                .ok_or(Refusal::UnknownGrant)
        };
        let timed_out = |s: &SessionRecord| {
            s.state == SessionState::Stopped
                && s.status_reason
                    .starts_with(crate::sessions::TIME_LIMIT_REACHED)
        };
        if grant.revoked {
            return Err(match session().await {
                Ok(s) if timed_out(&s) => Refusal::TimeLimit,
                _ => Refusal::Revoked,
            });
        }
        let expired = grant.expires_at <= self.clock.now();
        if expired && !expired_ok {
            return Err(Refusal::Expired);
        }
        let session = session().await?;
        match session.state {
            SessionState::Running => {}
            SessionState::Stopped if timed_out(&session) => return Err(Refusal::TimeLimit),
            SessionState::Stopped => return Err(Refusal::Revoked),
            _ => return Err(Refusal::NotRunning),
        }
        let password = self
            .key
            .open_for_grant(token, mm)
            .map_err(|_| Refusal::BadMm)?;
        let stored = session
            .vnc_password_sealed
            .as_deref()
            .and_then(|s| self.key.open_at_rest(s).ok())
            .ok_or(Refusal::Internal)?;
        let expected = password_for(&stored, grant.view_only);
        if !bool::from(password.as_slice().ct_eq(expected)) {
            return Err(Refusal::BadMm);
        }
        let (Some(host), Some(port), Some(id)) = (
            session.host.clone(),
            session.port,
            session.session_id.as_ref(),
        ) else {
            return Err(Refusal::NotRunning);
        };
        let grant = Grant {
            session_key: session.key.clone(),
            session_id: id.to_string(),
            owner: session.owner.clone(),
            host,
            port,
            password,
            view_only: grant.view_only,
            tls_pin: session.tls_pin.clone(),
        };
        Ok(Resolved {
            grant,
            session,
            expired,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_other_versions_are_stored_by_their_sha256() {
        assert_eq!(stored_key("x").len(), 32);
        assert_ne!(stored_key("x"), stored_key("y"));
        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(stored_key(&v4), Sha256::digest(v4.as_bytes()).to_vec());
    }

    #[test]
    fn tokens_are_time_ordered_uuids_stored_by_time_then_hash() {
        let t = Utc::now();
        let (a, b) = (new_token(t), new_token(t));
        assert_ne!(a, b, "random part");
        let u = uuid::Uuid::try_parse(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        let later = new_token(t + chrono::Duration::milliseconds(5));
        let (ka, kl) = (stored_key(&a), stored_key(&later));
        assert_eq!(ka.len(), 38);
        assert!(ka < kl, "stored in time order");
        assert_eq!(&ka[6..], Sha256::digest(a.as_bytes()).as_slice());
    }

    #[test]
    fn view_only_grants_carry_the_view_only_password_when_there_is_one() {
        let both = b"FULLPASSviewpass";
        assert_eq!(password_for(both, false), b"FULLPASS");
        assert_eq!(password_for(both, true), b"viewpass");
        // Older sessions stored one password: every grant carries it.
        assert_eq!(password_for(b"FULLPASS", true), b"FULLPASS");
    }
}
