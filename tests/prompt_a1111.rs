//! A1111 prompt syntax against the extension fixtures (`tests/fixtures/ext`, cases
//! `a1111_prompt_sd1` / `textual_inversion_sd1` on tiny-sd1 and `a1111_prompt_sdxl` /
//! `textual_inversion_sdxl` on tiny-sdxl): the parsed (text, weight) pieces, the token ids
//! and multipliers of every 77-token chunk per text tower, the emphasised and plain
//! `prompt_embeds` (SDXL: both towers side by side, and the pooled embedding of the first
//! chunk), and the long-prompt txt2img runs (negative padded to the prompt's chunk count, and
//! A1111's default of separate cond/uncond UNet calls), all through `runai replay`.

mod fixture_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fixture_common::{fixtures, max_diff};
use runai::cli::replay::{read_json, run, ReplayArgs};
use runai::pipeline::noise::SeededNoise;
use runai::pipeline::params::{
    EmptyNegative, GenerateParams, PromptSyntax, SchedulerKind, Task, XlOptions,
};
use runai::pipeline::prompt::parse::parse_prompt_attention;
use runai::pipeline::trace::Trace;
use runai::pipeline::{RuntimeOptions, StableDiffusion};
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
    for family in ["a1111_prompt_sd1", "a1111_prompt_sdxl"] {
        let all = cases(family);
        assert_eq!(all.len(), 14, "{family}");
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
}

/// Compares the chunk ids (exactly) and multipliers of every tower in the reference, then
/// the embeddings (and the pooled embedding, when the reference has one) of `prefix`.
/// Returns the chunk count (equal for all towers).
fn compare_encoding(
    id: &str,
    ours: &HashMap<String, Tensor>,
    theirs: &HashMap<String, Tensor>,
    prefix: &str,
) -> usize {
    let mut counts = Vec::new();
    for tower in ["clip_l", "clip_g"] {
        let mut chunks = 0;
        for j in 0.. {
            let ids = format!("{prefix}{tower}_chunk{j}_input_ids");
            let Some(want) = theirs.get(&ids) else { break };
            let got = ours.get(&ids).unwrap_or_else(|| panic!("{id}: no {ids}"));
            assert_eq!(
                got.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap(),
                want.to_vec1::<i64>().unwrap(),
                "{id}: {ids}"
            );
            let m = format!("{prefix}{tower}_chunk{j}_multipliers");
            let d = max_diff(&ours[&m], &theirs[&m]);
            assert!(d < 1e-6, "{id}: {m} {d}");
            chunks += 1;
        }
        assert!(
            !ours.contains_key(&format!("{prefix}{tower}_chunk{chunks}_input_ids")),
            "{id}: {tower} has more chunks than the reference"
        );
        if chunks > 0 {
            counts.push(chunks);
        }
    }
    assert!(!counts.is_empty(), "{id}: no chunks compared");
    assert!(counts.iter().all(|&c| c == counts[0]), "{id}: {counts:?}");
    for name in [
        "prompt_embeds",
        "prompt_embeds_no_emphasis",
        "pooled_prompt_embeds",
    ] {
        let key = format!("{prefix}{name}");
        if let Some(want) = theirs.get(&key) {
            let got = ours.get(&key).unwrap_or_else(|| panic!("{id}: no {key}"));
            let d = max_diff(got, want);
            assert!(d < 1e-4, "{id}: {key} {d}");
        }
    }
    counts[0]
}

/// Replays every `a1111_encode_prompt` case of `family`; returns the chunks compared.
fn replay_prompt_family(family: &str) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let mut total_chunks = 0;
    for case in cases(family) {
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
    total_chunks
}

// 12 prompts: BREAK makes 3 chunks, the 158-token prompt 3, two more need 2.
const PROMPT_CHUNKS: usize = 12 + 2 + 2 + 1 + 1;

#[test]
fn chunks_and_embeddings_match_a1111() {
    assert_eq!(replay_prompt_family("a1111_prompt_sd1"), PROMPT_CHUNKS);
}

