//! Reads what a checkpoint holds (tensor names, shapes, element sizes) and opens its weights
//! for lazy loading. Identification only ever reads headers: the safetensors JSON header or the
//! `data.pkl` of a zip `.ckpt`, through our bounded reader ([`crate::pipeline::load::pickle`]), which
//! parses and never executes. Files are opened read-only and never modified. Errors say what is
//! wrong with the file without quoting its bytes or its path (the caller names the model).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::pipeline::load::pickle::{Checkpoint, PickleError};
use crate::pipeline::load::weights::MAX_HEADER_BYTES;

/// Dimensions of one tensor in a safetensors header (SD uses at most 4).
const MAX_RANK: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TensorsError {
    #[error("cannot read the file: {0}")]
    Io(std::io::ErrorKind),
    #[error("not a valid safetensors file: {0}")]
    BadSafetensors(&'static str),
    #[error("not a readable PyTorch checkpoint: {0}")]
    Checkpoint(#[from] PickleError),
    #[error("cannot load tensor {name}: {reason}")]
    Load { name: String, reason: String },
}

fn io_err(e: std::io::Error) -> TensorsError {
    TensorsError::Io(e.kind())
}

/// Shape and storage size of one tensor, known without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorMeta {
    pub(crate) shape: Vec<usize>,
    /// Bytes per element as stored in the file.
    pub(crate) elem_size: usize,
}

impl TensorMeta {
    pub(crate) fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every tensor of a checkpoint by name, from its header only.
#[derive(Debug, Clone, Default)]
pub(crate) struct TensorIndex {
    pub(crate) tensors: BTreeMap<String, TensorMeta>,
}

impl TensorIndex {
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|m| m.shape.as_slice())
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub(crate) fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    pub(crate) fn names_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a str> {
        self.tensors
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.as_str())
    }
}

fn safetensors_elem_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// One header entry; unknown fields and `__metadata__`'s strings are skipped unallocated.
#[derive(Deserialize)]
struct HeaderEntry {
    #[serde(default)]
    dtype: String,
    #[serde(default)]
    shape: Vec<u64>,
    #[serde(default)]
    data_offsets: Option<[u64; 2]>,
}

/// Reads the JSON header of a `.safetensors` file (8-byte little-endian length, then JSON) and
/// checks every tensor's declared size against its data offsets and the file's length.
pub(crate) fn read_safetensors_index(path: &Path) -> Result<TensorIndex, TensorsError> {
    let bad = TensorsError::BadSafetensors;
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0)
        .map_err(|_| bad("shorter than 8 bytes"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len.saturating_add(8) > file_len {
        return Err(bad(
            "the declared header length is larger than the file or the reader's limit",
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(io_err)?;
    let entries: BTreeMap<String, HeaderEntry> =
        serde_json::from_slice(&header).map_err(|_| bad("the header is not safetensors JSON"))?;
    drop(header);
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let elem_size =
            safetensors_elem_size(&entry.dtype).ok_or(bad("a tensor has an unknown dtype"))?;
        if entry.shape.len() > MAX_RANK {
            return Err(bad("a tensor has too many dimensions"));
        }
        let bytes = entry
            .shape
            .iter()
            .try_fold(elem_size as u64, |n, &d| n.checked_mul(d));
        let consistent = match (bytes, entry.data_offsets) {
            (Some(bytes), Some([begin, end])) => {
                begin <= end && end - begin == bytes && end <= data_len
            }
            _ => false,
        };
        if !consistent {
            return Err(bad(
                "a tensor's shape, dtype and data offsets disagree or reach past the end of \
                 the file",
            ));
        }
        // Every dimension is at most the file's length here, so it fits a usize.
        let shape = entry.shape.iter().map(|&d| d as usize).collect();
        tensors.insert(name, TensorMeta { shape, elem_size });
    }
    Ok(TensorIndex { tensors })
}

/// The tensor index of a zip-format `.ckpt` and the opened checkpoint (its `data.pkl` parsed
/// once, no tensor data read).
pub(crate) fn read_ckpt_index(path: &Path) -> Result<(TensorIndex, Checkpoint), TensorsError> {
    let ckpt = Checkpoint::open(path)?;
    let tensors = ckpt
        .tensors()
        .iter()
        .map(|(name, t)| {
            let meta = TensorMeta {
                shape: t.shape.clone(),
                elem_size: t.dtype.elem_size(),
            };
            (name.clone(), meta)
        })
        .collect();
    Ok((TensorIndex { tensors }, ckpt))
}

/// Lazily loads tensors by their original (checkpoint) name.
pub(crate) enum WeightSource {
    Safetensors(crate::pipeline::load::weights::SafetensorsFiles),
    Pickle(Checkpoint),
}

impl WeightSource {
    /// Opens a `.safetensors` file; tensors are read (positioned reads, no map) on demand.
    pub(crate) fn safetensors(path: &Path) -> Result<Self, TensorsError> {
        use crate::pipeline::load::weights::{SafetensorsFiles, WeightsError};
        let st = SafetensorsFiles::open(&[path.to_owned()]).map_err(|e| match e {
            WeightsError::Io { source, .. } => io_err(source),
            WeightsError::Header { .. } => {
                TensorsError::BadSafetensors("the header does not describe the file")
            }
        })?;
        Ok(WeightSource::Safetensors(st))
    }

    pub(crate) fn load(&self, name: &str, device: &Device) -> Result<Tensor, TensorsError> {
        let load_err = |reason: String| TensorsError::Load {
            name: name.to_string(),
            reason,
        };
        match self {
            WeightSource::Safetensors(st) => {
                st.load(name, device).map_err(|e| load_err(e.to_string()))
            }
            WeightSource::Pickle(ckpt) => ckpt.load(name, device).map_err(TensorsError::from),
        }
    }
}
