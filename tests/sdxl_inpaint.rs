//! A 9-channel SDXL inpainting checkpoint in Stability's SGM layout, written here from the
//! tiny SDXL folder (its UNet's `conv_in` widened to latents + mask + masked-image latents,
//! the rest renamed back through the registry's own key map, OpenCLIP attention re-fused and
//! `text_projection` transposed back): identified as an SDXL inpainting model, refused for
//! txt2img, served for inpaint, and converted to a folder that paints the same image.

mod fixture_common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fixture_common::fixtures;
use runai::pipeline::params::{GenerateParams, SchedulerKind, Task};
use runai::pipeline::{RuntimeOptions, StableDiffusion};
use runai::registry::convert::convert_single_file;
use runai::registry::identify::identify_diffusers;
use runai::registry::ldm_keys::Transform;
use runai::registry::loader::load_model_parts;
use runai::registry::model::{ModelKind, ModelVersion};
use runai::registry::single_file::{Component, SingleFile};

fn ext() -> PathBuf {
    fixtures().join("ext")
}

/// `[32, 4, 3, 3]` -> `[32, 9, 3, 3]`: the five new input channels get small fixed weights.
fn widen_conv_in(t: &Tensor) -> Tensor {
    let (o, _, kh, kw) = t.dims4().unwrap();
    let n = o * 5 * kh * kw;
    let extra: Vec<f32> = (0..n).map(|i| 0.05 * ((i as f32) * 0.37).sin()).collect();
    let extra = Tensor::from_vec(extra, (o, 5, kh, kw), &Device::Cpu).unwrap();
    Tensor::cat(&[t, &extra], 1).unwrap()
}

fn write_sgm_inpaint(dst: &Path) {
    let template = SingleFile::open(&ext().join("single_file/tiny-sdxl.safetensors")).unwrap();
    let folder = ext().join("models/tiny-sdxl");
    let mut out: HashMap<String, Tensor> = HashMap::new();
    // Fused OpenCLIP projections: (source, start) -> rows, concatenated in order at the end.
    let mut fused: BTreeMap<String, BTreeMap<usize, Tensor>> = BTreeMap::new();
    for (component, file) in [
        (Component::Unet, "unet/diffusion_pytorch_model.safetensors"),
        (Component::Vae, "vae/diffusion_pytorch_model.safetensors"),
        (Component::TextEncoder, "text_encoder/model.safetensors"),
        (Component::TextEncoder2, "text_encoder_2/model.safetensors"),
    ] {
        let tensors = candle_core::safetensors::load(folder.join(file), &Device::Cpu).unwrap();
        let map = template.mapping(component);
        for (name, t) in tensors {
            let Some(m) = map.get(&name) else {
                assert!(name.ends_with("position_ids"), "{file}: {name} unmapped");
                continue;
            };
            let t = if name == "conv_in.weight" {
                widen_conv_in(&t)
            } else {
                t
            };
            let t = match m.transform {
                Transform::Identity => t,
                Transform::Conv1x1ToLinear => {
                    let (o, i) = t.dims2().unwrap();
                    t.reshape((o, i, 1, 1)).unwrap()
                }
                Transform::Transpose => t.t().unwrap().contiguous().unwrap(),
                Transform::Rows { start, .. } => {
                    fused.entry(m.source.clone()).or_default().insert(start, t);
                    continue;
                }
            };
            out.insert(m.source.clone(), t);
        }
    }
    for (source, parts) in fused {
        let parts: Vec<Tensor> = parts.into_values().collect();
        out.insert(source, Tensor::cat(&parts, 0).unwrap());
    }
    let out: HashMap<String, Tensor> = out
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&out, dst).unwrap();
    std::fs::copy(
        ext().join("single_file/tiny-sdxl.yaml"),
        dst.with_extension("yaml"),
    )
    .unwrap();
}

fn params(task: Task) -> GenerateParams {
    GenerateParams {
        task,
        prompt: "a wooden bench".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance_scale: 5.0,
        seed: 11,
        width: Some(64),
        height: Some(64),
        n_samples: 1,
        scheduler: SchedulerKind::Euler,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    }
}

#[test]
fn sgm_inpaint_checkpoint_is_identified_refused_for_txt2img_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xl-inpaint.safetensors");
    write_sgm_inpaint(&file);
    let sf = SingleFile::open(&file).unwrap();
    assert_eq!(
        (sf.identity.version, sf.identity.kind),
        (ModelVersion::Xl, ModelKind::Inpaint)
    );
    assert_eq!(sf.configs.unet["in_channels"], 9);

    let opts = RuntimeOptions::default();
    let sd = StableDiffusion::from_parts(load_model_parts(&file, &opts).unwrap(), &opts).unwrap();
    let err = sd
        .generate(&params(Task::Txt2Img), &mut |_, _| true)
        .unwrap_err();
    assert!(err.to_string().contains("inpainting model"), "{err}");

    let init = image::open(fixtures().join("inputs/init_64x64.png"))
        .unwrap()
        .to_rgb8();
    let mask = image::open(fixtures().join("inputs/mask_64x64.png"))
        .unwrap()
        .to_luma8();
    let inpaint = params(Task::Inpaint {
        init,
        mask: Some(mask),
        strength: 1.0,
    });
    let from_file = sd.generate(&inpaint, &mut |_, _| true).unwrap();
    assert_eq!(from_file[0].image.dimensions(), (64, 64));

    // The converted folder: identified the same way, and the same image.
    let folder = dir.path().join("xl-inpaint");
    let report = convert_single_file(&file, &folder).unwrap();
    assert_eq!(
        (report.version, report.kind),
        (ModelVersion::Xl, ModelKind::Inpaint)
    );
    let id = identify_diffusers(&folder).unwrap();
    assert_eq!(
        (id.version, id.kind),
        (ModelVersion::Xl, ModelKind::Inpaint)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("model_index.json")).unwrap()).unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionXLInpaintPipeline");
    let from_folder = StableDiffusion::load_folder(&folder, &opts)
        .unwrap()
        .generate(&inpaint, &mut |_, _| true)
        .unwrap();
    assert!(
        from_file[0].image == from_folder[0].image,
        "file and folder differ"
    );
}
