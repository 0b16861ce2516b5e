//! Unit tests of the checkpoint reader, one group per opcode family, plus the hostile
//! pickles and the bundled `.ckpt` fixtures against their `.safetensors` twins.

use std::time::{Duration, Instant};

#[path = "../../../../tests/hostile_common/mod.rs"]
mod hostile_common;

use self::hostile_common::{global, unicode};
use super::index::state_dict;
use super::machine::{run, Kind};
use super::*;

/// `STOP` appended; the value returned must be a dict of tensors for `state_dict`.
fn pkl(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 2];
    v.extend_from_slice(body);
    v.push(b'.');
    v
}

/// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), 0, size, stride, False,
/// OrderedDict())` for 1- or 2-D shapes.
fn rebuild_call(key: &str, numel: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut v = global("torch._utils", "_rebuild_tensor_v2");
    v.extend(b"((");
    v.extend(unicode("storage"));
    v.extend(global("torch", "FloatStorage"));
    v.extend(unicode(key));
    v.extend(unicode("cpu"));
    v.extend([b'K', numel, b't', b'Q', b'K', 0]);
    for dims in [size, stride] {
        v.push(b'(');
        for &d in dims {
            v.extend([b'K', d]);
        }
        v.push(b't');
    }
    v.push(0x89);
    v.extend(global("collections", "OrderedDict"));
    v.extend(b")Rt");
    v.push(b'R');
    v
}

fn one_tensor_dict(call: &[u8]) -> Vec<u8> {
    let mut body = b"}".to_vec();
    body.extend(unicode("w"));
    body.extend_from_slice(call);
    body.push(b's');
    pkl(&body)
}

