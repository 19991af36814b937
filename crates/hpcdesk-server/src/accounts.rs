//! Issuing SCNet tokens for sites without the AC platform (DESIGN §2.2), and region info.
//! No HTTP types here.
//!
//! - password login (`user`, `password`, `orgId`): the org must be registered; the token's
//!   `invoker` is that org;
//! - access-key login (`user`, `accessKey`, `timestamp`, `signature`): the signature is the
//!   hex HMAC-SHA256, keyed with the secret key, of `{"accessKey":"…","timestamp":"…","user":"…"}`;
//!   the timestamp must be within `auth.signature_skew` of the server clock and a signature
//!   works once;
//! - renewal of a token that expired at most 24 h ago;
//! - a suspended (`Disable`) account gets `token: null`, as the AC platform answers.
//!
//! Failures say only "wrong user name, password or orgId" (or the AK/SK equivalent), count
//! towards the failed-login lock-out, and are audited. Nothing is written on a refusal but
//! the audit line.

use hmac::{KeyInit, Mac};
use hpcdesk_core::AccountStatus;
use hpcdesk_core::wire::{Center, ClusterUserInfo, ServiceUrl, TokenEntry};
use hpcdesk_store::UserRecord;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::audit::{self, Kind};
use crate::auth::{self, AuthUser};
use crate::config::PasswordBackend;
use crate::error::ApiError;
use crate::passwords;
use crate::state::AppState;

/// What every authenticated request needs to know of an account hpcdesk keeps: its stored
/// `accountStatus`, and since when its tokens are valid (ms; `None`: all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub status: String,
    pub tokens_valid_after: Option<i64>,
}

/// [`StoredAccount`]s of the accounts hpcdesk keeps, cached for a second: every
/// authenticated request consults it, and a store query per request would cost more than the
/// request itself. `hpcdesk user disable` or `passwd` therefore takes effect within a second.
type Cached = (std::time::Instant, Option<StoredAccount>);

pub struct StatusCache {
    /// A plain mutex: held for a lookup or an insert, never across the store query.
    entries: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
    ttl: std::time::Duration,
}

impl std::fmt::Debug for StatusCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCache").finish_non_exhaustive()
    }
}

impl Default for StatusCache {
    fn default() -> Self {
        StatusCache {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            ttl: std::time::Duration::from_secs(1),
        }
    }
}

impl StatusCache {
    /// What the store says of `user` (`None` if hpcdesk does not keep that account).
    pub async fn status(
        &self,
        store: &dyn hpcdesk_store::Store,
        user: &str,
    ) -> Result<Option<StoredAccount>, hpcdesk_store::StoreError> {
        let now = std::time::Instant::now();
        if let Some((at, status)) = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(status.clone());
        }
        let status = store.user(user).await?.map(|u| StoredAccount {
            status: u.account_status,
            tokens_valid_after: u.tokens_valid_after.map(|t| t.timestamp_millis()),
        });
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        }
        map.insert(user.to_owned(), (now, status.clone()));
        Ok(status)
    }
}

/// Why a token issued before its account's last password change, disable or key revocation
/// is refused.
pub const VOIDED: &str = "this token was issued before the account's password, status or access keys changed; \
     log in again";

/// How long after expiry a token may still be renewed.
pub const RENEW_GRACE_MS: i64 = 24 * 3600 * 1000;

fn entry(app: &AppState, token: Option<String>) -> Vec<TokenEntry> {
    vec![TokenEntry {
        cluster_name: app.config.auth.cluster_name.clone(),
        cluster_id: app.config.auth.cluster_id.clone(),
        token,
    }]
}

/// Mints a token for an account (or `null` for a suspended one) and audits it.
/// A token for `user`; `login_ms` is when the login it descends from happened (`None`: now).
async fn issue(
    app: &AppState,
    user: &UserRecord,
    invoker: &str,
    how: &str,
    peer: &str,
    login_ms: Option<i64>,
) -> Result<Vec<TokenEntry>, ApiError> {
    if AccountStatus::parse(&user.account_status) == Some(AccountStatus::Disable) {
        audit::record(
            app,
            Kind::TokenRefused,
            &user.name,
            "",
            peer,
            format!("{how}: account disabled"),
        )
        .await;
        return Ok(entry(app, None));
    }
    let mut claims = auth::claims_for(
        &user.name,
        user.compute_user.as_str(),
        &app.config.auth.cluster_id,
        &user.role,
        &user.account_status,
        app.clock.now().timestamp_millis(),
        app.config.auth.token_ttl.0,
    );
    claims.user_id = user.user_id.clone();
    claims.invoker = invoker.to_owned();
    if let Some(t) = login_ms {
        claims.login_time = t.to_string();
    }
    let token = app.verifier.sign(&claims)?;
    audit::record(app, Kind::TokenIssued, &user.name, "", peer, how).await;
    Ok(entry(app, Some(token)))
}

