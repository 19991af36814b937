//! Resolving connection grants for the gateway: the store's side of [`GrantResolver`].
//!
//! A grant is found by the SHA-256 of its token, must be unrevoked, unexpired and bound to a
//! running session, and `mm` must open (with the key derived from the server secret and this
//! very token) to that session's VNC password. Only then does the gateway learn where the
//! desktop is.

use std::sync::Arc;
use subtle::ConstantTimeEq;

use async_trait::async_trait;
use hpcdesk_core::SessionState;
use hpcdesk_core::seal::ServerKey;
use hpcdesk_gateway::{Grant, GrantResolver, Refusal};
use hpcdesk_store::Store;

use crate::sessions::grant_hash;
use crate::state::Clock;

/// The VNC password a grant carries, of a session's stored passwords: the view-only one for
/// a view-only grant, when the session has one (sessions since view-only passwords store
/// both, 16 bytes), else the full-access one.
pub fn password_for(stored: &[u8], view_only: bool) -> &[u8] {
    match (view_only, stored.len()) {
        (true, 16) => &stored[8..],
        _ => &stored[..stored.len().min(8)],
    }
}

pub struct StoreGrants {
    pub store: Arc<dyn Store>,
    pub key: ServerKey,
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl GrantResolver for StoreGrants {
    async fn resolve(&self, token: &str, mm: &str) -> Result<Grant, Refusal> {
        if token.len() > 64 || mm.len() > 256 {
            return Err(Refusal::UnknownGrant);
        }
        let internal = |e: hpcdesk_store::StoreError| {
            tracing::error!(error = %e, "grant lookup failed");
            Refusal::Internal
        };
        let grant = self
            .store
            .grant(&grant_hash(token))
            .await
            .map_err(internal)?
            .ok_or(Refusal::UnknownGrant)?;
        if grant.revoked {
            return Err(Refusal::Revoked);
        }
        if grant.expires_at <= self.clock.now() {
            return Err(Refusal::Expired);
        }
        let session = self
            .store
            .session_by_key(&grant.session_key)
            .await
            .map_err(internal)?
            .ok_or(Refusal::UnknownGrant)?;
        match session.state {
            SessionState::Running => {}
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
        if !bool::from(
            password
                .as_slice()
                .ct_eq(password_for(&stored, grant.view_only)),
        ) {
            return Err(Refusal::BadMm);
        }
        let (Some(host), Some(port), Some(id)) = (
            session.host.clone(),
            session.port,
            session.session_id.as_ref(),
        ) else {
            return Err(Refusal::NotRunning);
        };
        Ok(Grant {
            session_key: session.key.clone(),
            session_id: id.to_string(),
            owner: session.owner.clone(),
            host,
            port,
            password,
            view_only: grant.view_only,
            tls_pin: session.tls_pin.clone(),
        })
    }
}