fn reason(data: &[u8]) -> String {
    match run(data).and_then(|g| state_dict(&g).map(|_| ())) {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_minimal_state_dict_gives_its_tensor_index() {
    let data = one_tensor_dict(&rebuild_call("0", 6, &[2, 3], &[3, 1]));
    let graph = run(&data).unwrap();
    let (tensors, nested) = state_dict(&graph).unwrap();
    assert!(!nested);
    let t = &tensors["w"];
    assert_eq!(
        (t.shape.as_slice(), t.stride.as_slice()),
        (&[2, 3][..], &[3, 1][..])
    );
    assert_eq!(
        (t.storage_key.as_str(), t.storage_numel, t.offset),
        ("0", 6, 0)
    );
    assert_eq!(t.dtype, StorageType::Float);
}

#[test]
fn the_state_dict_key_is_followed() {
    let mut body = b"}".to_vec();
    body.extend(unicode("state_dict"));
    body.push(b'}');
    body.extend(unicode("w"));
    body.extend(rebuild_call("0", 2, &[2], &[1]));
    body.extend(b"ss");
    let data = pkl(&body);
    let graph = run(&data).unwrap();
    let (tensors, nested) = state_dict(&graph).unwrap();
    assert!(nested);
    assert_eq!(tensors.keys().collect::<Vec<_>>(), ["w"]);
}

#[test]
fn an_ordered_dict_with_metadata_state_is_a_state_dict() {
    // What torch.save(module.state_dict()) writes: OrderedDict(), items, BUILD {"_metadata": ...}.
    let mut body = [global("collections", "OrderedDict"), b")R".to_vec()].concat();
    body.extend(unicode("w"));
    body.extend(rebuild_call("0", 2, &[2], &[1]));
    body.push(b's');
    body.push(b'}');
    body.extend(unicode("_metadata"));
    body.extend([global("collections", "OrderedDict"), b")R".to_vec()].concat());
    body.extend(b"sb");
    let data = pkl(&body);
    let (tensors, _) = state_dict(&run(&data).unwrap()).unwrap();
    assert_eq!(tensors.keys().collect::<Vec<_>>(), ["w"]);
    assert!(reason(&pkl(b"]Nb")).contains("not a dict"));
}

#[test]
fn scalars() {
    let root = |body: &[u8]| {
        let data = pkl(body);
        let g = run(&data).unwrap();
        g.kind(g.root).clone()
    };
    assert_eq!(root(b"N"), Kind::None);
    assert_eq!(root(&[0x88]), Kind::Bool(true));
    assert_eq!(root(&[0x89]), Kind::Bool(false));
    assert_eq!(root(b"J\xff\xff\xff\xff"), Kind::Int(-1));
    assert_eq!(root(b"K\x07"), Kind::Int(7));
    assert_eq!(root(b"M\x00\x01"), Kind::Int(256));
    assert_eq!(root(b"\x8a\x02\x00\x80"), Kind::Int(-32768));
    assert_eq!(root(b"G\x3f\xf0\x00\x00\x00\x00\x00\x00"), Kind::Other);
    assert!(reason(&pkl(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00")).contains("64 bits"));
}

#[test]
fn strings_and_bytes() {
    let data = pkl(b"\x8c\x02hi");
    let g = run(&data).unwrap();
    assert_eq!(g.str(g.root), Some("hi"));
    let data = pkl(b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00ok");
    let g = run(&data).unwrap();
    assert_eq!(g.str(g.root), Some("ok"));
    assert!(run(&pkl(b"C\x02ab")).is_ok());
    assert!(run(&pkl(b"B\x01\x00\x00\x00a")).is_ok());
    assert!(run(&pkl(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00a")).is_ok());
    assert!(reason(&pkl(b"\x8c\x02\xff\xfe")).contains("UTF-8"));
    // A declared length far beyond the stream is an error, never an allocation.
    let huge = pkl(b"X\xff\xff\xff\x7f");
    assert!(reason(&huge).contains("limit"), "{}", reason(&huge));
    let past_end = pkl(b"X\x10\x00\x00\x00ab");
    assert!(reason(&past_end).contains("ends in the middle"));
}

#[test]
fn containers() {
    let root = |body: &[u8]| {
        let data = pkl(body);
        let g = run(&data).unwrap();
        g.kind(g.root).clone()
    };
    assert_eq!(root(b")"), Kind::Tuple(vec![]));
    assert!(matches!(root(b"N\x85"), Kind::Tuple(v) if v.len() == 1));
    assert!(matches!(root(b"NN\x86"), Kind::Tuple(v) if v.len() == 2));
    assert!(matches!(root(b"NNN\x87"), Kind::Tuple(v) if v.len() == 3));
    assert!(matches!(root(b"(NNNNt"), Kind::Tuple(v) if v.len() == 4));
    assert!(matches!(root(b"]Na(NNe"), Kind::List(v) if v.len() == 3));
    assert!(matches!(root(b"(Nl"), Kind::List(v) if v.len() == 1));
    assert!(matches!(root(b"}NNs(NNNNu"), Kind::Dict(v) if v.len() == 6));
    assert!(matches!(root(b"(NNd"), Kind::Dict(v) if v.len() == 2));
    assert!(reason(&pkl(b"(Nd")).contains("odd"));
    assert!(reason(&pkl(b"}(Nu")).contains("odd"));
    assert!(reason(&pkl(b")Na")).contains("not a list"));
    assert!(reason(&pkl(b"]NNs")).contains("not a dict"));
}

#[test]
fn stack_and_marks() {
    assert!(run(&pkl(b"NN0")).is_ok());
    assert!(run(&pkl(b"N2\x86")).is_ok());
    assert!(run(&pkl(b"N(NN1")).is_ok());
    assert!(reason(&pkl(b"0N")).contains("empty stack"));
    // Values under a MARK are out of reach until it is closed.
    assert!(reason(&pkl(b"N(0")).contains("empty stack"));
    assert!(reason(&pkl(b"Nt")).contains("MARK"));
    let marks = pkl(&[b'('; 65]);
    assert!(reason(&marks).contains("MARK"), "{}", reason(&marks));
}

#[test]
fn memo() {
    let data = pkl(b"]q\x00h\x00h\x00\x86r\x01\x00\x00\x00j\x01\x00\x00\x00\x94");
    let g = run(&data).unwrap();
    assert!(matches!(g.kind(g.root), Kind::Tuple(v) if v.len() == 2));
    assert!(reason(&pkl(b"h\x05")).contains("never put"));
    assert!(reason(&pkl(b"j\x05\x00\x00\x00")).contains("never put"));
}

#[test]
fn globals() {
    for (m, n) in [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "HalfStorage"),
        ("torch", "BFloat16Storage"),
        ("collections", "OrderedDict"),
    ] {
        assert!(run(&pkl(&global(m, n))).is_ok(), "{m}.{n}");
    }
    for (m, n) in [
        ("os", "system"),
        ("builtins", "eval"),
        ("torch", "EvilStorage"),
    ] {
        let r = reason(&pkl(&global(m, n)));
        assert!(r.contains("not a tensor rebuild function"), "{r}");
        assert!(!r.contains(n), "the error quotes the file: {r}");
    }
    let mut stack_global = b"\x8c\x05torch\x8c\x0cFloatStorage".to_vec();
    stack_global.push(0x93);
    assert!(run(&pkl(&stack_global)).is_ok());
    let mut evil = b"\x8c\x02os\x8c\x06system".to_vec();
    evil.push(0x93);
    assert!(reason(&pkl(&evil)).contains("not a tensor rebuild"));
    assert!(reason(&pkl(b"ctorch\nFloat")).contains("GLOBAL line"));
}

#[test]
fn calls_other_than_tensor_rebuilds_are_refused() {
    // The 301-byte file: _rebuild_tensor_v2 called with an empty tuple.
    let mut body = b"}".to_vec();
    body.extend(unicode("state_dict"));
    body.push(b'}');
    body.extend(unicode("w"));
    body.extend(global("torch._utils", "_rebuild_tensor_v2"));
    body.extend(b")Rss");
    assert!(reason(&pkl(&body)).contains("wrong number of arguments"));
    let from_type = [
        global("torch._tensor", "_rebuild_from_type_v2"),
        b")R".to_vec(),
    ]
    .concat();
    assert!(reason(&pkl(&from_type)).contains("wrong number"));
    // A persistent id too short to be a storage.
    let short = [unicode("storage"), b"\x85Q".to_vec()].concat();
    assert!(reason(&pkl(&short)).contains("5-tuple"));
    let storage_call = [global("torch", "FloatStorage"), b")R".to_vec()].concat();
    assert!(reason(&pkl(&storage_call)).contains("calls a type"));
    assert!(reason(&pkl(b"N)R")).contains("not an accepted global"));
    let dict_args = [global("collections", "OrderedDict"), b"N\x85R".to_vec()].concat();
    assert!(reason(&pkl(&dict_args)).contains("arguments"));
    // Size and stride must agree and be non-negative integers.
    let mismatch = one_tensor_dict(&rebuild_call("0", 6, &[2, 3], &[1]));
    assert!(reason(&mismatch).contains("differ in length"));
    let bad_key = one_tensor_dict(&rebuild_call("../x", 6, &[6], &[1]));
    assert!(reason(&bad_key).contains("storage key"));
}

#[test]
fn parameters_and_typed_rebuilds_unwrap_to_the_tensor() {
    let inner = rebuild_call("0", 4, &[4], &[1]);
    let mut param = global("torch._utils", "_rebuild_parameter");
    param.push(b'(');
    param.extend(&inner);
    param.push(0x88);
    param.extend(global("collections", "OrderedDict"));
    param.extend(b")RtR");
    let (t, _) = state_dict(&run(&one_tensor_dict(&param)).unwrap()).unwrap();
    assert_eq!(t["w"].shape, [4]);
    // Without its tensor the parameter call is refused.
    let empty = [global("torch._utils", "_rebuild_parameter"), b")R".to_vec()].concat();
    assert!(reason(&pkl(&empty)).contains("without a tensor"));
}

#[test]
fn unknown_opcodes_truncation_and_protocols_are_refused() {
    assert!(reason(&pkl(b"i")).contains("unknown"));
    assert!(reason(&pkl(b"\xff")).contains("unknown"));
    assert!(reason(&[0x80, 2, b'N']).contains("without STOP"));
    assert!(reason(&[0x80, 9, b'N', b'.']).contains("protocol"));
    assert!(reason(&[0x80, 2, b'K']).contains("ends in the middle"));
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

#[test]
fn deep_nesting_stops_at_the_depth_limit() {
    let mut body = b"N".to_vec();
    body.extend(vec![0x85u8; 100_000]);
    let (r, took) = timed(|| reason(&pkl(&body)));
    assert!(r.contains("levels of nesting"), "{r}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Deep nesting built by appending to memoised lists is bounded too.
    let mut body = b"]q\x00".to_vec();
    for _ in 0..100 {
        body.extend(b"]h\x00aq\x00");
    }
    assert!(reason(&pkl(&body)).contains("levels of nesting"));
}

#[test]
fn the_memo_bomb_costs_nothing() {
    let mut body = b"]r\x00\x00\x00\x00".to_vec();
    for i in 0u32..40 {
        body.push(b'j');
        body.extend(i.to_le_bytes());
        body.push(b'j');
        body.extend(i.to_le_bytes());
        body.extend([0x86, b'r']);
        body.extend((i + 1).to_le_bytes());
    }
    let data = pkl(&body);
    // Each round is one small tuple of two ids; nesting 40 deep passes the depth limit.
    let (r, took) = timed(|| reason(&data));
    assert!(r.contains("levels of nesting"), "{r}");
    assert!(took < Duration::from_millis(100), "{took:?}");
}

#[test]
fn the_quadratic_memo_pickle_is_linear() {
    let mut body = b"(".to_vec();
    body.extend(vec![b'N'; 100_000]);
    body.push(b'l');
    for _ in 0..100_000 {
        body.extend(b"q\x00");
    }
    let data = pkl(&body);
    let (r, took) = timed(|| reason(&data));
    assert!(r.contains("dict"), "{r}");
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[test]
fn opcode_and_value_counts_are_bounded() {
    let mut body = b"N".to_vec();
    for _ in 0..(limits::MAX_OPS / 2 + 1) {
        body.extend(b"20");
    }
    assert!(reason(&pkl(&body)).contains("opcodes"));
    let nones = pkl(&vec![b'N'; limits::MAX_STACK + 1]);
    assert!(reason(&nones).contains("limit"));
}

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub(super) fn fixture_pickle() -> Vec<u8> {
    archive::Archive::open(&fixture("single_file/tiny-sd1.ckpt"))
        .unwrap()
        .read_pickle()
        .unwrap()
}

#[test]
fn the_fixture_checkpoints_match_their_safetensors_twins() {
    use crate::pipeline::load::weights::SafetensorsFiles;
    for model in ["tiny-sd1", "tiny-sd2"] {
        let ckpt = Checkpoint::open(&fixture(&format!("single_file/{model}.ckpt"))).unwrap();
        let pickle = archive::Archive::open(&fixture(&format!("single_file/{model}.ckpt")))
            .and_then(|mut a| a.read_pickle())
            .unwrap();
        let (_, nested) = state_dict(&machine::run(&pickle).unwrap()).unwrap();
        assert!(nested, "{model}: LDM checkpoints wrap a state_dict");
        let st_path = fixture(&format!("single_file/{model}.safetensors"));
        let st = SafetensorsFiles::open(std::slice::from_ref(&st_path)).unwrap();
        assert!(ckpt.tensors().len() > 100);
        for name in ckpt.tensors().keys() {
            let a = ckpt.load(name, &Device::Cpu).unwrap();
            let b = st.load(name, &Device::Cpu).unwrap();
            assert_eq!(a.dims(), b.dims(), "{model} {name}");
            let flat = |t: Tensor| -> Vec<f64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            assert_eq!(flat(a), flat(b), "{model} {name}");
        }
    }
}

#[test]
fn locate_checks_the_storage_span() {
    let t = |offset: u64, shape: Vec<usize>, stride: Vec<usize>| PickledTensor {
        storage_key: "0".into(),
        dtype: StorageType::Float,
        storage_numel: 0,
        offset,
        shape,
        stride,
    };
    let span = archive::Span {
        start: 100,
        len: 24,
    };
    let e = locate(&t(0, vec![2, 3], vec![3, 1]), span).unwrap();
    assert_eq!((e.start, e.reach), (100, 24));
    assert!(e.contiguous());
    let transposed = locate(&t(0, vec![3, 2], vec![1, 3]), span).unwrap();
    assert!(!transposed.contiguous());
    assert!(locate(&t(1, vec![2, 3], vec![3, 1]), span).is_none());
    assert!(locate(&t(0, vec![7], vec![1]), span).is_none());
    // Stride 0 would repeat one element: more elements than the storage holds is refused.
    assert!(locate(&t(0, vec![1000], vec![0]), span).is_none());
    assert!(locate(&t(u64::MAX, vec![1], vec![1]), span).is_none());
    assert!(locate(&t(0, vec![usize::MAX, 2], vec![1, 1]), span).is_none());
    assert!(locate(&t(5, vec![0], vec![1]), span).is_some());
}

#[test]
fn strided_tensors_are_gathered_in_row_major_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ckpt");
    let values: Vec<u8> = [0f32, 1., 2., 3., 4., 5.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // A 3x2 view with strides (1, 3) of a 2x3 storage: its transpose.
    let data = one_tensor_dict(&rebuild_call("0", 6, &[3, 2], &[1, 3]));
    write_zip(
        &path,
        &[
            ("t/data.pkl", &data[..]),
            ("t/byteorder", &b"little"[..]),
            ("t/data/0", &values[..]),
        ],
    );
    let ckpt = Checkpoint::open(&path).unwrap();
    let t = ckpt.load("w", &Device::Cpu).unwrap();
    assert_eq!(t.to_vec2::<f32>().unwrap(), [[0., 3.], [1., 4.], [2., 5.]]);
    let err = ckpt.load("missing", &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not in the checkpoint"));
}

#[test]
fn archives_must_be_stored_little_endian_and_hold_every_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ckpt");
    let data = one_tensor_dict(&rebuild_call("0", 6, &[6], &[1]));
    let open = |entries: &[(&str, &[u8])]| {
        write_zip(&path, entries);
        Checkpoint::open(&path).map(|_| ()).unwrap_err().to_string()
    };
    let data = &data[..];
    assert!(open(&[("t/data.pkl", data)]).contains("missing"));
    assert!(open(&[("t/data.pkl", data), ("t/data/0", &[0; 8][..])]).contains("outside"));
    assert!(open(&[("t/data.pkl", data), ("t/byteorder", &b"big"[..])]).contains("little-endian"));
    assert!(open(&[("t/x.pkl", data)]).contains("without data.pkl"));
    assert!(open(&[("a/data.pkl", data), ("b/data.pkl", data)]).contains("several"));
    std::fs::write(&path, pkl(b"N")).unwrap();
    assert_eq!(Checkpoint::open(&path).unwrap_err(), PickleError::Legacy);
    std::fs::write(&path, b"PK\x03\x04 and then nothing").unwrap();
    assert!(Checkpoint::open(&path)
        .unwrap_err()
        .to_string()
        .contains("corrupt"));
}

pub(super) fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    use std::io::Write;
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}
