//! A 9-channel inpainting checkpoint in LDM layout (no such fixture ships, so the test writes
//! one: the tiny-inpaint folder's weights under the LDM names the SD1 fixture uses) is
//! identified as `inpaint`, converts back to exactly the folder's tensors, and inpaints the
//! same image as the folder.

mod fixture_common;

use fixture_common::fixtures;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use runai::engine::sd::SdGenerator;
use runai::engine::{GenerateJob, Generator};
use runai::pipeline::params::{GenerateParams, SchedulerKind, Task};
use runai::pipeline::RuntimeOptions;
use runai::registry::ldm_keys::Transform;
use runai::registry::model::{ModelFormat, ModelKind, ModelVersion};
use runai::registry::single_file::{Component, SingleFile};
use runai::registry::Registry;

/// Writes the inpaint folder's weights under LDM names, using the SD1 fixture's key map
/// backwards (diffusers name -> LDM name), plus the SD1 file's DDPM buffers.
fn write_ldm_inpaint(dst: &Path) {
    let template = SingleFile::open(&fixtures().join("single_file/tiny-sd1.safetensors")).unwrap();
    let folder = fixtures().join("models/tiny-inpaint");
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (component, file) in [
        (Component::Unet, "unet/diffusion_pytorch_model.safetensors"),
        (Component::Vae, "vae/diffusion_pytorch_model.safetensors"),
        (Component::TextEncoder, "text_encoder/model.safetensors"),
    ] {
        let tensors = candle_core::safetensors::load(folder.join(file), &Device::Cpu).unwrap();
        let map = template.mapping(component);
        assert_eq!(map.len(), tensors.len(), "{file}");
        for (name, t) in tensors {
            let m = &map[&name];
            let t = match m.transform {
                Transform::Identity => t,
                Transform::Conv1x1ToLinear => {
                    let (o, i) = t.dims2().unwrap();
                    t.reshape((o, i, 1, 1)).unwrap()
                }
                Transform::Rows { .. } | Transform::Transpose => {
                    panic!("no fused or transposed tensors in SD1")
                }
            };
            out.insert(m.source.clone(), t);
        }
    }
    out.insert(
        "betas".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&out, dst).unwrap();
}

#[test]
fn ldm_inpaint_checkpoint_is_identified_converted_and_served() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("v1/sd-inpaint.safetensors");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    write_ldm_inpaint(&file);
    // As AUTOMATIC1111 users do: the yaml beside the file carries what shapes cannot tell
    // (here the tiny models' head counts).
    let yaml = std::fs::read_to_string(fixtures().join("single_file/tiny-sd1.yaml"))
        .unwrap()
        .replace("        in_channels: 4\n", "        in_channels: 9\n");
    assert!(yaml.contains("in_channels: 9"));
    std::fs::write(root.path().join("v1/sd-inpaint.yaml"), yaml).unwrap();
    std::os::unix::fs::symlink(
        fixtures().join("models/tiny-inpaint"),
        root.path().join("runwayml-inpainting"),
    )
    .unwrap();

    let sf = SingleFile::open(&file).unwrap();
    assert_eq!(sf.identity.kind, ModelKind::Inpaint);
    assert_eq!(sf.identity.version, ModelVersion::V1);
    assert_eq!(sf.configs.unet["in_channels"], 9);
    let folder = fixtures().join("models/tiny-inpaint");
    for (component, f) in [
        (Component::Unet, "unet/diffusion_pytorch_model.safetensors"),
        (Component::Vae, "vae/diffusion_pytorch_model.safetensors"),
    ] {
        for (name, want) in candle_core::safetensors::load(folder.join(f), &Device::Cpu).unwrap() {
            let got = sf.load(component, &name, &Device::Cpu).unwrap();
            let same = got
                .eq(&want)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .min(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 1.0, "{name}");
        }
    }

    let mut reg = Registry::new(&[root.path()]);
    let single = reg.resolve("v1/sd-inpaint.safetensors").unwrap();
    assert_eq!(
        (single.kind, single.format),
        (ModelKind::Inpaint, ModelFormat::Safetensors)
    );
    let reference = reg.resolve("runwayml-inpainting").unwrap();
    let init = image::open(fixtures().join("inputs/init_64x64.png"))
        .unwrap()
        .to_rgb8();
    let mask = image::open(fixtures().join("inputs/mask_64x64.png"))
        .unwrap()
        .to_luma8();
    let params = GenerateParams {
        task: Task::Inpaint {
            init,
            mask: Some(mask),
            strength: 1.0,
        },
        prompt: "a cat".into(),
        negative_prompt: String::new(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 11,
        width: Some(64),
        height: Some(64),
        n_samples: 1,
        scheduler: SchedulerKind::Euler,
        eta: 0.0,
        clip_skip: None,
        timestep_spacing: None,
        xl: Default::default(),
    };
    let mut g = SdGenerator::new(RuntimeOptions::default(), 2, u64::MAX);
    let mut image = |model| {
        let job = GenerateJob {
            model,
            params: params.clone(),
            nsfw_filter: None,
        };
        g.generate(&job, &mut |_, _| true).unwrap()[0].image.clone()
    };
    assert!(image(single) == image(reference), "inpaint images differ");
}
