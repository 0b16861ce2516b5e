//! The one place that decides how a model path is read: a diffusers folder through the
//! pipeline's loader, a `.safetensors` / `.ckpt` file through the single-file converter
//! ([`ModelSource`]). The worker's generator opens what the registry resolved; the replay tool
//! and tests open any path. Reads only.

use std::path::{Path, PathBuf};

use candle_core::DType;

use super::model::ModelFormat;
use super::scan::model_format_at;
use super::single_file::{SingleFile, SingleFileError};
use super::weights::diffusers_bytes;
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

/// A model opened for loading: how much memory its weights will take is known before they
/// are read (a single file's header is parsed, a folder's safetensors headers are summed).
pub(crate) enum ModelSource {
    Folder(PathBuf),
    SingleFile(Box<SingleFile>),
}

impl ModelSource {
    /// Opens the model at `path` as `format` (what the registry identified).
    pub(crate) fn open(path: &Path, format: ModelFormat) -> Result<ModelSource, LoadError> {
        Ok(match format {
            ModelFormat::Diffusers => ModelSource::Folder(path.to_path_buf()),
            ModelFormat::Safetensors | ModelFormat::Ckpt => {
                ModelSource::SingleFile(Box::new(SingleFile::open(path)?))
            }
        })
    }

    /// Opens whatever model is at `path`, recognised as the registry's scan recognises one.
    pub(crate) fn at(path: &Path) -> Result<ModelSource, LoadError> {
        let format = model_format_at(path)
            .ok_or_else(|| LoadError::NotAModel(path.display().to_string()))?;
        ModelSource::open(path, format)
    }

    /// Bytes the weights take once loaded at `dtype` (the VAE at f32).
    pub(crate) fn weight_bytes(&self, dtype: DType) -> u64 {
        match self {
            ModelSource::Folder(dir) => diffusers_bytes(dir, dtype),
            ModelSource::SingleFile(sf) => sf.weight_bytes(dtype),
        }
    }

    /// Reads the model into [`ModelParts`].
    pub(crate) fn into_parts(self, opts: &RuntimeOptions) -> Result<ModelParts, LoadError> {
        Ok(match self {
            ModelSource::Folder(dir) => load_diffusers_folder(&dir, opts)?,
            ModelSource::SingleFile(sf) => sf.into_parts(opts.dtype, &opts.device)?,
        })
    }
}

/// Reads the model at `path` (folder or single file) into [`ModelParts`].
pub fn load_model_parts(path: &Path, opts: &RuntimeOptions) -> Result<ModelParts, LoadError> {
    ModelSource::at(path)?.into_parts(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_opens_as_the_registry_scan_recognises_it() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let folder = ModelSource::at(&fixtures.join("models/tiny-sd1")).unwrap();
        assert!(matches!(folder, ModelSource::Folder(_)));
        let folder_bytes = folder.weight_bytes(DType::F32);
        assert!(folder_bytes > 0);
        let file = fixtures.join("single_file/tiny-sd1.safetensors");
        let single = ModelSource::at(&file).unwrap();
        assert!(matches!(single, ModelSource::SingleFile(_)));
        assert!(single.weight_bytes(DType::F32) > 0);

        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "not a model").unwrap();
        for path in [dir.path(), notes.as_path(), &dir.path().join("missing")] {
            assert!(
                matches!(ModelSource::at(path), Err(LoadError::NotAModel(_))),
                "{}",
                path.display()
            );
        }
    }
}
