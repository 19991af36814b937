//! Sealing of VNC passwords, and the tags of grant tokens (DESIGN §3, §6).
//!
//! Four uses, four derived keys, one server secret:
//! - *at rest*: the store keeps each session's VNC password sealed with AES-256-GCM under a key
//!   derived from the server secret; a random nonce is stored in front of the ciphertext.
//! - *in a launch URL* (`mm`): the password sealed for the gateway under a key derived from the
//!   server secret **and the grant token**. Each grant token is fresh randomness and seals
//!   exactly one message, so the key is never reused and a fixed nonce is safe. Only a holder of
//!   the server secret can open `mm`, and only together with its own grant.
//! - *a grant token's tag*: HMAC-SHA256 over the token's claims under a key derived from the
//!   server secret, so only a holder of the secret can mint a grant (hpcdesk-server's
//!   `grants` owns what the claims are).
//! - *a Slurm job's readiness token*: HMAC-SHA256 over the session's marker, which the job
//!   presents when it tells hpcdesk its desktop is ready (`POST /hpcdesk/v1/jobs/ready`).
//!
//! Keys are derived with HMAC-SHA256(secret, label ‖ 0 ‖ context).

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const AT_REST_LABEL: &[u8] = b"hpcdesk/vnc-password-at-rest/v1";
const GRANT_LABEL: &[u8] = b"hpcdesk/mm/v1";
const GRANT_TAG_LABEL: &[u8] = b"hpcdesk/grant-tag/v1";
const JOB_READY_LABEL: &[u8] = b"hpcdesk/job-ready/v1";
const NONCE_LEN: usize = 12;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is not valid base64")]
    Encoding,
    #[error("sealed value was not made with this key")]
    Open,
}

/// The server secret all sealing keys derive from. Never printed. Cheap to clone. The keys
/// that do not depend on a grant are derived once, here, rather than on every use (launch
/// URLs use three of them each).
#[derive(Clone)]
pub struct ServerKey(std::sync::Arc<Keys>);

struct Keys {
    at_rest: Aes256Gcm,
    /// Keyed HMAC states, cloned for each tag.
    grant_tag: Hmac<Sha256>,
    /// [`labelled`] for `GRANT_LABEL`: cloned and given a grant token, it derives that
    /// grant's `mm` key (`derive_key`) without keying a new HMAC each time.
    grant_mm: Hmac<Sha256>,
    job_ready: Hmac<Sha256>,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

/// The secret every key derives from, of the configured secret material.
fn master(secret: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"hpcdesk/server-key/v1")
        .expect("HMAC takes keys of any length");
    mac.update(secret);
    mac.finalize().into_bytes().into()
}

/// HMAC(secret, ·) having read `label ‖ 0`: what [`derive_key`] continues with its context.
fn labelled(secret: &[u8; 32], label: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(&[0]);
    mac
}

/// HMAC-SHA256(secret, label ‖ 0 ‖ context).
fn derive_key(secret: &[u8; 32], label: &[u8], context: &[u8]) -> [u8; 32] {
    let mut mac = labelled(secret, label);
    mac.update(context);
    mac.finalize().into_bytes().into()
}

/// An HMAC-SHA256 state keyed with the key derived for `label`.
fn keyed(secret: &[u8; 32], label: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(&derive_key(secret, label, b""))
        .expect("HMAC takes keys of any length")
}

impl ServerKey {
    /// Builds the key from any secret material (a file's bytes, a configured string).
    pub fn from_secret(secret: &[u8]) -> Self {
        let secret = master(secret);
        ServerKey(std::sync::Arc::new(Keys {
            at_rest: Aes256Gcm::new(&derive_key(&secret, AT_REST_LABEL, b"").into()),
            grant_tag: keyed(&secret, GRANT_TAG_LABEL),
            grant_mm: labelled(&secret, GRANT_LABEL),
            job_ready: keyed(&secret, JOB_READY_LABEL),
        }))
    }

