//! One file of tensors whatever its format: `.safetensors` (our bounded reader) or a
//! zip-format PyTorch pickle (`.pt`, `.ckpt`, `.bin`, our bounded pickle reader). Used for
//! the small add-on files (LoRAs, textual-inversion embeddings), which are read whole.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::pickle::Checkpoint;
use super::weights::SafetensorsFiles;
use crate::pipeline::error::{PipelineError, Result};

/// An opened tensor file; tensor data is read on demand.
pub enum TensorFile {
    Safetensors(SafetensorsFiles),
    Pickle(Checkpoint),
}

impl TensorFile {
    /// Opens `path`, choosing the reader by extension. `max_bytes` bounds the file's size.
    pub fn open(path: &Path, max_bytes: u64) -> Result<TensorFile> {
        let io = |source| PipelineError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > max_bytes {
            return Err(PipelineError::Config(format!(
                "{} is {len} bytes, more than the {max_bytes} allowed",
                path.display()
            )));
        }
        let safetensors = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        Ok(if safetensors {
            TensorFile::Safetensors(SafetensorsFiles::open(&[PathBuf::from(path)])?)
        } else {
            TensorFile::Pickle(Checkpoint::open(path)?)
        })
    }

    /// Every tensor's name and shape, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = match self {
            TensorFile::Safetensors(f) => f
                .shapes()
                .map(|(n, s)| (n.to_owned(), s.to_vec()))
                .collect(),
            TensorFile::Pickle(c) => c
                .tensors()
                .iter()
                .map(|(n, e)| (n.clone(), e.shape.clone()))
                .collect(),
        };
        out.sort();
        out
    }

    /// Reads one tensor as f32 onto the CPU.
    pub fn load_f32(&self, name: &str) -> Result<Tensor> {
        let t = match self {
            TensorFile::Safetensors(f) => f.load(name, &Device::Cpu)?,
            TensorFile::Pickle(c) => c.load(name, &Device::Cpu)?,
        };
        Ok(t.to_dtype(candle_core::DType::F32)?)
    }
}