async fn refuse(app: &AppState, user: &str, peer: &str, why: &str) -> ApiError {
    app.limits.login_failed(user, peer);
    audit::record(app, Kind::TokenRefused, user, "", peer, why).await;
    tracing::info!(user, peer, why, "token refused");
    ApiError::Permission("wrong user name, password or orgId".into())
}

/// `POST /ac/openapi/v2/tokens`.
pub async fn password_login(
    app: &AppState,
    user: &str,
    password: &str,
    org_id: &str,
    peer: &str,
) -> Result<Vec<TokenEntry>, ApiError> {
    app.limits.login_allowed(user, peer)?;
    let org = app.store.org(org_id).await?;
    let mut account = app.store.user(user).await?;
    let matches = match app.config.auth.password_backend {
        // Verify even for unknown names (against a decoy) so timing does not tell them apart.
        PasswordBackend::Store => {
            passwords::verify_async(
                password.to_owned(),
                account.as_ref().map(|a| a.password_hash.clone()),
            )
            .await
        }
        // The site's account, as its other services check it; hpcdesk's record gives the
        // role and organisations, and the login name is the account desktops run as.
        PasswordBackend::Pam => {
            let accepted =
                crate::pam_auth::accepts(&app.config.auth.pam_service, user, password).await;
            if let Some(a) = account.as_mut() {
                match hpcdesk_core::ComputeUser::parse(user) {
                    Ok(login) => a.compute_user = login,
                    Err(_) => {
                        return Err(refuse(
                            app,
                            user,
                            peer,
                            "password login: the login name is no Linux account name",
                        )
                        .await);
                    }
                }
            }
            accepted && account.is_some()
        }
    };
    let (Some(account), true, Some(_)) = (account, matches, org) else {
        return Err(refuse(
            app,
            user,
            peer,
            "password login: wrong user, password or orgId",
        )
        .await);
    };
    app.limits.login_succeeded(user, peer);
    issue(app, &account, org_id, "password", peer, None).await
}

/// The string an access-key signature covers.
pub fn signed_text(access_key: &str, timestamp: &str, user: &str) -> String {
    serde_json::json!({"accessKey": access_key, "timestamp": timestamp, "user": user}).to_string()
}

/// Hex HMAC-SHA256 of `text` with `secret`.
pub fn sign(secret: &[u8], text: &str) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `POST /api/user/v3/tokens`.
pub async fn key_login(
    app: &AppState,
    user: &str,
    access_key: &str,
    timestamp: &str,
    signature: &str,
    peer: &str,
) -> Result<Vec<TokenEntry>, ApiError> {
    app.limits.login_allowed(user, peer)?;
    let ts: i64 = timestamp.trim().parse().map_err(|_| {
        ApiError::InvalidParameter("timestamp must be seconds since the epoch".into())
    })?;
    let now = app.clock.now();
    let skew = app.config.auth.signature_skew.0.as_secs() as i64;
    if (now.timestamp() - ts).abs() > skew {
        return Err(refuse_key(app, user, peer, "access key login: stale timestamp").await);
    }
    let key = app.store.access_key(access_key).await?;
    let Some(key) = key.filter(|k| k.revoked_at.is_none() && k.user_name == user) else {
        return Err(refuse_key(app, user, peer, "access key login: unknown or revoked key").await);
    };
    let secret = app
        .server_key
        .open_at_rest(&key.secret_sealed)
        .map_err(ApiError::internal)?;
    let expected = sign(&secret, &signed_text(access_key, timestamp, user));
    let given = signature.trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(refuse_key(app, user, peer, "access key login: wrong signature").await);
    }
    let expires = chrono::DateTime::from_timestamp(ts + skew + 1, 0).unwrap_or(now);
    if !app.store.use_signature(&given, expires, now).await? {
        return Err(refuse_key(app, user, peer, "access key login: signature replayed").await);
    }
    let account =
        app.store.user(user).await?.ok_or_else(|| {
            ApiError::Permission("wrong user name, access key or signature".into())
        })?;
    app.limits.login_succeeded(user, peer);
    issue(app, &account, "", "access key", peer, None).await
}