    /// The cipher of one grant's `mm` (its key depends on the grant token).
    fn grant_cipher(&self, grant_token: &str) -> Aes256Gcm {
        let mut mac = self.0.grant_mm.clone();
        mac.update(grant_token.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Aes256Gcm::new(&key.into())
    }

    /// The tag of a grant token's claims. The caller compares it in constant time.
    pub fn grant_tag(&self, claims: &[u8]) -> [u8; 32] {
        let mut mac = self.0.grant_tag.clone();
        mac.update(claims);
        mac.finalize().into_bytes().into()
    }

    /// The readiness token of the Slurm job of the session with `marker`. The caller
    /// compares it in constant time.
    pub fn job_ready_tag(&self, marker: &str) -> [u8; 32] {
        let mut mac = self.0.job_ready.clone();
        mac.update(marker.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Seals `plain` for the store: `nonce ‖ ciphertext ‖ tag`.
    pub fn seal_at_rest(&self, plain: &[u8]) -> Vec<u8> {
        let cipher = &self.0.at_rest;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let ct = cipher
            .encrypt(&Nonce::from(nonce), plain)
            .expect("AES-GCM encryption of a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open_at_rest(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        self.0
            .at_rest
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| SealError::Open)
    }

    /// Seals `plain` for the gateway, bound to one grant token; URL-safe base64 (`mm`).
    pub fn seal_for_grant(&self, grant_token: &str, plain: &[u8]) -> String {
        let ct = self
            .grant_cipher(grant_token)
            .encrypt(&Nonce::from([0u8; NONCE_LEN]), plain)
            .expect("AES-GCM encryption of a short value cannot fail");
        URL_SAFE.encode(ct)
    }

    /// Opens an `mm` value. Accepts the URL-safe and the standard base64 alphabet.
    pub fn open_for_grant(&self, grant_token: &str, mm: &str) -> Result<Vec<u8>, SealError> {
        let ct = URL_SAFE
            .decode(mm)
            .or_else(|_| STANDARD.decode(mm))
            .map_err(|_| SealError::Encoding)?;
        self.grant_cipher(grant_token)
            .decrypt(&Nonce::from([0u8; NONCE_LEN]), ct.as_slice())
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_rest_round_trips_and_uses_fresh_nonces() {
        let k = ServerKey::from_secret(b"s");
        let a = k.seal_at_rest(b"pw123456");
        let b = k.seal_at_rest(b"pw123456");
        assert_ne!(a, b);
        assert_eq!(k.open_at_rest(&a).unwrap(), b"pw123456");
    }

    #[test]
    fn at_rest_refuses_another_key_and_tampering() {
        let k = ServerKey::from_secret(b"s");
        let mut a = k.seal_at_rest(b"pw123456");
        assert_eq!(
            ServerKey::from_secret(b"t").open_at_rest(&a),
            Err(SealError::Open)
        );
        a[NONCE_LEN] ^= 1;
        assert_eq!(k.open_at_rest(&a), Err(SealError::Open));
        assert_eq!(k.open_at_rest(b"short"), Err(SealError::Open));
    }

    /// The `mm` key is still `derive_key(secret, GRANT_LABEL, token)`, so links issued before
    /// it was derived from a kept HMAC state still open.
    #[test]
    fn the_mm_key_is_the_derived_key_of_its_grant() {
        let k = ServerKey::from_secret(b"s");
        let token = "a-grant-token";
        let key = derive_key(&master(b"s"), GRANT_LABEL, token.as_bytes());
        let ct = Aes256Gcm::new(&key.into())
            .encrypt(&Nonce::from([0u8; NONCE_LEN]), b"pw123456".as_slice())
            .unwrap();
        assert_eq!(k.seal_for_grant(token, b"pw123456"), URL_SAFE.encode(&ct));
        assert_eq!(
            k.open_for_grant(token, &URL_SAFE.encode(&ct)).unwrap(),
            b"pw123456"
        );
    }

    #[test]
    fn mm_opens_only_with_its_own_grant() {
        let k = ServerKey::from_secret(b"s");
        let mm = k.seal_for_grant("grant-a", b"pw123456");
        assert!(!mm.contains('+') && !mm.contains('/'));
        assert_eq!(k.open_for_grant("grant-a", &mm).unwrap(), b"pw123456");
        assert_eq!(k.open_for_grant("grant-b", &mm), Err(SealError::Open));
        assert_eq!(
            ServerKey::from_secret(b"t").open_for_grant("grant-a", &mm),
            Err(SealError::Open)
        );
        assert_eq!(k.open_for_grant("grant-a", "%%%"), Err(SealError::Encoding));
    }

    #[test]
    fn grant_tags_depend_on_the_claims_and_the_secret_only() {
        let k = ServerKey::from_secret(b"s");
        assert_eq!(k.grant_tag(b"claims"), k.grant_tag(b"claims"));
        assert_ne!(k.grant_tag(b"claims"), k.grant_tag(b"claimt"));
        assert_ne!(
            k.grant_tag(b"claims"),
            ServerKey::from_secret(b"t").grant_tag(b"claims")
        );
        // Another use, another key: a job's token is no grant tag.
        assert_ne!(k.grant_tag(b"m1"), k.job_ready_tag("m1"));
        assert_ne!(k.job_ready_tag("m1"), k.job_ready_tag("m2"));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = ServerKey::from_secret(b"s");
        assert_eq!(format!("{k:?}"), "ServerKey(<redacted>)");
    }
}
