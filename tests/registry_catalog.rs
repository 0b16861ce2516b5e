//! The registry over temporary roots built from the fixtures, in the seed's layout
//! (`runwayml/...`, `stabilityai/...`, `v1/`, `v2/`) and in AUTOMATIC1111's flat
//! `models/Stable-diffusion`: listing, identification from weights (not paths), unsupported
//! architectures, unreadable files, path confinement, and models dropped in without a restart.

mod fixture_common;

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::Path;

use candle_core::{Device, Tensor};
use fixture_common::{fixtures, link, seed_root};
use runai::registry::model::{ModelFormat, ModelKind, ModelVersion, Prediction, ResolvedModel};
use runai::registry::{Registry, ResolveError};

fn copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
}

fn by_name(models: &[ResolvedModel]) -> HashMap<String, ResolvedModel> {
    models.iter().map(|m| (m.name.clone(), m.clone())).collect()
}

fn expect(
    m: &ResolvedModel,
    version: ModelVersion,
    kind: ModelKind,
    format: ModelFormat,
    prediction: Prediction,
) {
    assert_eq!(
        (m.version, m.kind, m.format, m.prediction),
        (version, kind, format, prediction),
        "{}",
        m.name
    );
}

#[test]
fn seed_layout_is_listed_and_identified() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let models = reg.list();
    let m = by_name(&models);
    assert_eq!(models.len(), 7, "{:?}", m.keys());
    use ModelFormat::*;
    use ModelKind::*;
    use ModelVersion::*;
    use Prediction::*;
    expect(
        &m["runwayml/stable-diffusion-v1-5"],
        V1,
        Txt2Img,
        Diffusers,
        Epsilon,
    );
    expect(
        &m["runwayml/stable-diffusion-inpainting"],
        V1,
        Inpaint,
        Diffusers,
        Epsilon,
    );
    expect(
        &m["stabilityai/stable-diffusion-2-1-base"],
        V2,
        Txt2Img,
        Diffusers,
        VPrediction,
    );
    expect(
        &m["v1/tiny-sd1.safetensors"],
        V1,
        Txt2Img,
        Safetensors,
        Epsilon,
    );
    expect(&m["v1/tiny-sd1.ckpt"], V1, Txt2Img, Ckpt, Epsilon);
    expect(&m["v2/tiny-sd2.ckpt"], V2, Txt2Img, Ckpt, VPrediction);
    expect(
        &m["v2/tiny-sd2.safetensors"],
        V2,
        Txt2Img,
        Safetensors,
        VPrediction,
    );
    // The path is canonical (links resolved): the cache key.
    let sd1 = &m["v1/tiny-sd1.safetensors"];
    assert_eq!(
        sd1.path,
        std::fs::canonicalize(fixtures().join("single_file/tiny-sd1.safetensors")).unwrap()
    );
    // The listing's wire names.
    let json = serde_json::to_value(sd1).unwrap();
    assert_eq!(json["version"], "v1");
    assert_eq!(json["kind"], "txt2img");
    assert_eq!(json["format"], "safetensors");
    assert_eq!(json["name"], "v1/tiny-sd1.safetensors");
}

#[test]
fn automatic1111_flat_folder_identifies_from_weights_not_names() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("models/Stable-diffusion");
    let f = fixtures().join("single_file");
    // Misleading names: identification must come from the weights.
    copy(
        &f.join("tiny-sd2.safetensors"),
        &sd.join("v1-5-pruned.safetensors"),
    );
    copy(&f.join("tiny-sd2.yaml"), &sd.join("v1-5-pruned.yaml"));
    copy(&f.join("tiny-sd1.ckpt"), &sd.join("sd-v2-1.ckpt"));
    // An SD2 file without its yaml: the documented default is epsilon.
    copy(&f.join("tiny-sd2.ckpt"), &sd.join("no-yaml.ckpt"));
    let mut reg = Registry::new(&[&sd]);
    let m = by_name(&reg.list());
    assert_eq!(m.len(), 3);
    use ModelFormat::*;
    use ModelKind::*;
    use ModelVersion::*;
    use Prediction::*;
    expect(
        &m["v1-5-pruned.safetensors"],
        V2,
        Txt2Img,
        Safetensors,
        VPrediction,
    );
    expect(&m["sd-v2-1.ckpt"], V1, Txt2Img, Ckpt, Epsilon);
    expect(&m["no-yaml.ckpt"], V2, Txt2Img, Ckpt, Epsilon);
    // Names are relative to the root; absolute paths under it resolve too.
    let abs = sd.join("sd-v2-1.ckpt");
    assert_eq!(
        reg.resolve(abs.to_str().unwrap()).unwrap().name,
        "sd-v2-1.ckpt"
    );
    assert_eq!(reg.resolve("sd-v2-1.ckpt").unwrap().version, V1);
}

