//! Writes a diffusers folder from a single-file checkpoint, on explicit request only (the
//! legacy `convert` action and `runai convert SRC DST`). This is the only code in runai that
//! writes to disk: it creates a new folder, never overwrites an existing path, never touches
//! the source, and removes its own partial output if it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::guard::contained;
use super::model::{ModelKind, ModelVersion};
use super::single_file::{Component, SingleFile, SingleFileError};
use super::tokenizer::single_file_tokenizer;

/// Errors name files by their last component only (the caller knows where it asked to write).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("destination {0} already exists; refusing to overwrite it")]
    DestinationExists(String),
    #[error(transparent)]
    Source(#[from] SingleFileError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{0}")]
    Internal(&'static str),
}

fn last_component(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the legacy `convert` action puts the folder: beside the file, named after it
/// (`v1/model.ckpt` -> `v1/model/`).
pub fn default_destination(src: &Path) -> PathBuf {
    src.with_extension("")
}

fn write_err(path: &Path, reason: impl ToString) -> ConvertError {
    ConvertError::Write {
        path: last_component(path),
        reason: reason.to_string(),
    }
}

fn write_json(path: &Path, value: &Value) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| write_err(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| write_err(path, e))
}

fn write_component(
    sf: &SingleFile,
    component: Component,
    dir: &Path,
    file: &str,
    config: (&str, &Value),
) -> Result<(), ConvertError> {
    std::fs::create_dir(dir).map_err(|e| write_err(dir, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in sf.mapping(component).keys() {
        tensors.insert(name.clone(), sf.load(component, name, &Device::Cpu)?);
    }
    let path = dir.join(file);
    candle_core::safetensors::save(&tensors, &path).map_err(|e| write_err(&path, e))?;
    write_json(&dir.join(config.0), config.1)
}

fn write_folder(sf: &SingleFile, dst: &Path) -> Result<(), ConvertError> {
    write_component(
        sf,
        Component::Unet,
        &dst.join("unet"),
        "diffusion_pytorch_model.safetensors",
        ("config.json", &sf.configs.unet),
    )?;
    write_component(
        sf,
        Component::Vae,
        &dst.join("vae"),
        "diffusion_pytorch_model.safetensors",
        ("config.json", &sf.configs.vae),
    )?;
    write_component(
        sf,
        Component::TextEncoder,
        &dst.join("text_encoder"),
        "model.safetensors",
        ("config.json", &sf.configs.text_encoder),
    )?;
    let scheduler_dir = dst.join("scheduler");
    std::fs::create_dir(&scheduler_dir).map_err(|e| write_err(&scheduler_dir, e))?;
    write_json(
        &scheduler_dir.join("scheduler_config.json"),
        &sf.configs.scheduler,
    )?;

    let (tokenizer, pad_id) =
        single_file_tokenizer(&sf.path, sf.identity.version).map_err(SingleFileError::from)?;
    write_tokenizer(&dst.join("tokenizer"), &tokenizer, pad_id)?;
    let xl = sf.identity.version == ModelVersion::Xl;
    if let Some(config) = &sf.configs.text_encoder_2 {
        write_component(
            sf,
            Component::TextEncoder2,
            &dst.join("text_encoder_2"),
            "model.safetensors",
            ("config.json", config),
        )?;
        // SDXL's second tokenizer pads with `!` like SD2's.
        let (tokenizer, pad_id) =
            single_file_tokenizer(&sf.path, ModelVersion::V2).map_err(SingleFileError::from)?;
        write_tokenizer(&dst.join("tokenizer_2"), &tokenizer, pad_id)?;
    }

    let pipeline = match (sf.identity.kind, xl) {
        (ModelKind::Txt2Img, false) => "StableDiffusionPipeline",
        (ModelKind::Inpaint, false) => "StableDiffusionInpaintPipeline",
        (ModelKind::Txt2Img, true) => "StableDiffusionXLPipeline",
        (ModelKind::Inpaint, true) => "StableDiffusionXLInpaintPipeline",
    };
    let scheduler_class = sf
        .configs
        .scheduler
        .get("_class_name")
        .cloned()
        .unwrap_or(json!("PNDMScheduler"));
    let mut index = json!({
        "_class_name": pipeline,
        "_diffusers_version": "0.42.1",
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    if xl {
        index["text_encoder_2"] = json!(["transformers", "CLIPTextModelWithProjection"]);
        index["tokenizer_2"] = json!(["transformers", "CLIPTokenizer"]);
        index["force_zeros_for_empty_prompt"] = json!(true);
    }
    write_json(&dst.join("model_index.json"), &index)
}

/// A tokenizer folder as transformers writes it for CLIPTokenizer (`tokenizer.json`, the
/// special tokens with the model's pad token, `tokenizer_config.json`).
fn write_tokenizer(
    dir: &Path,
    tokenizer: &tokenizers::Tokenizer,
    pad_id: u32,
) -> Result<(), ConvertError> {
    std::fs::create_dir(dir).map_err(|e| write_err(dir, e))?;
    let tokenizer_path = dir.join("tokenizer.json");
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| write_err(&tokenizer_path, e))?;
    let pad = tokenizer
        .id_to_token(pad_id)
        .unwrap_or_else(|| "<|endoftext|>".to_string());
    let special = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad,
        "unk_token": "<|endoftext|>",
    });
    write_json(&dir.join("special_tokens_map.json"), &special)?;
    let mut tokenizer_config = special;
    if let Some(obj) = tokenizer_config.as_object_mut() {
        obj.insert("model_max_length".into(), json!(77));
        obj.insert("tokenizer_class".into(), json!("CLIPTokenizer"));
        obj.insert("do_lower_case".into(), json!(true));
    }
    write_json(&dir.join("tokenizer_config.json"), &tokenizer_config)
}

/// What was converted, for the caller's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    pub(crate) destination: PathBuf,
    pub version: ModelVersion,
    pub kind: ModelKind,
}

/// Converts `src` (`.safetensors` or zip `.ckpt`) into a new diffusers folder `dst`.
pub fn convert_single_file(src: &Path, dst: &Path) -> Result<ConvertReport, ConvertError> {
    if dst.exists() || dst.symlink_metadata().is_ok() {
        return Err(ConvertError::DestinationExists(last_component(dst)));
    }
    // A panic while reading the source is contained: an error, never a crash (exit 101).
    let sf = contained("opening a model to convert", || SingleFile::open(src))
        .map_err(ConvertError::Internal)??;
    std::fs::create_dir(dst).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ConvertError::DestinationExists(last_component(dst)),
        _ => write_err(dst, e),
    })?;
    let written = contained("converting a model", || write_folder(&sf, dst))
        .unwrap_or_else(|failure| Err(ConvertError::Internal(failure)));
    if let Err(e) = written {
        // Only the folder created above is removed; it holds nothing but our partial output.
        if let Err(rm) = std::fs::remove_dir_all(dst) {
            log::warn!("cannot remove partial output {}: {rm}", dst.display());
        }
        return Err(e);
    }
    log::info!("converted {} into {}", src.display(), dst.display());
    Ok(ConvertReport {
        destination: dst.to_path_buf(),
        version: sf.identity.version,
        kind: sf.identity.kind,
    })
}
