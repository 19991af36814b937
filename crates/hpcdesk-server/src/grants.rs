//! Connection grants, whole: minting a grant token and its `mm`, the launch URL that carries
//! them, and resolving them for the gateway ([`GrantResolver`]).
//!
//! A grant is signed, not stored. Its token holds its claims — the session it opens, whether
//! it is view-only, until when it opens new connections, 64 random bits — and a tag over them
//! (HMAC-SHA256 under a key derived from the server secret, `seal::ServerKey::grant_tag`), so
//! only a holder of the secret can mint one, and every instance that shares the secret
//! resolves it. Issuing a launch URL writes nothing and waits for no commit.
//!
//! Its `mm` is that session's VNC password sealed under a key derived from the server secret
//! and this very token, so neither half is of use without the other. The gateway learns where
//! a desktop is only from a grant that resolves: its tag verifies, its session is running, it
//! has not expired, and its `mm` opens to the session's current password (compared in
//! constant time).
//!
//! Revocation is by the session: ending it (delete, sweep, time limit, a dead desktop, an
//! ended job) voids every grant of it at once, on every instance, since a grant resolves
//! only while its session runs. The trade-off: a single launch URL cannot be withdrawn alone
//! before `gateway.grant_ttl` except by ending its session (its open viewers are closed by
//! ending the session either way).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hpcdesk_core::SessionState;
use hpcdesk_core::seal::ServerKey;
use hpcdesk_core::wire::LaunchUrl;
use hpcdesk_gateway::{Grant, GrantResolver, Refusal};
use hpcdesk_store::{SessionRecord, Store, StoreError};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::{AppState, Clock, span};

/// The first byte of a grant token's claims. Tokens of other versions (the stored UUID grants
/// of earlier releases) do not resolve.
const TOKEN_VERSION: u8 = 2;
/// Claims: version, flags (bit 0: view only), the session's key (a UUID), the expiry in Unix
/// milliseconds (big-endian), 8 random bytes.
const CLAIMS_LEN: usize = 1 + 1 + 16 + 8 + 8;
/// Bytes of the HMAC-SHA256 tag kept in the token (128 bits).
const TAG_LEN: usize = 16;
const VIEW_ONLY: u8 = 1;

/// The longest token and `mm` looked at; anything longer is not ours.
const MAX_TOKEN: usize = 96;
const MAX_MM: usize = 256;

/// What a grant token says, once its tag is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    session_key: uuid::Uuid,
    view_only: bool,
    expires_at: DateTime<Utc>,
}

impl Claims {
    /// A new token for these claims: claims ‖ tag, URL-safe base64 without padding (67
    /// characters). The random bytes make every token, and so every `mm` key, unique.
    fn mint(&self, key: &ServerKey) -> String {
        let mut b = Vec::with_capacity(CLAIMS_LEN + TAG_LEN);
        b.push(TOKEN_VERSION);
        b.push(if self.view_only { VIEW_ONLY } else { 0 });
        b.extend_from_slice(self.session_key.as_bytes());
        b.extend_from_slice(&self.expires_at.timestamp_millis().to_be_bytes());
        let mut random = [0u8; 8];
        rand::fill(&mut random);
        b.extend_from_slice(&random);
        let tag = key.grant_tag(&b);
        b.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The claims of `token`, if it is a token this server secret minted.
    fn verify(key: &ServerKey, token: &str) -> Option<Claims> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let b = URL_SAFE_NO_PAD.decode(token).ok()?;
        if b.len() != CLAIMS_LEN + TAG_LEN || b[0] != TOKEN_VERSION {
            return None;
        }
        let (claims, tag) = b.split_at(CLAIMS_LEN);
        if !bool::from(key.grant_tag(claims)[..TAG_LEN].ct_eq(tag)) {
            return None;
        }
        let flags = claims[1];
        let session_key = uuid::Uuid::from_slice(&claims[2..18]).ok()?;
        let millis = i64::from_be_bytes(claims[18..26].try_into().ok()?);
        Some(Claims {
            session_key,
            view_only: flags & VIEW_ONLY != 0,
            expires_at: DateTime::from_timestamp_millis(millis)?,
        })
    }
}

