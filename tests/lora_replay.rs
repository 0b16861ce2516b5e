//! LoRA cases of the extension fixtures (`lora_sd1` on tiny-sd1: kohya files with attention,
//! feed-forward and 1x1/3x3 convolution modules, alpha != rank, multipliers 1.0 and 0.6, two
//! LoRAs at once) replayed with `runai replay` against diffusers' own LoRA loader.

mod fixture_common;

use candle_core::Device;
use fixture_common::{fixtures, max_diff};
use runai::cli::replay::{read_json, run, ReplayArgs};

#[test]
fn lora_cases_match_diffusers() {
    let manifest = fixtures().join("ext/manifest.json");
    let doc = read_json(&manifest).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut replayed = 0;
    for case in doc["cases"].as_array().unwrap() {
        if case["family"] != "lora_sd1" {
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
        for (name, tol) in [
            ("prompt_embeds", 1e-4),
            ("negative_prompt_embeds", 1e-4),
            ("unet_out_0", 5e-4),
            ("final_latents", 5e-3),
            ("image", 2e-3),
        ] {
            let d = max_diff(&ours[name], &theirs[name]);
            assert!(d < tol, "{id}: {name} {d} > {tol}");
        }
        // The LoRA made a difference the comparison can see (well above the tolerance).
        let base = max_diff(&ours["unet_out_0"], &theirs["base_unet_out_0"]);
        assert!(base > 1e-2, "{id}: LoRA changed unet_out_0 by only {base}");
        replayed += 1;
    }
    assert_eq!(replayed, 3);
}
