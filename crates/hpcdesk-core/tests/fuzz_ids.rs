//! Property-based fuzzing of the identifiers parsed at the boundary (session ids from URLs,
//! account and node names from tokens and listings): nothing panics, what parses prints back
//! to itself, and no part of a session id can smuggle in the separator.

use hpcdesk_core::{ComputeUser, DisplayNumber, NodeName, SessionId};
use proptest::prelude::*;

/// Inputs met before: the SCNet example, separators in a part, a path, a NUL, a huge
/// display, an option-looking name, a name with a shell metacharacter.
const SEEDS: &[&str] = &[
    "gv101--test_1215--SIG--4",
    "a--b--c--SIG--1",
    "gv101--../etc--SIG--4",
    "gv101--te\0st--SIG--4",
    "gv101--test--SIG--99999999999999999999",
    "-x--test--SIG--4",
    "gv101--te;st--SIG--4",
    "",
];

fn check(s: &str) {
    if let Ok(id) = SessionId::parse(s) {
        let text = id.to_string();
        assert_eq!(SessionId::parse(&text).unwrap(), id, "{s:?}");
        assert!(!id.user().as_str().contains("--"), "{s:?}");
        assert!(!id.node().as_str().contains("--"), "{s:?}");
        assert!(!id.user().as_str().starts_with('-'), "{s:?}");
    }
    if let Ok(u) = ComputeUser::parse(s) {
        assert_eq!(ComputeUser::parse(u.as_str()).unwrap(), u);
        assert!(u.as_str().bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
    }
    if let Ok(n) = NodeName::parse(s) {
        assert_eq!(NodeName::parse(n.as_str()).unwrap(), n);
    }
    if let Ok(d) = DisplayNumber::parse(s) {
        assert!(d.get() <= DisplayNumber::MAX);
    }
}

#[test]
fn the_seeds_parse_or_are_refused_without_panicking() {
    for s in SEEDS {
        check(s);
    }
    assert!(SessionId::parse(SEEDS[0]).is_ok());
    for bad in &SEEDS[1..] {
        assert!(SessionId::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_parsed_or_refused(s in "\\PC{0,40}") {
        check(&s);
    }

    #[test]
    fn id_shaped_text_is_parsed_or_refused(
        node in "[a-z0-9_.-]{0,12}",
        user in "[a-zA-Z0-9_.$-]{0,12}",
        n in "[0-9]{0,6}",
    ) {
        check(&format!("{node}--{user}--SIG--{n}"));
    }
}
