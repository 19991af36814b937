//! Property-based fuzzing of the RFB pieces that read what others send: the framer of viewer
//! messages (every viewer byte, view-only filtering) and the two handshakes (a viewer that
//! sends anything; a server, or something posing as one, that sends anything). Nothing
//! panics, nothing hangs, and how bytes are cut never changes what the framer says.

use hpcdesk_rfb::{Class, ClientScanner};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// Every byte the scanner hands out with its class, and whether it stopped.
fn scan(data: &[u8], cuts: &[usize]) -> (Vec<(u8, Class)>, bool) {
    let mut s = ClientScanner::new();
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(data.len());
    points.sort_unstable();
    let mut start = 0;
    for end in points {
        let r = s.feed(&data[start..end], |b, c| {
            out.extend(b.iter().map(|x| (*x, c)))
        });
        start = end;
        if r.is_err() {
            return (out, true);
        }
    }
    (out, false)
}

/// Inputs met before: a ClientCutText claiming 4 GiB, an extended clipboard with a negative
/// length, an unknown message type, a SetEncodings with 65535 entries, nothing at all.
const SEEDS: &[&[u8]] = &[
    &[1, 6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    &[1, 6, 0, 0, 0, 0x80, 0, 0, 0x10, 0, 0, 0, 0],
    &[1, 77, 0, 0, 0],
    &[1, 2, 0, 0xff, 0xff],
    &[],
];

#[test]
fn the_seeds_never_panic_and_do_not_depend_on_cuts() {
    for s in SEEDS {
        let whole = scan(s, &[]);
        for cut in 0..=s.len() {
            let split = scan(s, &[cut]);
            assert_eq!(split.1, whole.1);
            assert!(whole.0.starts_with(&split.0) || split.0.starts_with(&whole.0));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_framer_never_panics_and_cuts_do_not_change_what_it_says(
        data in proptest::collection::vec(any::<u8>(), 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let (whole, whole_failed) = scan(&data, &[]);
        let (split, split_failed) = scan(&data, &cuts);
        prop_assert_eq!(whole_failed, split_failed);
        if !whole_failed {
            // Held-back header bytes aside, the same bytes in the same classes, in order.
            prop_assert_eq!(&whole, &split);
        }
        let bytes: Vec<u8> = whole.iter().map(|(b, _)| *b).collect();
        prop_assert!(data.starts_with(&bytes));
    }

    #[test]
    fn a_viewer_sending_anything_ends_the_handshake_cleanly(
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(4096);
            theirs.write_all(&data).await.unwrap();
            drop(theirs);
            let done = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                hpcdesk_rfb::handshake::accept_viewer(&mut ours),
            )
            .await;
            assert!(done.is_ok(), "the viewer handshake hung on {data:?}");
        });
    }

    #[test]
    fn a_server_sending_anything_ends_the_authentication_cleanly(
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(4096);
            theirs.write_all(&data).await.unwrap();
            drop(theirs);
            let done = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                hpcdesk_rfb::handshake::authenticate_to_server(&mut ours, b"secret12"),
            )
            .await;
            assert!(done.is_ok(), "the server handshake hung on {data:?}");
        });
    }
}
