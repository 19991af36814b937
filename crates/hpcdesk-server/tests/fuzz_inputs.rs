//! Property-based fuzzing of what callers hand the service as text: tokens (the `token`
//! header), their claims, and configuration. Nothing panics; a token is accepted only with
//! the right signature.

use std::collections::BTreeMap;

use hpcdesk_server::auth::{TokenVerifier, claims_for, mint};
use hpcdesk_server::config::{Config, RoleKind, Secret};
use proptest::prelude::*;

const SECRET: &str = "fuzz-secret";

fn verifier() -> TokenVerifier {
    TokenVerifier::new(
        &[Secret::new(SECRET)],
        "11112",
        BTreeMap::from([("1".to_owned(), RoleKind::User)]),
        8192,
    )
}

/// Tokens met before: `alg: none`, an HS512 token, an empty signature, three dots, a huge
/// header, base64 that is not JSON.
const SEEDS: &[&str] = &[
    "eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYSJ9.",
    "eyJhbGciOiJIUzUxMiJ9.eyJ1c2VyIjoiYSJ9.c2ln",
    "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYSJ9.",
    "...",
    "a.b.c",
    "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
];

#[test]
fn the_seed_tokens_are_refused() {
    let v = verifier();
    for t in SEEDS {
        assert!(v.verify(t, 0).is_err(), "{t:?}");
    }
    let long = "a".repeat(100_000);
    assert!(v.verify(&long, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(t in "\\PC{0,300}") {
        prop_assert!(verifier().verify(&t, 0).is_err());
    }

    #[test]
    fn a_signed_token_with_any_claims_is_checked_without_panicking(
        user in "\\PC{0,20}",
        compute in "\\PC{0,20}",
        role in "\\PC{0,4}",
        status in "\\PC{0,8}",
        flip in 0usize..400,
    ) {
        let claims = claims_for(&user, &compute, "11112", &role, &status, 0, std::time::Duration::from_secs(3600));
        let token = mint(&Secret::new(SECRET), &claims);
        let _ = verifier().verify(&token, 1);
        // A token changed in any one place is refused.
        let mut bytes = token.into_bytes();
        let i = flip % bytes.len();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(verifier().verify(&changed, 1).is_err());
        }
    }

    #[test]
    fn arbitrary_configuration_is_loaded_or_refused_without_panicking(
        text in "\\PC{0,200}",
        key in "[A-Z_]{1,30}",
        value in "\\PC{0,30}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, &text).unwrap();
        let _ = Config::load(Some(&file), Vec::new());
        let _ = Config::load(None, vec![(format!("HPCDESK_{key}"), value)]);
    }
}
