//! Serves an LDM/CompVis (or SDXL SGM, see sgm.rs) single-file checkpoint (`.safetensors` by positioned reads, or a zip
//! `.ckpt` through our bounded pickle reader) as diffusers-named [`ModelParts`]: configs are
//! synthesized, tensors are renamed (and reshaped or split) lazily when the pipeline asks for
//! them. Never writes to the checkpoint; never executes pickle code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::identify::{identify_checkpoint, IdentifyError, Identity};
use super::ldm_config::{synthesize_configs, SynthesizedConfigs};
use super::ldm_keys::{build_key_map, KeyMap, Mapping, Transform};
use super::ldm_shapes::{text_shape, unet_shape, vae_shape, ShapeError};
use super::ldm_yaml::{read_yaml_beside, YamlError};
use super::model::{ModelFormat, ModelVersion};
use super::sgm::{xl_configs, xl_key_map, xl_shape};
use super::tensors::{
    read_ckpt_index, read_safetensors_index, TensorIndex, TensorsError, WeightSource,
};
use super::tokenizer::{single_file_tokenizer, TokenizerError};
use crate::pipeline::load::model_parts::{ModelParts, XlParts};
use crate::pipeline::load::pickle::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum SingleFileError {
    #[error("not a .safetensors or .ckpt file")]
    NotACheckpoint,
    #[error(transparent)]
    Tensors(#[from] TensorsError),
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
}

/// The single-file format implied by the file extension (case-insensitive).
pub(crate) fn single_file_format(path: &Path) -> Option<ModelFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => Some(ModelFormat::Safetensors),
        "ckpt" => Some(ModelFormat::Ckpt),
        _ => None,
    }
}

/// Reads only the header of a single file: its tensor index and, for `.ckpt`, the opened
/// checkpoint (its pickle is parsed once).
pub(crate) fn read_index(
    path: &Path,
) -> Result<(ModelFormat, TensorIndex, Option<Checkpoint>), SingleFileError> {
    match single_file_format(path) {
        Some(ModelFormat::Safetensors) => Ok((
            ModelFormat::Safetensors,
            read_safetensors_index(path)?,
            None,
        )),
        Some(ModelFormat::Ckpt) => {
            let (index, ckpt) = read_ckpt_index(path)?;
            Ok((ModelFormat::Ckpt, index, Some(ckpt)))
        }
        _ => Err(SingleFileError::NotACheckpoint),
    }
}

/// Identifies a single file from its header and the yaml beside it (no weights read).
pub(crate) fn identify_single_file(
    path: &Path,
) -> Result<(ModelFormat, Identity), SingleFileError> {
    let (format, index, _) = read_index(path)?;
    let yaml = read_yaml_beside(path)?;
    Ok((format, identify_checkpoint(&index, yaml.as_ref())?))
}

/// Which model a diffusers name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    /// SDXL's second text encoder.
    TextEncoder2,
}

/// An opened single-file checkpoint, ready to hand out diffusers-named tensors.
pub struct SingleFile {
    pub(crate) path: PathBuf,
    pub format: ModelFormat,
    pub identity: Identity,
    pub configs: SynthesizedConfigs,
    pub(crate) keys: KeyMap,
    /// Element counts of every mapped tensor, for memory estimates.
    pub(crate) index: TensorIndex,
    source: Arc<WeightSource>,
}

impl SingleFile {
    pub fn open(path: &Path) -> Result<Self, SingleFileError> {
        let (format, index, ckpt) = read_index(path)?;
        let yaml = read_yaml_beside(path)?;
        let identity = identify_checkpoint(&index, yaml.as_ref())?;
        let unet = unet_shape(&index)?;
        let vae = vae_shape(&index)?;
        let (mut configs, keys) = if identity.version == ModelVersion::Xl {
            let xl = xl_shape(&index, &unet)?;
            let configs = xl_configs(&unet, &vae, &xl, &identity, yaml.as_ref());
            (configs, xl_key_map(&index, &unet, &vae, &xl))
        } else {
            let text = text_shape(&index)?;
            let configs = synthesize_configs(&unet, &vae, &text, &identity, yaml.as_ref());
            let keys = build_key_map(&index, &unet, &vae, &text, configs.text_layers_used);
            (configs, keys)
        };
        // A `ztsnr` key (as ComfyUI reads it): trained with zero terminal SNR.
        if index.contains("ztsnr") {
            configs.scheduler["rescale_betas_zero_snr"] = serde_json::json!(true);
        }
        let source = match ckpt {
            Some(ckpt) => WeightSource::Pickle(ckpt),
            None => WeightSource::safetensors(path)?,
        };
        Ok(SingleFile {
            path: path.to_path_buf(),
            format,
            identity,
            configs,
            keys,
            index,
            source: Arc::new(source),
        })
    }