/// SDXL: both towers chunk alike (clip_g padded with 0 after the end-of-text token), their
/// penultimate states sit side by side, and the pooled embedding is the bigG tower's of the
/// first chunk.
#[test]
fn sdxl_chunks_embeddings_and_pooled_match_a1111() {
    assert_eq!(replay_prompt_family("a1111_prompt_sdxl"), PROMPT_CHUNKS);
    let tmp = tempfile::tempdir().unwrap();
    let ours = replay("tiny-sdxl/a1111_prompt_05", tmp.path());
    // Three chunks of CLIP-L (8) + bigG (12) wide, one pooled row of the projection (10).
    assert_eq!(ours["prompt_embeds"].dims(), &[1, 231, 20]);
    assert_eq!(ours["pooled_prompt_embeds"].dims(), &[1, 10]);
    let pad = ours["clip_g_chunk0_input_ids"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(pad[7..], [0; 70]);
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

/// SDXL textual inversion (`clip_l` + `clip_g` vectors): the embeddings agree with A1111 and
/// diffusers alike, and the pooled embedding is A1111's, taken at the end-of-text token,
/// not diffusers' (which lands on the last embedding token, id 49409 being the largest).
#[test]
fn sdxl_textual_inversion_pools_at_the_end_of_text() {
    let tmp = tempfile::tempdir().unwrap();
    let case = &cases("textual_inversion_sdxl")[0];
    let id = case["id"].as_str().unwrap();
    let ours = replay(id, tmp.path());
    let theirs = golden(case);
    assert_eq!(compare_encoding(id, &ours, &theirs, "a1111_"), 1);
    for tower in ["clip_l", "clip_g"] {
        let ids = ours[&format!("a1111_{tower}_chunk0_input_ids")]
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        assert_eq!(
            &ids[..10],
            &[49406, 320, 1125, 539, 0, 0, 530, 518, 2583, 49407]
        );
    }
    let d = max_diff(&ours["a1111_prompt_embeds"], &theirs["prompt_embeds"]);
    assert!(d < 1e-4, "{id}: embeddings differ from diffusers' by {d}");
    let pooled = &ours["a1111_pooled_prompt_embeds"];
    let d = max_diff(pooled, &theirs["a1111_pooled_prompt_embeds"]);
    assert!(d < 1e-4, "{id}: pooled {d}");
    let d = max_diff(pooled, &theirs["pooled_prompt_embeds"]);
    assert!(d > 1e-2, "{id}: pooled like diffusers' ({d})");
}

/// The long-prompt txt2img runs of `family` with contexts `width` wide; `xl` adds the pooled
/// embeddings and the UNet's added text embeddings to the comparison.
fn long_prompt_runs(family: &str, width: usize, xl: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for case in cases(family) {
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
        assert_eq!(ours["prompt_embeds"].dims(), &[1, 154, width], "{id}");
        let mut names = vec![
            ("prompt_embeds", 1e-4),
            (uncond, 1e-4),
            ("unet_out_0", 5e-4),
            ("final_latents", 5e-3),
            ("image", 2e-3),
        ];
        if xl {
            names.extend([
                ("pooled_prompt_embeds", 1e-4),
                ("negative_pooled_prompt_embeds", 1e-4),
                ("unet_added_text_embeds", 1e-4),
            ]);
        }
        for (name, tol) in names {
            let got = ours.get(name).unwrap_or_else(|| panic!("{id}: no {name}"));
            let d = max_diff(got, &theirs[name]);
            assert!(d < tol, "{id}: {name} {d} > {tol}");
        }
        runs += 1;
    }
    assert_eq!(runs, 2, "{family}");
}

#[test]
fn long_prompt_txt2img_runs_match() {
    long_prompt_runs("a1111_prompt_sd1", 32, false);
}

#[test]
fn sdxl_long_prompt_txt2img_runs_match() {
    long_prompt_runs("a1111_prompt_sdxl", 20, true);
}

/// One traced 64x64 txt2img step on `model`.
fn traced(model: &StableDiffusion, params: &GenerateParams) -> Trace {
    let mut trace = Trace::new();
    let mut noise = SeededNoise::new(params.seed, params.n_samples);
    let mut progress = |_: usize, _: usize| true;
    model
        .run_with_noise(params, &mut noise, Some(&mut trace), &mut progress)
        .unwrap();
    trace
}

fn all_zero(t: &Tensor) -> bool {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == 0.0)
}

/// What the SDXL goldens leave out: a plain short prompt reads the same as diffusers' path,
/// A1111 ignores Clip skip on SDXL, and an empty negative prompt is all zeros (pooled too),
/// beside a two-chunk prompt it is split into its own UNet call.
#[test]
fn sdxl_plain_prompts_clip_skip_and_empty_negative() {
    let opts = RuntimeOptions::default();
    let model =
        StableDiffusion::load_folder(&fixtures().join("ext/models/tiny-sdxl"), &opts).unwrap();
    let a1111 = PromptSyntax::A1111 {
        pad_cond_uncond: false,
    };
    let base = GenerateParams {
        task: Task::Txt2Img,
        prompt: "a red fox in the snow".into(),
        negative_prompt: "blurry".into(),
        steps: 1,
        guidance_scale: 5.0,
        seed: 3,
        width: Some(64),
        height: Some(64),
        n_samples: 1,
        scheduler: SchedulerKind::Euler,
        eta: 0.0,
        clip_skip: None,
        syntax: a1111,
        loras: Vec::new(),
        timestep_spacing: None,
        xl: XlOptions::default(),
    };
    let ours = traced(&model, &base);
    let literal = traced(
        &model,
        &GenerateParams {
            syntax: PromptSyntax::Literal,
            ..base.clone()
        },
    );
    for name in [
        "prompt_embeds",
        "pooled_prompt_embeds",
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
        "final_latents",
    ] {
        let d = max_diff(ours.get(name).unwrap(), literal.get(name).unwrap());
        assert!(d < 1e-5, "{name}: A1111 and diffusers differ by {d}");
    }

    let skipped = traced(
        &model,
        &GenerateParams {
            clip_skip: Some(1),
            ..base.clone()
        },
    );
    assert_eq!(
        max_diff(
            skipped.get("prompt_embeds").unwrap(),
            ours.get("prompt_embeds").unwrap()
        ),
        0.0,
        "clip_skip moved SDXL's A1111 encoding"
    );

    let long = GenerateParams {
        prompt: ["a red fox in the snow"; 16].join(", "),
        negative_prompt: String::new(),
        xl: XlOptions {
            empty_negative: EmptyNegative::Zeros,
            ..XlOptions::default()
        },
        ..base.clone()
    };
    let t = traced(&model, &long);
    assert_eq!(t.get("prompt_embeds").unwrap().dims(), &[1, 154, 20]);
    let uncond = t.get("uncond_prompt_embeds").unwrap();
    assert_eq!(uncond.dims(), &[1, 77, 20]);
    assert!(all_zero(uncond));
    assert!(all_zero(t.get("negative_pooled_prompt_embeds").unwrap()));
    assert!(!all_zero(t.get("pooled_prompt_embeds").unwrap()));
    // One added row per context row: the zero pooled row with the uncond context.
    let added = t.get("unet_added_text_embeds").unwrap();
    assert_eq!(added.dims(), &[2, 10]);
    assert!(all_zero(&added.narrow(0, 0, 1).unwrap()));

    // With padding the zero chunk is followed by the empty prompt's (encoded, not zero).
    let padded = traced(
        &model,
        &GenerateParams {
            syntax: PromptSyntax::A1111 {
                pad_cond_uncond: true,
            },
            ..long
        },
    );
    let negative = padded.get("negative_prompt_embeds").unwrap();
    assert_eq!(negative.dims(), &[1, 154, 20]);
    assert!(all_zero(&negative.narrow(1, 0, 77).unwrap()));
    assert!(!all_zero(&negative.narrow(1, 77, 77).unwrap()));
}