fn write_safetensors(path: &Path, names: &[(&str, &[usize])]) {
    let tensors: HashMap<String, Tensor> = names
        .iter()
        .map(|(n, shape)| {
            (
                n.to_string(),
                Tensor::zeros(*shape, candle_core::DType::F16, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn unsupported_and_broken_models_are_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write_safetensors(
        &r.join("sdxl-refiner.safetensors"),
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[8, 4, 3, 3],
            ),
            ("model.diffusion_model.label_emb.0.0.weight", &[8, 16]),
            ("conditioner.embedders.0.model.ln_final.weight", &[8]),
        ],
    );
    write_safetensors(
        &r.join("lora.safetensors"),
        &[(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
            &[4, 8],
        )],
    );
    write_safetensors(
        &r.join("pix2pix.safetensors"),
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[8, 8, 3, 3],
            ),
            (
                "cond_stage_model.transformer.text_model.final_layer_norm.weight",
                &[8],
            ),
        ],
    );
    // A protocol-2 pickle, as torch.save wrote before the zip format: refused, never parsed.
    std::fs::write(
        r.join("old.ckpt"),
        b"\x80\x02}q\x00(X\x0a\x00\x00\x00state_dict",
    )
    .unwrap();
    std::fs::write(
        r.join("garbage.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffjunk",
    )
    .unwrap();
    std::fs::write(r.join("empty.ckpt"), b"").unwrap();
    let mut reg = Registry::new(&[r]);
    assert!(reg.list().is_empty());
    let report = reg.rescan();
    assert_eq!(
        (report.served, report.unsupported, report.unreadable),
        (0, 4, 2)
    );
    match reg.resolve("sdxl-refiner.safetensors") {
        Err(ResolveError::Unsupported { arch, .. }) => {
            assert!(arch.contains("SDXL refiner"), "{arch}")
        }
        other => panic!("{other:?}"),
    }
    match reg.resolve("old.ckpt") {
        Err(ResolveError::Unsupported { arch, .. }) => assert!(arch.contains("non-zip"), "{arch}"),
        other => panic!("{other:?}"),
    }
    match reg.resolve("pix2pix.safetensors") {
        Err(ResolveError::Unsupported { arch, .. }) => assert!(arch.contains("8 input"), "{arch}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.resolve("lora.safetensors"),
        Err(ResolveError::Unsupported { .. })
    ));
    assert!(matches!(
        reg.resolve("garbage.safetensors"),
        Err(ResolveError::Io { .. })
    ));
    assert!(matches!(
        reg.resolve("empty.ckpt"),
        Err(ResolveError::Io { .. })
    ));
}

#[test]
fn sdxl_refiner_folder_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("sdxl-refiner");
    for c in ["unet", "vae", "text_encoder_2"] {
        std::fs::create_dir_all(m.join(c)).unwrap();
    }
    std::fs::write(
        m.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [null, null], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}"#,
    )
    .unwrap();
    let mut reg = Registry::new(&[dir.path()]);
    assert!(reg.list().is_empty());
    assert!(matches!(
        reg.resolve("sdxl-refiner"),
        Err(ResolveError::Unsupported { arch, .. }) if arch.contains("SDXL refiner")
    ));
}

/// SDXL base models are served and listed as `sdxl`, from the folder and the single file.
#[test]
fn sdxl_folder_and_single_file_are_listed_as_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    let ext = fixtures().join("ext");
    link(
        &ext.join("models/tiny-sdxl"),
        &dir.path().join("xl/tiny-sdxl"),
    );
    for e in ["safetensors", "yaml"] {
        link(
            &ext.join(format!("single_file/tiny-sdxl.{e}")),
            &dir.path().join(format!("xl/tiny-sdxl.{e}")),
        );
    }
    let mut reg = Registry::new(&[dir.path()]);
    reg.rescan();
    let mut listed: Vec<_> = reg
        .list()
        .iter()
        .map(|m| (m.name.clone(), m.version, m.format, m.prediction))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        listed,
        vec![
            (
                "xl/tiny-sdxl".to_string(),
                ModelVersion::Xl,
                ModelFormat::Diffusers,
                Prediction::Epsilon
            ),
            (
                "xl/tiny-sdxl.safetensors".to_string(),
                ModelVersion::Xl,
                ModelFormat::Safetensors,
                Prediction::Epsilon
            ),
        ]
    );
}

