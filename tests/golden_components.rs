//! Each model component alone against the golden intermediates of every public case: text
//! encoder (ids and embeddings), one UNet call, one VAE decode, one VAE encode. Golden
//! tensors are used only as inputs to one component and as the reference to compare with.

mod fixture_common;

use fixture_common::max_diff;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use runai::cli::replay::load_case;
use runai::pipeline::{RuntimeOptions, StableDiffusion};

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.json")
}

fn case_ids() -> Vec<String> {
    let doc = runai::cli::replay::read_json(&manifest()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn init_of(case: &runai::cli::replay::GoldenCase) -> Option<image::RgbImage> {
    match &case.params.task {
        runai::pipeline::params::Task::Img2Img { init, .. }
        | runai::pipeline::params::Task::Inpaint { init, .. } => Some(init.clone()),
        runai::pipeline::params::Task::Txt2Img => None,
    }
}

#[test]
fn components_match_golden_intermediates() {
    let opts = RuntimeOptions::default();
    let mut models: HashMap<PathBuf, StableDiffusion> = HashMap::new();
    let mut worst = [0f32; 4];
    for id in case_ids() {
        let case = load_case(&manifest(), &id).unwrap();
        let model = models
            .entry(case.model_dir.clone())
            .or_insert_with(|| StableDiffusion::load_folder(&case.model_dir, &opts).unwrap());
        let g = candle_core::safetensors::load(&case.tensors_path, &Device::Cpu).unwrap();

        // Tokenizer + text encoder.
        let cond_ids = model.prompt_ids(&case.params.prompt).unwrap();
        assert_eq!(cond_ids, ids(&g["cond_input_ids"]), "{id}: cond ids");
        let uncond_ids = model.prompt_ids(&case.params.negative_prompt).unwrap();
        assert_eq!(uncond_ids, ids(&g["uncond_input_ids"]), "{id}: uncond ids");
        let pe = model.encode_ids(&cond_ids, case.params.clip_skip).unwrap();
        let d_text = max_diff(&pe, &g["prompt_embeds"]);

        // One UNet call on the golden input.
        let ctx = Tensor::cat(&[&g["negative_prompt_embeds"], &g["prompt_embeds"]], 0).unwrap();
        let t = g["unet_t_0"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0] as f64;
        let out = model.unet_forward(&g["unet_in_0"], t, &ctx).unwrap();
        let d_unet = max_diff(&out, &g["unet_out_0"]);

        // One VAE decode on the golden input.
        let dec = model.vae_decode(&g["vae_decode_in"]).unwrap();
        let d_vae = max_diff(&dec, &g["vae_decode_out"]);

        // VAE posterior on the golden encoder input, where the case has one.
        let d_enc = match (g.get("vae_encode_in_0"), g.get("vae_posterior_mean_0")) {
            (Some(x), Some(mean)) => {
                let (m, s) = model.vae_posterior(x).unwrap();
                max_diff(&m, mean).max(max_diff(&s, &g["vae_posterior_std_0"]))
            }
            _ => 0.0,
        };
        // 8-bit conversion of the reference float image reproduces the reference PNG.
        let png = image::open(case.tensors_path.with_extension("png"))
            .unwrap()
            .to_rgb8();
        let ours = runai::pipeline::images::unit_to_rgb(&g["image"]).unwrap();
        assert_eq!(ours[0].as_raw(), png.as_raw(), "{id}: 8-bit conversion");
        // Pixel preprocessing of the init image reproduces the reference tensor.
        if let (Some(t), Some(init)) = (g.get("init_image_tensor"), init_of(&case)) {
            let ours = runai::pipeline::images::rgb_to_tensor(&init, &Device::Cpu).unwrap();
            assert_eq!(max_diff(&ours, t), 0.0, "{id}: init image tensor");
        }
        if let Some(mc) = g.get("mask_condition") {
            if let runai::pipeline::params::Task::Inpaint { mask: Some(m), .. } = &case.params.task
            {
                let bin = runai::pipeline::images::binarize_mask(m);
                let ours = Tensor::from_vec(bin, mc.dims(), &Device::Cpu).unwrap();
                assert_eq!(max_diff(&ours, mc), 0.0, "{id}: mask condition");
            }
        }
        println!(
            "{id}: prompt_embeds {d_text:.3e} unet_out_0 {d_unet:.3e} vae_decode_out {d_vae:.3e} vae_posterior {d_enc:.3e}"
        );
        for (w, d) in worst.iter_mut().zip([d_text, d_unet, d_vae, d_enc]) {
            *w = w.max(d);
        }
    }
    println!("worst: {worst:?}");
    assert!(worst[0] <= 1e-4, "prompt_embeds {}", worst[0]);
    assert!(worst[1] <= 5e-4, "unet_out_0 {}", worst[1]);
    assert!(worst[2] <= 2e-3, "vae_decode_out {}", worst[2]);
    assert!(worst[3] <= 1e-3, "vae posterior {}", worst[3]);
}
