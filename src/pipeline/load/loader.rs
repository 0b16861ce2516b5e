//! Loads a diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! `scheduler/`) into the neutral [`ModelParts`]: JSON configs as written, tokenizer, and lazily
//! read weights (`*.safetensors`, `*.fp16.safetensors`, or `*.bin`). Never builds modules.

use std::path::{Path, PathBuf};

use candle_core::DType;
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::model_parts::{ModelParts, XlParts};
use crate::pipeline::load::pickle::Checkpoint;
use crate::pipeline::load::tokenizer::load_tokenizer_dir;
use crate::pipeline::load::weights::SafetensorsFiles;
use crate::pipeline::options::RuntimeOptions;

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| PipelineError::Json {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn require(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = root.join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(PipelineError::MissingFile(root.to_owned(), rel.to_owned()))
    }
}

/// Weight files of one component folder, by preference: full-precision safetensors (one file
/// or shards), the `fp16` variant, then a single PyTorch pickle.
enum WeightFiles {
    Safetensors(Vec<PathBuf>),
    Pickle(PathBuf),
}

fn weight_files(dir: &Path) -> Result<WeightFiles> {
    let entries = std::fs::read_dir(dir).map_err(|source| PipelineError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut plain = Vec::new();
    let mut fp16 = Vec::new();
    let mut bins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PipelineError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".safetensors") {
            if !stem.contains('.') {
                plain.push(path.clone());
            } else if stem.ends_with(".fp16") {
                fp16.push(path.clone());
            }
        } else if let Some(stem) = name.strip_suffix(".bin") {
            if !stem.contains('.') {
                bins.push(path.clone());
            }
        }
    }
    plain.sort();
    fp16.sort();
    bins.sort();
    if !plain.is_empty() {
        return Ok(WeightFiles::Safetensors(plain));
    }
    if !fp16.is_empty() {
        return Ok(WeightFiles::Safetensors(fp16));
    }
    match bins.as_slice() {
        [one] => Ok(WeightFiles::Pickle(one.clone())),
        [] => Err(PipelineError::MissingFile(
            dir.to_owned(),
            "*.safetensors or *.bin weights".into(),
        )),
        _ => Err(PipelineError::Config(format!(
            "{}: sharded .bin weights are not supported; convert to safetensors",
            dir.display()
        ))),
    }
}

/// Opens one component's weights with values converted to `dtype` when read.
pub fn component_weights(
    dir: &Path,
    dtype: DType,
    opts: &RuntimeOptions,
) -> Result<VarBuilder<'static>> {
    match weight_files(dir)? {
        WeightFiles::Safetensors(files) => Ok(VarBuilder::from_backend(
            Box::new(SafetensorsFiles::open(&files)?),
            dtype,
            opts.device.clone(),
        )),
        WeightFiles::Pickle(file) => {
            // A bare state dict, or one wrapped as {"state_dict": ...}: the reader takes both.
            Ok(VarBuilder::from_backend(
                Box::new(Checkpoint::open(&file)?),
                dtype,
                opts.device.clone(),
            ))
        }
    }
}

/// SDXL's second tower when the folder has `text_encoder_2/` (None otherwise). A refiner (a
/// second tower only) is refused: its UNet wants aesthetic-score time ids runai does not make.
fn load_xl_parts(path: &Path, opts: &RuntimeOptions) -> Result<Option<XlParts>> {
    let dir = path.join("text_encoder_2");
    if !dir.is_dir() {
        return Ok(None);
    }
    if !path.join("text_encoder").is_dir() {
        return Err(PipelineError::Config(
            "an SDXL refiner (one 1280-wide text encoder, aesthetic-score time ids) is not \
             supported; use an SDXL base model or fine-tune"
                .into(),
        ));
    }
    let (tokenizer_2, pad_token_id_2) = load_tokenizer_dir(&path.join("tokenizer_2"))?;
    let index = path.join("model_index.json");
    let force_zeros_for_empty_prompt = if index.is_file() {
        read_json(&index)?
            .get("force_zeros_for_empty_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    } else {
        true
    };
    Ok(Some(XlParts {
        text_encoder_2_config: read_json(&require(path, "text_encoder_2/config.json")?)?,
        tokenizer_2,
        pad_token_id_2,
        text_encoder_2: component_weights(&dir, opts.dtype, opts)?,
        force_zeros_for_empty_prompt,
    }))
}

/// Reads a diffusers folder into [`ModelParts`]. The VAE is opened in f32 when its config asks
/// for upcasting (`force_upcast`, true for SD VAEs).
pub fn load_diffusers_folder(path: &Path, opts: &RuntimeOptions) -> Result<ModelParts> {
    let unet_config = read_json(&require(path, "unet/config.json")?)?;
    let vae_config = read_json(&require(path, "vae/config.json")?)?;
    let text_encoder_config = read_json(&require(path, "text_encoder/config.json")?)?;
    let scheduler_config = read_json(&require(path, "scheduler/scheduler_config.json")?)?;
    let (tokenizer, pad_token_id) = load_tokenizer_dir(&path.join("tokenizer"))?;
    let vae_dtype = if vae_config
        .get("force_upcast")
        .and_then(Value::as_bool)
        .unwrap_or(true)
    {
        DType::F32
    } else {
        opts.dtype
    };
    let xl = load_xl_parts(path, opts)?;
    Ok(ModelParts {
        xl,
        unet: component_weights(&path.join("unet"), opts.dtype, opts)?,
        vae: component_weights(&path.join("vae"), vae_dtype, opts)?,
        text_encoder: component_weights(&path.join("text_encoder"), opts.dtype, opts)?,
        unet_config,
        vae_config,
        text_encoder_config,
        scheduler_config,
        tokenizer,
        pad_token_id,
    })
}
