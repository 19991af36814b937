//! Password hashing for platform accounts: argon2id with a random salt, stored as a PHC
//! string. Hashing is deliberately slow, so it runs on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Shortest password `hpcdesk user add/passwd` accepts.
pub const MIN_LEN: usize = 8;

/// A PHC string nobody's password matches, verified for unknown users so that a wrong user
/// name costs as much time as a wrong password.
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$WlSJ8gJIbSe6o8Gd7tUXXbVOR6H+Qyb8zsmqUL4hh5Q";

pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("a password needs at least {MIN_LEN} characters"));
    }
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (a stored hash, or `None` for an unknown user).
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    let known = phc.is_some();
    let Ok(parsed) = PasswordHash::new(phc.unwrap_or(DECOY)) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

/// [`verify`] off the async threads.
pub async fn verify_async(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, phc.as_deref()))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse!", Some(&h)));
        assert!(!verify("correct horse", None));
        assert!(!verify("x", Some("not a hash")));
        assert_ne!(hash("correct horse").unwrap(), h, "salted");
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(hash("short").is_err());
    }

    #[test]
    fn the_decoy_parses() {
        assert!(PasswordHash::new(DECOY).is_ok());
    }
}