async fn refuse_key(app: &AppState, user: &str, peer: &str, why: &str) -> ApiError {
    let _ = refuse(app, user, peer, why).await;
    ApiError::Permission("wrong user name, access key or signature".into())
}

/// `POST /ac/openapi/v2/tokens/next`: a fresh token for one that is valid or expired at most
/// 24 h ago. Accounts known to hpcdesk are re-read, so a disabled one gets `null`.
pub async fn renew(app: &AppState, token: &str, peer: &str) -> Result<Vec<TokenEntry>, ApiError> {
    app.limits.check_peer(peer)?;
    let old = app.verifier.verify_with_grace(
        token,
        app.clock.now().timestamp_millis(),
        RENEW_GRACE_MS,
    )?;
    let now = app.clock.now().timestamp_millis();
    // Renewal is bounded since the login: a chain of renewals ends at max_session_age. A
    // token without the login time (from a platform, or from before it) counts from when it
    // was issued, which its expiry tells.
    let ttl_ms = app.config.auth.token_ttl.0.as_millis() as i64;
    let login = old
        .claims
        .login_millis()
        .or_else(|| old.claims.expire_millis().map(|e| e - ttl_ms))
        .unwrap_or(now);
    let max_age = app.config.auth.max_session_age.0.as_millis() as i64;
    if now - login > max_age {
        audit::record(
            app,
            Kind::TokenRefused,
            old.name(),
            "",
            peer,
            "renewal past max_session_age",
        )
        .await;
        return Err(ApiError::Permission(format!(
            "the login this token comes from is older than {}; log in again",
            humantime::format_duration(app.config.auth.max_session_age.0)
        )));
    }
    if let Some(account) = app.store.user(old.name()).await? {
        let valid_after = account.tokens_valid_after.map(|t| t.timestamp_millis());
        if auth::voided(&old.claims, valid_after) {
            audit::record(
                app,
                Kind::TokenRefused,
                old.name(),
                "",
                peer,
                "renewal of a voided token",
            )
            .await;
            return Err(ApiError::Permission(VOIDED.into()));
        }
        return issue(
            app,
            &account,
            &old.claims.invoker,
            "renewal",
            peer,
            Some(login),
        )
        .await;
    }
    // A token issued by the AC platform: renew it with the same claims.
    let mut claims = hpcdesk_core::Claims::clone(&old.claims);
    claims.expire_time = (now + ttl_ms).to_string();
    claims.issued_at = now.to_string();
    claims.login_time = login.to_string();
    audit::record(app, Kind::TokenIssued, old.name(), "", peer, "renewal").await;
    Ok(entry(app, Some(app.verifier.sign(&claims)?)))
}

/// `GET /ac/openapi/v2/center`: this region, with `hpcUrls` pointing at this service.
pub async fn center(app: &AppState, user: &AuthUser, base_url: String) -> Result<Center, ApiError> {
    let home = match app.store.user(user.name()).await? {
        Some(a) if !a.home_path.is_empty() => a.home_path,
        _ => nix::unistd::User::from_name(user.compute_user.as_str())
            .ok()
            .flatten()
            .map(|u| u.dir.display().to_string())
            .unwrap_or_default(),
    };
    Ok(Center {
        id: app.config.auth.cluster_id.clone(),
        name: app.config.auth.cluster_name.clone(),
        description: format!("hpcdesk {}", env!("CARGO_PKG_VERSION")),
        cluster_user_info: ClusterUserInfo {
            user_name: user.compute_user.to_string(),
            home_path: home,
        },
        hpc_urls: vec![ServiceUrl {
            url: base_url,
            enable: "true".into(),
            is_manager: "true".into(),
            kind: "hpc".into(),
            version: "2.0".into(),
        }],
        efile_urls: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_text_is_compact_json_in_key_order() {
        assert_eq!(
            signed_text("AK1", "1700000000", "alice"),
            r#"{"accessKey":"AK1","timestamp":"1700000000","user":"alice"}"#
        );
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
