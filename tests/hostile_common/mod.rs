//! Generates the hostile checkpoint corpus of issue 18 into a folder, so tests need no
//! prepared files: every pickle of the issue (the 301-byte empty rebuild tuple and its
//! variants, 100,000 nested TUPLE1, the 887-byte memo bomb, the 300 KB quadratic BINPUT
//! pickle) and more (truncated and lying zips, unknown opcodes, huge lengths, foreign globals,
//! wrong storage types, memo recursion, offsets past the data, compressed entries, lying
//! safetensors headers, a link to a file outside the root, a yaml with nonsense numbers).
//! Each case carries a marker its error must never quote. Writes only under the given folder.
//! The reader's unit tests (`src/pipeline/pickle/tests.rs`) reuse its opcode helpers.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// One hostile file in the corpus.
pub struct Case {
    /// Path relative to the model root, as a client names it.
    pub name: String,
    /// Bytes (or text) from the file that no error may contain.
    pub secret: String,
}

/// What the server answers for a model whose files are bad.
pub const EXPECTED_CODE: &str = "unavailable";

const MARKER: &str = "SECRETMARKER";

/// `BINUNICODE s`.
pub fn unicode(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// `GLOBAL module name`.
pub fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// `PROTO 2`, `body`, `STOP`.
fn pickle(body: &[u8]) -> Vec<u8> {
    [&[0x80, 2][..], body, b"."].concat()
}

/// `{"state_dict": {MARKER: <value>}}` where `value` is the given opcodes.
fn state_dict_with(value: &[u8]) -> Vec<u8> {
    pickle(
        &[
            &b"}"[..],
            &unicode("state_dict"),
            b"}",
            &unicode(MARKER),
            value,
            b"ss",
        ]
        .concat(),
    )
}

/// `torch._utils._rebuild_tensor_v2` called on `(storage(key, numel), offset, (n,), (1,),
/// False, OrderedDict())` with the given storage type.
fn rebuild(storage_type: &str, numel: u32, offset: u32, n: u32) -> Vec<u8> {
    let int = |v: u32| [&b"J"[..], &v.to_le_bytes()].concat();
    [
        global("torch._utils", "_rebuild_tensor_v2"),
        b"((".to_vec(),
        unicode("storage"),
        global("torch", storage_type),
        unicode("0"),
        unicode("cpu"),
        int(numel),
        b"tQ".to_vec(),
        int(offset),
        [&b"("[..], &int(n), b"t"].concat(),
        b"(K\x01t".to_vec(),
        vec![0x89],
        global("collections", "OrderedDict"),
        b")RtR".to_vec(),
    ]
    .concat()
}

/// A zip as `torch.save` writes it: `archive/data.pkl` plus the given data entries, stored.
fn torch_zip(pkl: &[u8], data: &[(&str, &[u8])]) -> Vec<u8> {
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut put = |name: &str, bytes: &[u8]| {
        zip.start_file(format!("archive/{name}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    };
    put("data.pkl", pkl);
    put("byteorder", b"little");
    for (name, bytes) in data {
        put(&format!("data/{name}"), bytes);
    }
    zip.finish().unwrap().into_inner()
}

/// A well-formed `torch.save` zip of a flat state dict of f32 tensors (`name -> (shape,
/// values)`), as a transformers `pytorch_model.bin` holds: each tensor its own storage,
/// contiguous, rebuilt by `_rebuild_tensor_v2`.
pub fn f32_state_dict_zip(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let int = |v: usize| [&b"J"[..], &(v as u32).to_le_bytes()].concat();
    let tuple = |items: &[usize]| {
        let mut t = vec![b'('];
        for i in items {
            t.extend(int(*i));
        }
        t.push(b't');
        t
    };
    let mut body = b"}(".to_vec();
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, (name, shape, values)) in tensors.iter().enumerate() {
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        body.extend(unicode(name));
        body.extend(global("torch._utils", "_rebuild_tensor_v2"));
        body.push(b'(');
        body.push(b'(');
        body.extend(unicode("storage"));
        body.extend(global("torch", "FloatStorage"));
        body.extend(unicode(&key.to_string()));
        body.extend(unicode("cpu"));
        body.extend(int(values.len()));
        body.extend(b"tQ");
        body.extend(int(0));
        body.extend(tuple(shape));
        body.extend(tuple(&stride));
        body.push(0x89);
        body.extend(global("collections", "OrderedDict"));
        body.extend(b")RtR");
        data.push((
            key.to_string(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    body.push(b'u');
    let entries: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    torch_zip(&pickle(&body), &entries)
}

fn ckpt(pkl: &[u8]) -> Vec<u8> {
    torch_zip(pkl, &[("0", &[0u8; 16])])
}

fn safetensors(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(vec![0u8; data_len]);
    v
}

/// Writes the corpus into `root/hostile/` (and a stand-in secret file into `outside`, which
/// must not be under `root`) and returns its cases.
pub fn write_corpus(root: &Path, outside: &Path) -> Vec<Case> {
    let dir = root.join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = Vec::new();
    let mut add = |file: &str, bytes: Vec<u8>, secret: &str| {
        std::fs::write(dir.join(file), bytes).unwrap();
        cases.push(Case {
            name: format!("hostile/{file}"),
            secret: secret.to_string(),
        });
    };

    // The issue's 301-byte file and its variants.
    let empty_rebuild = [global("torch._utils", "_rebuild_tensor_v2"), b")R".to_vec()].concat();
    add(
        "empty_rebuild.ckpt",
        ckpt(&state_dict_with(&empty_rebuild)),
        MARKER,
    );
    let from_type = [
        global("torch._tensor", "_rebuild_from_type_v2"),
        b")R".to_vec(),
    ]
    .concat();
    add(
        "from_type_empty.ckpt",
        ckpt(&state_dict_with(&from_type)),
        MARKER,
    );
    let short_pid = [
        global("torch._utils", "_rebuild_tensor_v2"),
        b"(".to_vec(),
        unicode("storage"),
        b"\x85Q".to_vec(),
        b"K\x00)K\x00tR".to_vec(),
    ]
    .concat();
    add(
        "short_persistent_id.ckpt",
        ckpt(&state_dict_with(&short_pid)),
        MARKER,
    );
    // 100,000 nested TUPLE1 (a stack overflow when candle dropped the tree).
    let nested = [&b"N"[..], &vec![0x85u8; 100_000]].concat();
    add("nested_tuple1.ckpt", ckpt(&pickle(&nested)), MARKER);
    // The memo bomb: each round pairs the previous value with itself.
    let mut bomb = b"]r\x00\x00\x00\x00".to_vec();
    for i in 0u32..40 {
        for _ in 0..2 {
            bomb.push(b'j');
            bomb.extend(i.to_le_bytes());
        }
        bomb.extend([0x86, b'r']);
        bomb.extend((i + 1).to_le_bytes());
    }
    add("memo_bomb.ckpt", ckpt(&pickle(&bomb)), MARKER);
    // A list of 100,000 None memoised 100,000 times (quadratic with deep-cloning memos).
    let mut quadratic = b"(".to_vec();
    quadratic.extend(vec![b'N'; 100_000]);
    quadratic.push(b'l');
    for _ in 0..100_000 {
        quadratic.extend(b"q\x00");
    }
    add("quadratic_memo.ckpt", ckpt(&pickle(&quadratic)), MARKER);
    // Recursion through the memo: a list appended into itself, again and again.
    let mut cycle = b"]q\x00".to_vec();
    for _ in 0..1000 {
        cycle.extend(b"h\x00a");
    }
    add("memo_cycle.ckpt", ckpt(&state_dict_with(&cycle)), MARKER);
    // Unknown opcodes, code execution, huge lengths, wrong storage types.
    add(
        "unknown_opcode.ckpt",
        ckpt(&state_dict_with(b"\xfe")),
        MARKER,
    );
    let system = [
        global("os", "system"),
        b"(".to_vec(),
        unicode(MARKER),
        b"tR".to_vec(),
    ]
    .concat();
    add("os_system.ckpt", ckpt(&state_dict_with(&system)), MARKER);
    let huge = [&b"\x8d"[..], &(1u64 << 62).to_le_bytes(), MARKER.as_bytes()].concat();
    add("huge_length.ckpt", ckpt(&state_dict_with(&huge)), MARKER);
    add(
        "evil_storage.ckpt",
        ckpt(&state_dict_with(&rebuild("EvilStorage", 4, 0, 4))),
        MARKER,
    );
    // Offsets and sizes past the 16-byte data entry.
    add(
        "offset_past_data.ckpt",
        ckpt(&state_dict_with(&rebuild("FloatStorage", 4, 1_000_000, 4))),
        MARKER,
    );
    add(
        "numel_past_data.ckpt",
        ckpt(&state_dict_with(&rebuild(
            "FloatStorage",
            1 << 30,
            0,
            1 << 30,
        ))),
        MARKER,
    );
    // Archive-level damage.
    let good = ckpt(&state_dict_with(&rebuild("FloatStorage", 4, 0, 4)));
    add("truncated.ckpt", good[..good.len() / 2].to_vec(), MARKER);
    let mut compressed = good.clone();
    for at in find_all(&compressed, b"PK\x03\x04") {
        compressed[at + 8] = 8; // local header: method deflate
    }
    for at in find_all(&compressed, b"PK\x01\x02") {
        compressed[at + 10] = 8; // central directory: method deflate
    }
    add("compressed.ckpt", compressed, MARKER);
    let mut lying_eocd = good.clone();
    if let Some(&at) = find_all(&lying_eocd, b"PK\x05\x06").last() {
        lying_eocd[at + 8..at + 12].copy_from_slice(&[0xff; 4]); // "see the zip64 record"
    }
    add("lying_entry_count.ckpt", lying_eocd, MARKER);
    add(
        "legacy_pickle.ckpt",
        state_dict_with(&empty_rebuild),
        MARKER,
    );
    add(
        "not_a_zip.ckpt",
        format!("{MARKER} plain text").into_bytes(),
        MARKER,
    );
    add("empty.ckpt", Vec::new(), MARKER);

    // Safetensors with lying headers.
    let mut huge_header = u64::MAX.to_le_bytes().to_vec();
    huge_header.extend(MARKER.as_bytes());
    add(
        "huge_header.safetensors",
        huge_header,
        &u64::MAX.to_string(),
    );
    let t = |shape: &str, offsets: &str| {
        format!(r#"{{"{MARKER}":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    add(
        "offsets_past_file.safetensors",
        safetensors(&t("[4]", "[0,16]"), 8),
        MARKER,
    );
    add(
        "shape_overflow.safetensors",
        safetensors(&t("[4294967296,4294967296,16]", "[0,16]"), 16),
        MARKER,
    );
    add(
        "shape_disagrees.safetensors",
        safetensors(&t("[3]", "[0,16]"), 16),
        MARKER,
    );
    add(
        "not_json.safetensors",
        safetensors(&format!("{{{MARKER}"), 0),
        MARKER,
    );
    add(
        "bad_dtype.safetensors",
        safetensors(
            &format!(r#"{{"w":{{"dtype":"{MARKER}","shape":[1],"data_offsets":[0,1]}}}}"#),
            1,
        ),
        MARKER,
    );

    // A link to a file outside the root whose first 8 bytes would be quoted as a length.
    std::fs::create_dir_all(outside).unwrap();
    let shadow = outside.join("shadow");
    let shadow_text = format!("root:$6$SECRETHASH:{MARKER}:19000:0:99999:7:::\n");
    std::fs::write(&shadow, &shadow_text).unwrap();
    std::os::unix::fs::symlink(&shadow, dir.join("shadow.safetensors")).unwrap();
    let first8 = u64::from_le_bytes(shadow_text.as_bytes()[..8].try_into().unwrap());
    cases.push(Case {
        name: "hostile/shadow.safetensors".into(),
        secret: first8.to_string(),
    });
    cases.push(Case {
        name: "hostile/shadow.safetensors".into(),
        secret: outside.display().to_string(),
    });

    // A real checkpoint with nonsense numbers in the yaml beside it.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single_file");
    std::os::unix::fs::symlink(
        fixture.join("tiny-sd1.safetensors"),
        dir.join("zero_timesteps.safetensors"),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(fixture.join("tiny-sd1.yaml")).unwrap();
    let yaml = format!("{yaml}\n# {MARKER}\n");
    let yaml = set_timesteps_zero(&yaml);
    std::fs::write(dir.join("zero_timesteps.yaml"), yaml).unwrap();
    cases.push(Case {
        name: "hostile/zero_timesteps.safetensors".into(),
        secret: MARKER.into(),
    });
    cases
}

/// The fixture yaml with `timesteps: 0` under `model.params`.
fn set_timesteps_zero(yaml: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in yaml.lines() {
        if !done && line.trim_start().starts_with("timesteps:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}timesteps: 0\n"));
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(done, "the fixture yaml sets timesteps");
    out
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A fresh temporary model root with the tiny SD1 fixture linked in as `tiny-sd1`.
pub fn root_with_fixture(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    std::os::unix::fs::symlink(models.join("tiny-sd1"), root.join("tiny-sd1")).unwrap();
    root
}
