//! Property tests ("fuzzing" bounded for CI): random opcode streams and mutations of a real
//! checkpoint's `data.pkl` never panic, always end in `Ok` or a clean `Err`, and stay fast.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::index::state_dict;
use super::machine::run;
use super::tests::fixture_pickle;

/// Parses like `Checkpoint::open` does after reading `data.pkl`.
fn parse(data: &[u8]) {
    let started = Instant::now();
    let _ = run(data).and_then(|g| state_dict(&g).map(|_| ()));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Opcodes with plausible arguments, so streams get past the first byte.
fn op() -> impl Strategy<Value = Vec<u8>> {
    let simple = prop::sample::select(&b"N()]}tlduaes0120\x85\x86\x87\x88\x89\x94RQ."[..])
        .prop_map(|b| vec![b]);
    let with_arg =
        (prop::sample::select(&b"KqhM"[..]), any::<u8>(), any::<u8>()).prop_map(|(op, a, b)| {
            if op == b'M' {
                vec![op, a, b]
            } else {
                vec![op, a]
            }
        });
    let string =
        prop::sample::select(vec!["storage", "0", "cpu", "state_dict", "w"]).prop_map(|s| {
            let mut v = vec![0x8c, s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        });
    let globals = prop::sample::select(vec![
        &b"ctorch._utils\n_rebuild_tensor_v2\n"[..],
        &b"ctorch\nFloatStorage\n"[..],
        &b"ccollections\nOrderedDict\n"[..],
        &b"ctorch._utils\n_rebuild_parameter\n"[..],
        &b"cos\nsystem\n"[..],
    ])
    .prop_map(<[u8]>::to_vec);
    prop_oneof![4 => simple, 2 => with_arg, 2 => string, 1 => globals, 1 => any::<u8>().prop_map(|b| vec![b])]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut data = vec![0x80, 2];
        data.extend(body);
        parse(&data);
    }

    #[test]
    fn random_opcode_streams_never_panic(ops in prop::collection::vec(op(), 0..300)) {
        let mut data = vec![0x80, 2];
        data.extend(ops.concat());
        data.push(b'.');
        parse(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_pickles_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut data = fixture_pickle();
        for (at, byte, how) in edits {
            let i = at.index(data.len());
            match how {
                0 => data[i] = byte,
                1 => data.insert(i, byte),
                2 => { data.remove(i); }
                _ => data[i] ^= 1 << (byte % 8),
            }
        }
        if truncate {
            data.truncate(cut.index(data.len()));
        }
        parse(&data);
    }
}