    pub fn mapping(&self, component: Component) -> &BTreeMap<String, Mapping> {
        match component {
            Component::Unet => &self.keys.unet,
            Component::Vae => &self.keys.vae,
            Component::TextEncoder => &self.keys.text_encoder,
            Component::TextEncoder2 => &self.keys.text_encoder_2,
        }
    }

    /// Loads one tensor by its diffusers name, in the checkpoint's dtype.
    pub fn load(
        &self,
        component: Component,
        name: &str,
        device: &Device,
    ) -> Result<Tensor, SingleFileError> {
        let mapping = self
            .mapping(component)
            .get(name)
            .ok_or_else(|| SingleFileError::Tensor {
                name: name.to_string(),
                reason: "not in the checkpoint".into(),
            })?;
        load_mapped(&self.source, name, mapping, device)
    }

    /// Bytes the mapped weights take once loaded: UNet and text encoder at `dtype`, the VAE
    /// at f32 (the pipeline upcasts it).
    pub(crate) fn weight_bytes(&self, dtype: DType) -> u64 {
        let elements = |map: &BTreeMap<String, Mapping>| -> u64 {
            map.values()
                .map(|m| {
                    let shape = self.index.shape(&m.source).unwrap_or(&[]);
                    let n: usize = match m.transform {
                        Transform::Rows { len, .. } => {
                            len * shape.iter().skip(1).product::<usize>()
                        }
                        _ => shape.iter().product(),
                    };
                    n as u64
                })
                .sum()
        };
        let size = dtype.size_in_bytes() as u64;
        (elements(&self.keys.unet)
            + elements(&self.keys.text_encoder)
            + elements(&self.keys.text_encoder_2))
            * size
            + elements(&self.keys.vae) * 4
    }

    fn var_builder(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let backend = RenamedBackend {
            source: Arc::clone(&self.source),
            map: self.mapping(component).clone(),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Hands the checkpoint over as [`ModelParts`]; weights load when modules are built.
    pub(crate) fn into_parts(
        self,
        dtype: DType,
        device: &Device,
    ) -> Result<ModelParts, SingleFileError> {
        let (tokenizer, pad_token_id) = single_file_tokenizer(&self.path, self.identity.version)?;
        let xl = match &self.configs.text_encoder_2 {
            Some(config) => {
                // SDXL's second tokenizer pads with `!` like SD2's.
                let (tokenizer_2, pad_token_id_2) =
                    single_file_tokenizer(&self.path, ModelVersion::V2)?;
                Some(XlParts {
                    text_encoder_2_config: config.clone(),
                    tokenizer_2,
                    pad_token_id_2,
                    text_encoder_2: self.var_builder(Component::TextEncoder2, dtype, device),
                    // SGM zeroes an empty negative prompt, as AUTOMATIC1111 does.
                    force_zeros_for_empty_prompt: true,
                })
            }
            None => None,
        };
        Ok(ModelParts {
            unet: self.var_builder(Component::Unet, dtype, device),
            vae: self.var_builder(Component::Vae, dtype, device),
            text_encoder: self.var_builder(Component::TextEncoder, dtype, device),
            xl,
            unet_config: self.configs.unet,
            vae_config: self.configs.vae,
            text_encoder_config: self.configs.text_encoder,
            scheduler_config: self.configs.scheduler,
            tokenizer,
            pad_token_id,
        })
    }
}

fn load_mapped(
    source: &WeightSource,
    name: &str,
    mapping: &Mapping,
    device: &Device,
) -> Result<Tensor, SingleFileError> {
    let err = |e: candle_core::Error| SingleFileError::Tensor {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let tensor = source.load(&mapping.source, device)?;
    match mapping.transform {
        Transform::Identity => Ok(tensor),
        Transform::Conv1x1ToLinear => {
            let dims = tensor.dims();
            match dims {
                [o, i, 1, 1] => tensor.reshape((*o, *i)).map_err(err),
                [_, _] => Ok(tensor),
                _ => Err(SingleFileError::Tensor {
                    name: name.to_string(),
                    reason: format!("expected a 1x1 convolution weight, got shape {dims:?}"),
                }),
            }
        }
        Transform::Rows { start, len } => tensor
            .narrow(0, start, len)
            .and_then(|t| t.contiguous())
            .map_err(err),
        Transform::Transpose => tensor.t().and_then(|t| t.contiguous()).map_err(err),
    }
}

/// A VarBuilder backend that answers diffusers names from checkpoint tensors.
struct RenamedBackend {
    source: Arc<WeightSource>,
    map: BTreeMap<String, Mapping>,
}

impl RenamedBackend {
    fn fetch(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mapping = self
            .map
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        load_mapped(&self.source, name, mapping, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .to_dtype(dtype)
    }
}

impl SimpleBackend for RenamedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        crate::pipeline::load::weights::expect_shape(self.fetch(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}
