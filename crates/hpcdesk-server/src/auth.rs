//! SCNet tokens (DESIGN §2.2): verifying the `token` header, and minting tokens for sites
//! without the AC platform and for tests.
//!
//! Verification pins HS256 (a token naming any other algorithm, `none` included, is refused),
//! checks the signature against every configured secret, then the claims: `expireTime` in the
//! future, `clusterId` equal to ours, `role` mapped, `accountStatus` known. jsonwebtoken's own
//! `exp` handling is off because SCNet tokens carry `expireTime` (milliseconds) instead.

use hpcdesk_core::claims::Action;
use hpcdesk_core::{AccountStatus, Claims, ComputeUser};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::config::{RoleKind, Secret};
use crate::error::{ApiError, Invariant};

/// A caller whose token was verified.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// Shared with the verifier's memory of the token (see [`TokenVerifier`]).
    pub claims: std::sync::Arc<Claims>,
    pub compute_user: ComputeUser,
    pub role: RoleKind,
    pub status: AccountStatus,
    /// The client address (for the audit log); empty where unknown.
    pub peer: String,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == RoleKind::Admin
    }

    /// Platform user name: the owner of sessions.
    pub fn name(&self) -> &str {
        &self.claims.user
    }

    /// Refuses the action if the account status does not allow it (10008).
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.status.allows(action) {
            return Ok(());
        }
        Err(ApiError::Permission(match (self.status, action) {
            (AccountStatus::Owe, Action::CreateDesktop) => {
                "account is in arrears (Owe): desktops can be listed and deleted, not created"
                    .to_owned()
            }
            (s, _) => format!("account status {} does not allow this", s.as_str()),
        }))
    }
}

/// Verifies tokens with the configured secrets and rules.
pub struct TokenVerifier {
    keys: Vec<DecodingKey>,
    /// The first secret, which signs the tokens hpcdesk issues.
    signer: Option<Secret>,
    validation: Validation,
    cluster_id: String,
    roles: std::collections::BTreeMap<String, RoleKind>,
    max_len: usize,
    /// Claims of tokens whose signature checked out. A portal sends the same token with
    /// every call, and decoding and authenticating it is most of a launch URL's own work;
    /// the claims are still checked (expiry, cluster, role, status) on every call. Only
    /// validly signed tokens get in, so its size is bounded by [`VERIFIED_MAX`] for honest
    /// reasons only; it is emptied when full. A plain mutex: held for a lookup or an insert.
    verified: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Claims>>>,
}

/// Most tokens remembered as verified.
const VERIFIED_MAX: usize = 4096;

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

impl TokenVerifier {
    pub fn new(
        secrets: &[Secret],
        cluster_id: &str,
        roles: std::collections::BTreeMap<String, RoleKind>,
        max_len: usize,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        TokenVerifier {
            keys: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes()))
                .collect(),
            signer: secrets.first().cloned(),
            validation,
            cluster_id: cluster_id.to_owned(),
            roles,
            max_len,
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Signs `claims` with the first secret (the others only verify: key rotation).
    pub fn sign(&self, claims: &Claims) -> Result<String, Invariant> {
        let secret = self
            .signer
            .as_ref()
            .ok_or(Invariant("no JWT secret to sign with"))?;
        Ok(mint(secret, claims))
    }

    /// The claims of a validly signed `token`, or `None`.
    fn signed_claims(&self, token: &str) -> Option<std::sync::Arc<Claims>> {
        let lock = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = lock().get(token) {
            return Some(c.clone());
        }
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let claims = std::sync::Arc::new(data.claims);
                    let mut verified = lock();
                    if verified.len() >= VERIFIED_MAX {
                        verified.clear();
                    }
                    verified.insert(token.to_owned(), claims.clone());
                    return Some(claims);
                }
                Err(e) => {
                    tracing::debug!(reason = %e.kind_to_string(), "token refused by one key");
                }
            }
        }
        None
    }

    /// Checks a `token` header value at time `now_ms` (milliseconds since the epoch).
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<AuthUser, ApiError> {
        self.verify_with_grace(token, now_ms, 0)
    }

    /// Like [`TokenVerifier::verify`], but accepts a token that expired at most `grace_ms`
    /// ago (for renewal).
    pub fn verify_with_grace(
        &self,
        token: &str,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<AuthUser, ApiError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ApiError::MissingParameter("missing header: token".into()));
        }
        if token.len() > self.max_len {
            return Err(ApiError::TooLarge(format!(
                "token is longer than {} bytes",
                self.max_len
            )));
        }
        let refused = || ApiError::Permission("invalid token".into());
        let claims = self.signed_claims(token).ok_or_else(refused)?;
        match claims.expire_millis() {
            Some(exp) if exp > now_ms - grace_ms => {}
            Some(_) if grace_ms > 0 => {
                return Err(ApiError::Permission(
                    "token expired too long ago to be renewed; get a new one".into(),
                ));
            }
            Some(_) => return Err(ApiError::Permission("token has expired".into())),
            None => return Err(ApiError::Permission("token has no valid expireTime".into())),
        }
        if claims.cluster_id != self.cluster_id {
            return Err(ApiError::Permission(
                "token was issued for another cluster".into(),
            ));
        }
        let role = *self.roles.get(&claims.role).ok_or_else(|| {
            ApiError::RoleMapping(format!(
                "role {:?} is not mapped to a permission set",
                claims.role
            ))
        })?;
        let status = AccountStatus::parse(&claims.account_status).ok_or_else(|| {
            ApiError::Permission(format!("unknown accountStatus {:?}", claims.account_status))
        })?;
        if status == AccountStatus::Disable {
            return Err(ApiError::Permission("account is disabled".into()));
        }
        if claims.user.trim().is_empty() {
            return Err(ApiError::Permission("token has no user".into()));
        }
        let compute_user = ComputeUser::parse(&claims.compute_user)
            .map_err(|e| ApiError::Permission(format!("token carries an invalid {e}")))?;
        Ok(AuthUser {
            claims,
            compute_user,
            role,
            status,
            peer: String::new(),
        })
    }
}

