//! One entry point from a model path to [`ModelParts`]: a diffusers folder through the
//! pipeline's loader, a `.safetensors` / `.ckpt` file through the single-file converter. Used
//! by the replay tool and anything else that takes a model path. Reads only.

use std::path::Path;

use super::single_file::{single_file_format, SingleFile, SingleFileError};
use crate::pipeline::load::loader::load_diffusers_folder;
use crate::pipeline::load::model_parts::ModelParts;
use crate::pipeline::{PipelineError, RuntimeOptions};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    SingleFile(#[from] SingleFileError),
    #[error(transparent)]
    Folder(#[from] PipelineError),
    #[error("{0} is neither a diffusers folder nor a .safetensors / .ckpt file")]
    NotAModel(String),
}

/// Reads the model at `path` (folder or single file) into [`ModelParts`].
pub fn load_model_parts(path: &Path, opts: &RuntimeOptions) -> Result<ModelParts, LoadError> {
    if path.is_dir() {
        return Ok(load_diffusers_folder(path, opts)?);
    }
    if path.is_file() && single_file_format(path).is_some() {
        return Ok(SingleFile::open(path)?.into_parts(opts.dtype, &opts.device)?);
    }
    Err(LoadError::NotAModel(path.display().to_string()))
}
