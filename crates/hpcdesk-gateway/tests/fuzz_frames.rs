//! Property-based fuzzing of the WebSocket frame parser (what every viewer's bytes go through
//! first): arbitrary bytes cut anywhere never panic it, and real client frames, cut anywhere,
//! come out as exactly their unmasked payload. Bounded cases, so CI runs it in seconds.

use hpcdesk_gateway::ws::{Event, FrameReader};
use proptest::prelude::*;

/// Feeds `data` in chunks ending at `cuts`; returns the payload seen and whether it erred.
fn feed(data: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
    let mut reader = FrameReader::new();
    let mut payload = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(data.len());
    points.sort_unstable();
    let mut start = 0;
    for end in points {
        let mut chunk = data[start..end].to_vec();
        start = end;
        let mut pos = 0;
        loop {
            match reader.next(&mut chunk, &mut pos) {
                Ok(Some(Event::Data(d))) => payload.extend_from_slice(d),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return (payload, true),
            }
        }
    }
    (payload, false)
}

/// A masked binary client frame (FIN set) carrying `payload`.
fn client_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    hpcdesk_gateway::ws::client_frame(0x2, true, payload, mask)
}

/// Inputs met before, tried first: a frame length that overflows, an unmasked client frame,
/// a control frame too long, a reserved opcode, a zero-length header.
const SEEDS: &[&[u8]] = &[
    &[
        0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ],
    &[0x82, 0x05, b'h', b'e', b'l', b'l', b'o'],
    &[0x89, 0xfe, 0x01, 0x00, 0, 0, 0, 0],
    &[0x83, 0x80, 0, 0, 0, 0],
    &[0x00, 0x80, 0, 0, 0, 0],
    &[],
];

#[test]
fn the_seeds_never_panic() {
    for s in SEEDS {
        for cut in 0..=s.len() {
            let _ = feed(s, &[cut]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_cut_anywhere_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let _ = feed(&data, &cuts);
    }

    #[test]
    fn client_frames_cut_anywhere_give_back_their_payload(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        masks in proptest::collection::vec(any::<[u8; 4]>(), 6),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        for (p, m) in payloads.iter().zip(&masks) {
            stream.extend(client_frame(p, *m));
        }
        let (got, failed) = feed(&stream, &cuts);
        prop_assert!(!failed);
        prop_assert_eq!(got, payloads.concat());
    }
}
