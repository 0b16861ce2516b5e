//! A1111 prompt syntax against the extension fixtures (`tests/fixtures/ext`, cases
//! `a1111_prompt_sd1` and `textual_inversion_sd1` on tiny-sd1): the parsed (text, weight)
//! pieces, the token ids and multipliers of every 77-token chunk, the emphasised and plain
//! `prompt_embeds`, and the two long-prompt txt2img runs (negative padded to the prompt's
//! chunk count, and A1111's default of separate cond/uncond UNet calls), all through
//! `runai replay`.

mod fixture_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fixture_common::{fixtures, max_diff};
use runai::cli::replay::{read_json, run, ReplayArgs};
use runai::pipeline::prompt::parse::parse_prompt_attention;
use serde_json::Value;

fn ext_manifest() -> PathBuf {
    fixtures().join("ext/manifest.json")
}

fn cases(family: &str) -> Vec<Value> {
    let doc = read_json(&ext_manifest()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["family"] == family)
        .cloned()
        .collect()
}

fn replay(id: &str, dir: &Path) -> HashMap<String, Tensor> {
    let out = dir.join(format!("{}.safetensors", id.replace('/', "_")));
    run(ReplayArgs {
        manifest: ext_manifest(),
        case: id.into(),
        model: None,
        out: out.clone(),
    })
    .unwrap_or_else(|e| panic!("{id}: {e:#}"));
    candle_core::safetensors::load(&out, &Device::Cpu).unwrap()
}

fn golden(case: &Value) -> HashMap<String, Tensor> {
    let path = fixtures()
        .join("ext")
        .join(case["files"]["tensors"].as_str().unwrap());
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn pieces_of(parsed: &Value) -> Vec<(String, f64)> {
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_f64().unwrap()))
        .collect()
}

fn assert_parsed(prompt: &str, want: &Value) {
    let got: Vec<(String, f64)> = parse_prompt_attention(prompt)
        .into_iter()
        .map(|p| (p.text, p.weight))
        .collect();
    let want = pieces_of(want);
    assert_eq!(got.len(), want.len(), "{prompt:?}: {got:?}");
    for ((t, w), (u, v)) in got.iter().zip(&want) {
        assert_eq!(t, u, "{prompt:?}");
        assert!((w - v).abs() < 1e-12, "{prompt:?}: {t} {w} vs {v}");
    }
}

#[test]
fn parsed_pieces_match_a1111() {
    let all = cases("a1111_prompt_sd1");
    assert_eq!(all.len(), 14);
    for case in &all {
        let a = &case["a1111"];
        if a.get("prompt").is_some() {
            assert_parsed(case["prompt"].as_str().unwrap(), &a["prompt"]["parsed"]);
            assert_parsed(
                case["negative_prompt"].as_str().unwrap(),
                &a["negative_prompt"]["parsed"],
            );
        } else {
            assert_parsed(case["prompt"].as_str().unwrap(), &a["parsed"]);
        }
    }
}

/// Compares the chunk ids (exactly), multipliers and embeddings of `prefix`.
fn compare_encoding(
    id: &str,
    ours: &HashMap<String, Tensor>,
    theirs: &HashMap<String, Tensor>,
    prefix: &str,
) -> usize {
    let mut chunks = 0;
    for j in 0.. {
        let ids = format!("{prefix}clip_l_chunk{j}_input_ids");
        let Some(want) = theirs.get(&ids) else { break };
        let got = ours.get(&ids).unwrap_or_else(|| panic!("{id}: no {ids}"));
        assert_eq!(
            got.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap(),
            want.to_vec1::<i64>().unwrap(),
            "{id}: {ids}"
        );
        let m = format!("{prefix}clip_l_chunk{j}_multipliers");
        let d = max_diff(&ours[&m], &theirs[&m]);
        assert!(d < 1e-6, "{id}: {m} {d}");
        chunks += 1;
    }
    assert!(
        !ours.contains_key(&format!("{prefix}clip_l_chunk{chunks}_input_ids")),
        "{id}: more chunks than the reference"
    );
    for name in ["prompt_embeds", "prompt_embeds_no_emphasis"] {
        let key = format!("{prefix}{name}");
        if let Some(want) = theirs.get(&key) {
            let d = max_diff(&ours[&key], want);
            assert!(d < 1e-4, "{id}: {key} {d}");
        }
    }
    chunks
}

#[test]
fn chunks_and_embeddings_match_a1111() {
    let tmp = tempfile::tempdir().unwrap();
    let mut total_chunks = 0;
    for case in cases("a1111_prompt_sd1") {
        if case["task"] != "a1111_encode_prompt" {
            continue;
        }
        let id = case["id"].as_str().unwrap();
        let ours = replay(id, tmp.path());
        let theirs = golden(&case);
        let n = compare_encoding(id, &ours, &theirs, "");
        assert_eq!(
            n as u64,
            case["a1111"]["n_chunks"].as_u64().unwrap(),
            "{id}"
        );
        total_chunks += n;
    }
    // 12 prompts: BREAK makes 3 chunks, the 158-token prompt 3, two more need 2.
    assert_eq!(total_chunks, 12 + 2 + 2 + 1 + 1);
}

#[test]
fn textual_inversion_matches_a1111_placeholders() {
    let tmp = tempfile::tempdir().unwrap();
    let case = &cases("textual_inversion_sd1")[0];
    let id = case["id"].as_str().unwrap();
    let ours = replay(id, tmp.path());
    let theirs = golden(case);
    assert_eq!(compare_encoding(id, &ours, &theirs, "a1111_"), 1);
    // The placeholders sit where the name was and the vectors changed the embedding.
    let ids = ours["a1111_clip_l_chunk0_input_ids"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(&ids[..6], &[49406, 320, 1125, 539, 0, 0]);
}

#[test]
fn long_prompt_txt2img_runs_match() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases("a1111_prompt_sd1") {
        if case["task"] != "txt2img" {
            continue;
        }
        let id = case["id"].as_str().unwrap();
        let ours = replay(id, tmp.path());
        let theirs = golden(&case);
        let split = id.ends_with("_unpadded");
        let uncond = if split {
            "uncond_prompt_embeds"
        } else {
            "negative_prompt_embeds"
        };
        assert!(
            !split || !ours.contains_key("negative_prompt_embeds"),
            "{id}"
        );
        assert_eq!(ours["prompt_embeds"].dims(), &[1, 154, 32], "{id}");
        for (name, tol) in [
            ("prompt_embeds", 1e-4),
            (uncond, 1e-4),
            ("unet_out_0", 5e-4),
            ("final_latents", 5e-3),
            ("image", 2e-3),
        ] {
            let d = max_diff(&ours[name], &theirs[name]);
            assert!(d < tol, "{id}: {name} {d} > {tol}");
        }
    }
}