/// The VNC password a grant carries, of a session's stored passwords: the view-only one for
/// a view-only grant, when the session has one (sessions since view-only passwords store
/// both, 16 bytes), else the full-access one.
pub fn password_for(stored: &[u8], view_only: bool) -> &[u8] {
    match (view_only, stored.len()) {
        (true, 16) => &stored[8..],
        _ => &stored[..stored.len().min(8)],
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
/// returns its launch URL.
pub fn issue(app: &AppState, rec: &SessionRecord, view_only: bool) -> Result<LaunchUrl, ApiError> {
    let sealed = rec
        .vnc_password_sealed
        .as_deref()
        .ok_or_else(|| ApiError::invariant("a running session without its VNC password"))?;
    let session_key = uuid::Uuid::try_parse(&rec.key)
        .map_err(|_| ApiError::invariant("a session key that is not a UUID"))?;
    let passwords = app
        .server_key
        .open_at_rest(sealed)
        .map_err(ApiError::internal)?;
    // Sessions from before view-only passwords have only the first: their view-only viewers
    // are restrained by the gateway alone.
    let password = password_for(&passwords, view_only);
    let token = Claims {
        session_key,
        view_only,
        expires_at: app.clock.now() + span(app.config.gateway.grant_ttl.0),
    }
    .mint(&app.server_key);
    let mm = app.server_key.seal_for_grant(&token, password);
    Ok(launch_url(app, &token, &mm, view_only))
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
    pub session: Arc<SessionRecord>,
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
        if mm.len() > MAX_MM {
            return Err(Refusal::UnknownGrant);
        }
        let claims = Claims::verify(&self.key, token).ok_or(Refusal::UnknownGrant)?;
        let internal = |e: StoreError| {
            tracing::error!(source = "store", error = %e, "grant lookup failed");
            Refusal::Internal
        };
        // A grant of ours whose session is gone altogether was deleted with it.
        let session = self
            .store
            .session_by_key(&claims.session_key.to_string())
            .await
            .map_err(internal)?
            .ok_or(Refusal::Revoked)?;
        let timed_out = session.state == SessionState::Stopped
            && session
                .status_reason
                .starts_with(crate::sessions::TIME_LIMIT_REACHED);
        // Ended sessions first, expired or not: the viewer hears why its desktop is gone.
        match session.state {
            SessionState::Stopped if timed_out => return Err(Refusal::TimeLimit),
            SessionState::Stopped => return Err(Refusal::Revoked),
            _ => {}
        }
        let expired = claims.expires_at <= self.clock.now();
        if expired && !expired_ok {
            return Err(Refusal::Expired);
        }
        if session.state != SessionState::Running {
            return Err(Refusal::NotRunning);
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
        let expected = password_for(&stored, claims.view_only);
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
            session_id: id.as_str().to_owned(),
            owner: session.owner.clone(),
            host,
            port,
            password,
            view_only: claims.view_only,
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

    fn claims(view_only: bool) -> Claims {
        Claims {
            session_key: uuid::Uuid::new_v4(),
            view_only,
            expires_at: DateTime::from_timestamp_millis(1_800_000_000_123).unwrap(),
        }
    }

    #[test]
    fn a_token_says_what_it_was_minted_with_and_no_two_are_alike() {
        let key = ServerKey::from_secret(b"s");
        for view_only in [false, true] {
            let c = claims(view_only);
            let (a, b) = (c.mint(&key), c.mint(&key));
            assert_ne!(a, b, "random part");
            assert_eq!(a.len(), 67);
            assert!(a.len() <= MAX_TOKEN);
            assert!(
                a.bytes()
                    .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_')
            );
            assert_eq!(Claims::verify(&key, &a), Some(c.clone()));
            assert_eq!(Claims::verify(&key, &b), Some(c));
        }
    }

    #[test]
    fn a_token_changed_anywhere_or_of_another_secret_does_not_verify() {
        let key = ServerKey::from_secret(b"s");
        let token = claims(true).mint(&key);
        assert_eq!(Claims::verify(&ServerKey::from_secret(b"t"), &token), None);
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            for bit in [0x01, 0x80] {
                let mut bad = raw.clone();
                bad[i] ^= bit;
                let bad = URL_SAFE_NO_PAD.encode(&bad);
                assert_eq!(Claims::verify(&key, &bad), None, "byte {i} bit {bit:#x}");
            }
        }
        // Cut short, made longer, another encoding, an old stored grant (a UUID), too long.
        assert_eq!(Claims::verify(&key, &token[..66]), None);
        assert_eq!(Claims::verify(&key, &format!("{token}A")), None);
        assert_eq!(Claims::verify(&key, &format!("{token}=")), None);
        assert_eq!(
            Claims::verify(&key, &uuid::Uuid::new_v4().to_string()),
            None
        );
        assert_eq!(Claims::verify(&key, &"A".repeat(200)), None);
        assert_eq!(Claims::verify(&key, ""), None);
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