#[test]
fn every_escape_attempt_is_forbidden() {
    let root = seed_root();
    let outside = tempfile::tempdir().unwrap();
    copy(
        &fixtures().join("single_file/tiny-sd1.safetensors"),
        &outside.path().join("secret.safetensors"),
    );
    let mut reg = Registry::new(&[root.path()]);
    let r = root.path().to_str().unwrap();
    let o = outside.path().join("secret.safetensors");
    let attempts = [
        o.to_str().unwrap().to_string(),
        "/etc/passwd".to_string(),
        "../secret.safetensors".to_string(),
        "v1/../../secret.safetensors".to_string(),
        format!("{r}/../secret.safetensors"),
        format!("{r}/v1/../../../etc/passwd"),
        format!("{r}x/v1/tiny-sd1.safetensors"),
        "v1/../v1/tiny-sd1.safetensors".to_string(),
        String::new(),
        "/".to_string(),
        r.to_string(),
    ];
    for a in &attempts {
        assert!(
            matches!(reg.resolve(a), Err(ResolveError::Forbidden(_))),
            "{a:?} was not forbidden"
        );
    }
    // Allowed forms for comparison: relative, absolute under the root, `./`.
    for ok in [
        "v1/tiny-sd1.safetensors".to_string(),
        format!("{r}/v1/tiny-sd1.safetensors"),
        "./v1/./tiny-sd1.safetensors".to_string(),
        "runwayml/stable-diffusion-v1-5/".to_string(),
    ] {
        assert!(reg.resolve(&ok).is_ok(), "{ok:?} refused");
    }
    assert!(matches!(
        reg.resolve("v1/nope.ckpt"),
        Err(ResolveError::NotFound(_))
    ));
    assert!(matches!(reg.resolve("v1"), Err(ResolveError::NotFound(_))));
}

#[test]
fn links_placed_inside_a_root_are_trusted() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("shared-models");
    copy(
        &fixtures().join("single_file/tiny-sd1.safetensors"),
        &target.join("a.safetensors"),
    );
    symlink(&target, root.path().join("shared")).unwrap();
    let mut reg = Registry::new(&[root.path()]);
    let m = reg.resolve("shared/a.safetensors").unwrap();
    assert_eq!(
        m.path,
        std::fs::canonicalize(target.join("a.safetensors")).unwrap()
    );
    assert_eq!(reg.list().len(), 1);
}

#[test]
fn a_model_dropped_in_is_found_without_restart_and_removed_ones_vanish() {
    let root = tempfile::tempdir().unwrap();
    let mut reg = Registry::new(&[root.path()]);
    assert!(reg.list().is_empty());
    assert!(matches!(
        reg.resolve("v2/new.safetensors"),
        Err(ResolveError::NotFound(_))
    ));
    let f = fixtures().join("single_file");
    copy(
        &f.join("tiny-sd2.safetensors"),
        &root.path().join("v2/new.safetensors"),
    );
    copy(&f.join("tiny-sd2.yaml"), &root.path().join("v2/new.yaml"));
    let m = reg.resolve("v2/new.safetensors").unwrap();
    assert_eq!(
        (m.version, m.prediction),
        (ModelVersion::V2, Prediction::VPrediction)
    );
    assert_eq!(reg.list().len(), 1);
    std::fs::remove_file(root.path().join("v2/new.safetensors")).unwrap();
    assert!(reg.list().is_empty());
    assert!(matches!(
        reg.resolve("v2/new.safetensors"),
        Err(ResolveError::NotFound(_))
    ));
}

#[test]
fn several_roots_resolve_in_order_and_list_each_model_once() {
    let a = seed_root();
    let b = tempfile::tempdir().unwrap();
    copy(
        &fixtures().join("single_file/tiny-sd1.ckpt"),
        &b.path().join("v1/only-in-b.ckpt"),
    );
    // The same file under both roots (through a link): listed once.
    link(
        &fixtures().join("single_file/tiny-sd1.safetensors"),
        &b.path().join("v1/tiny-sd1.safetensors"),
    );
    let mut reg = Registry::new(&[a.path(), b.path()]);
    let models = reg.list();
    assert_eq!(models.len(), 8, "{:?}", by_name(&models).keys());
    assert_eq!(
        reg.resolve("v1/only-in-b.ckpt").unwrap().format,
        ModelFormat::Ckpt
    );
    let abs = b.path().join("v1/only-in-b.ckpt");
    assert!(reg.resolve(abs.to_str().unwrap()).is_ok());
}

#[test]
fn convert_paths_stay_inside_the_root() {
    let root = seed_root();
    let mut reg = Registry::new(&[root.path()]);
    let (src, dst) = reg.convert_paths("v1/tiny-sd1.ckpt").unwrap();
    assert_eq!(src, root.path().join("v1/tiny-sd1.ckpt"));
    assert_eq!(dst, root.path().join("v1/tiny-sd1"));
    assert!(matches!(
        reg.convert_paths("runwayml/stable-diffusion-v1-5"),
        Err(ResolveError::Unsupported { .. })
    ));
    assert!(matches!(
        reg.convert_paths("../v1/tiny-sd1.ckpt"),
        Err(ResolveError::Forbidden(_))
    ));
    assert!(matches!(
        reg.convert_paths("v1/missing.ckpt"),
        Err(ResolveError::NotFound(_))
    ));
}
