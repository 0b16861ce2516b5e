//! LoRA cases of the extension fixtures (`lora_sd1` on tiny-sd1: kohya files with attention,
//! feed-forward and 1x1/3x3 convolution modules, alpha != rank, multipliers 1.0 and 0.6, two
//! LoRAs at once; `lora_sdxl` on tiny-sdxl: the same with both text encoders, one file with
//! SGM module names and one with diffusers names) replayed with `runai replay` against
//! diffusers' own LoRA loader.

mod fixture_common;

use candle_core::Device;
use fixture_common::{fixtures, max_diff};
use runai::cli::replay::{read_json, run, ReplayArgs};

/// Replays every case of `family`; `xl` adds the pooled embeddings to the comparison.
fn replay_family(family: &str, xl: bool) {
    let manifest = fixtures().join("ext/manifest.json");
    let doc = read_json(&manifest).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut replayed = 0;
    for case in doc["cases"].as_array().unwrap() {
        if case["family"] != family {
            continue;
        }
        let id = case["id"].as_str().unwrap();
        let out = tmp.path().join("out.safetensors");
        run(ReplayArgs {
            manifest: manifest.clone(),
            case: id.into(),
            model: None,
            out: out.clone(),
        })
        .unwrap_or_else(|e| panic!("{id}: {e:#}"));
        let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let theirs = candle_core::safetensors::load(
            fixtures()
                .join("ext")
                .join(case["files"]["tensors"].as_str().unwrap()),
            &Device::Cpu,
        )
        .unwrap();
        let mut names = vec![
            ("prompt_embeds", 1e-4),
            ("negative_prompt_embeds", 1e-4),
            ("unet_out_0", 5e-4),
            ("final_latents", 5e-3),
            ("image", 2e-3),
        ];
        if xl {
            names.extend([
                ("pooled_prompt_embeds", 1e-4),
                ("negative_pooled_prompt_embeds", 1e-4),
            ]);
        }
        for (name, tol) in names {
            let got = ours.get(name).unwrap_or_else(|| panic!("{id}: no {name}"));
            let d = max_diff(got, &theirs[name]);
            assert!(d < tol, "{id}: {name} {d} > {tol}");
        }
        // The LoRA made a difference the comparison can see (well above the tolerance).
        let base = max_diff(&ours["unet_out_0"], &theirs["base_unet_out_0"]);
        assert!(base > 1e-2, "{id}: LoRA changed unet_out_0 by only {base}");
        replayed += 1;
    }
    assert_eq!(replayed, 3, "{family}");
}

#[test]
fn lora_cases_match_diffusers() {
    replay_family("lora_sd1", false);
}

/// SDXL: UNet modules named as SGM (`input_blocks_4_1_...`, `label_emb_0_0`) or as
/// diffusers, both text encoders (`lora_te1_`, `lora_te2_`).
#[test]
fn sdxl_lora_cases_match_diffusers() {
    replay_family("lora_sdxl", true);
}