trait KindText {
    fn kind_to_string(&self) -> String;
}

impl KindText for jsonwebtoken::errors::Error {
    fn kind_to_string(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// Signs `claims` as an HS256 token, as the AC platform does.
pub fn mint(secret: &Secret, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .expect("HS256 signing with a byte key cannot fail")
}

/// Claims for a new token, valid for `ttl` from `now_ms`.
pub fn claims_for(
    user: &str,
    compute_user: &str,
    cluster_id: &str,
    role: &str,
    account_status: &str,
    now_ms: i64,
    ttl: std::time::Duration,
) -> Claims {
    Claims {
        user: user.to_owned(),
        user_id: String::new(),
        compute_user: compute_user.to_owned(),
        cluster_id: cluster_id.to_owned(),
        role: role.to_owned(),
        account_status: account_status.to_owned(),
        invoker: String::new(),
        creator: CREATOR.to_owned(),
        expire_time: (now_ms + ttl.as_millis() as i64).to_string(),
        issued_at: now_ms.to_string(),
        login_time: now_ms.to_string(),
    }
}

/// The `creator` of the tokens hpcdesk issues: only those are voided by an account's
/// `tokens_valid_after` (a platform's own tokens are its business).
pub const CREATOR: &str = "hpcdesk";

/// Whether `claims` is a token hpcdesk issued for an account before `valid_after_ms`.
pub fn voided(claims: &hpcdesk_core::Claims, valid_after_ms: Option<i64>) -> bool {
    claims.creator == CREATOR && valid_after_ms.is_some_and(|t| claims.issued_millis() < t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000_000;

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            &[Secret::new("current"), Secret::new("previous")],
            "11112",
            BTreeMap::from([("1".into(), RoleKind::User), ("9".into(), RoleKind::Admin)]),
            8192,
        )
    }

    fn claims() -> Claims {
        claims_for(
            "alice",
            "alice",
            "11112",
            "1",
            "Normal",
            NOW,
            Duration::from_secs(60),
        )
    }

    fn code(r: Result<AuthUser, ApiError>) -> &'static str {
        r.unwrap_err().code().as_str()
    }

    #[test]
    fn a_token_signed_with_any_listed_secret_verifies() {
        let v = verifier();
        assert_eq!(
            v.verify(&mint(&Secret::new("current"), &claims()), NOW)
                .unwrap()
                .name(),
            "alice"
        );
        assert!(
            v.verify(&mint(&Secret::new("previous"), &claims()), NOW)
                .is_ok()
        );
        assert_eq!(
            code(v.verify(&mint(&Secret::new("other"), &claims()), NOW)),
            "10008"
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let v = verifier();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let h = URL_SAFE_NO_PAD.encode(header);
            assert_eq!(code(v.verify(&format!("{h}.{payload}."), NOW)), "10008");
        }
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(b"current"),
        )
        .unwrap();
        assert_eq!(code(v.verify(&hs512, NOW)), "10008");
    }

    #[test]
    fn claims_are_checked() {
        let v = verifier();
        let s = Secret::new("current");
        let mut c = claims();
        c.expire_time = (NOW - 1).to_string();
        assert_eq!(code(v.verify(&mint(&s, &c), NOW)), "10008");
        let mut c = claims();
        c.cluster_id = "99999".into();
        assert_eq!(code(v.verify(&mint(&s, &c), NOW)), "10008");
        let mut c = claims();
        c.role = "7".into();
        assert_eq!(code(v.verify(&mint(&s, &c), NOW)), "10010");
        let mut c = claims();
        c.account_status = "Disable".into();
        assert_eq!(code(v.verify(&mint(&s, &c), NOW)), "10008");
        let mut c = claims();
        c.compute_user = "../root".into();
        assert_eq!(code(v.verify(&mint(&s, &c), NOW)), "10008");
        assert_eq!(code(v.verify("", NOW)), "10003");
        assert_eq!(code(v.verify("garbage", NOW)), "10008");
        assert_eq!(code(v.verify(&"x".repeat(9000), NOW)), "10012");
    }

    #[test]
    fn owing_accounts_cannot_create() {
        let v = verifier();
        let mut c = claims();
        c.account_status = "Owe".into();
        let u = v.verify(&mint(&Secret::new("current"), &c), NOW).unwrap();
        assert!(u.require(Action::UseDesktop).is_ok());
        assert_eq!(
            u.require(Action::CreateDesktop)
                .unwrap_err()
                .code()
                .as_str(),
            "10008"
        );
    }
}
