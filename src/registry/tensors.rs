//! Reads what a checkpoint holds (tensor names, shapes, element sizes) and opens its weights
//! for lazy loading. Identification only ever reads headers: the safetensors JSON header or the
//! `data.pkl` of a zip `.ckpt`. Pickles are parsed by candle's reader, never executed; files
//! are opened read-only and never modified.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

/// A safetensors header larger than this is refused: real SD checkpoints have headers of a
/// few hundred KiB, and the header is read into memory whole.
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TensorsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {reason}")]
    BadSafetensors { path: String, reason: String },
    #[error(
        "{path} is an old (non-zip) PyTorch pickle; only zip-format .ckpt files are read \
         (re-save it with a recent PyTorch or convert it to .safetensors)"
    )]
    LegacyPickle { path: String },
    #[error("{path} is not a readable PyTorch checkpoint: {reason}")]
    BadCheckpoint { path: String, reason: String },
    #[error("cannot load tensor {name}: {reason}")]
    Load { name: String, reason: String },
}

/// Shape and storage size of one tensor, known without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub shape: Vec<usize>,
    /// Bytes per element as stored in the file.
    pub elem_size: usize,
}

impl TensorMeta {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every tensor of a checkpoint by name, from its header only.
#[derive(Debug, Clone, Default)]
pub struct TensorIndex {
    pub tensors: BTreeMap<String, TensorMeta>,
}

impl TensorIndex {
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|m| m.shape.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors
            .range(prefix.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(prefix))
    }

    pub fn names_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        self.tensors
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.as_str())
    }
}

fn io_err(path: &Path, source: std::io::Error) -> TensorsError {
    TensorsError::Io {
        path: path.display().to_string(),
        source,
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

/// Reads the JSON header of a `.safetensors` file (8-byte little-endian length, then JSON).
pub fn read_safetensors_index(path: &Path) -> Result<TensorIndex, TensorsError> {
    let bad = |reason: String| TensorsError::BadSafetensors {
        path: path.display().to_string(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| bad("shorter than 8 bytes".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len.saturating_add(8) > file_len {
        return Err(bad(format!("header length {header_len} is impossible")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, info) in json {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let elem_size =
            safetensors_elem_size(dtype).ok_or_else(|| bad(format!("{name}: dtype {dtype:?}")))?;
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| bad(format!("{name}: bad shape")))?;
        tensors.insert(name, TensorMeta { shape, elem_size });
    }
    Ok(TensorIndex { tensors })
}

/// How a `.ckpt` stores its state dict: at the top level, or under a key (`state_dict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkptLayout {
    pub key: Option<String>,
}

fn check_zip_magic(path: &Path) -> Result<(), TensorsError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(|e| io_err(path, e))?;
    if n == 4 && magic == *b"PK\x03\x04" {
        return Ok(());
    }
    // Protocol-2 pickles (torch.save with _use_new_zipfile_serialization=False) start with
    // PROTO 0x80; anything else is not a checkpoint at all.
    if n >= 1 && magic[0] == 0x80 {
        return Err(TensorsError::LegacyPickle {
            path: path.display().to_string(),
        });
    }
    Err(TensorsError::BadCheckpoint {
        path: path.display().to_string(),
        reason: "neither a zip archive nor a pickle".into(),
    })
}

/// Reads the tensor metadata of a zip-format `.ckpt` from its `data.pkl`, without the data.
pub fn read_ckpt_index(path: &Path) -> Result<(TensorIndex, CkptLayout), TensorsError> {
    check_zip_magic(path)?;
    let bad = |e: candle_core::Error| TensorsError::BadCheckpoint {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    // Checkpoints from the LDM training code wrap the state dict as {"state_dict": ...};
    // some pruned ones store it at the top level. Try the common one first.
    for key in [Some("state_dict"), None] {
        let infos = match candle_core::pickle::read_pth_tensor_info(path, false, key) {
            Ok(infos) => infos,
            Err(e) if key.is_some() && e.to_string().contains("not found") => continue,
            Err(e) => return Err(bad(e)),
        };
        if infos.is_empty() {
            continue;
        }
        let tensors = infos
            .into_iter()
            .map(|info| {
                let meta = TensorMeta {
                    shape: info.layout.dims().to_vec(),
                    elem_size: info.dtype.size_in_bytes(),
                };
                (info.name, meta)
            })
            .collect();
        let layout = CkptLayout {
            key: key.map(str::to_string),
        };
        return Ok((TensorIndex { tensors }, layout));
    }
    Err(TensorsError::BadCheckpoint {
        path: path.display().to_string(),
        reason: "no tensors found in the pickle".into(),
    })
}

/// Lazily loads tensors by their original (checkpoint) name.
pub enum WeightSource {
    Safetensors(crate::pipeline::weights::SafetensorsFiles),
    Pickle(candle_core::pickle::PthTensors),
}

impl WeightSource {
    /// Opens a `.safetensors` file; tensors are read (positioned reads, no map) on demand.
    pub fn safetensors(path: &Path) -> Result<Self, TensorsError> {
        use crate::pipeline::weights::{SafetensorsFiles, WeightsError};
        let st = SafetensorsFiles::open(&[path.to_owned()]).map_err(|e| match e {
            WeightsError::Io { source, .. } => TensorsError::Io {
                path: path.display().to_string(),
                source,
            },
            WeightsError::Header { reason, .. } => TensorsError::BadSafetensors {
                path: path.display().to_string(),
                reason,
            },
        })?;
        Ok(WeightSource::Safetensors(st))
    }

    /// Opens a zip-format `.ckpt`; only `data.pkl` is parsed now, tensors are read on demand.
    pub fn pickle(path: &Path, layout: &CkptLayout) -> Result<Self, TensorsError> {
        check_zip_magic(path)?;
        let pth =
            candle_core::pickle::PthTensors::new(path, layout.key.as_deref()).map_err(|e| {
                TensorsError::BadCheckpoint {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
        Ok(WeightSource::Pickle(pth))
    }

    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor, TensorsError> {
        let load_err = |reason: String| TensorsError::Load {
            name: name.to_string(),
            reason,
        };
        match self {
            WeightSource::Safetensors(st) => {
                st.load(name, device).map_err(|e| load_err(e.to_string()))
            }
            WeightSource::Pickle(pth) => match pth.get(name) {
                Ok(Some(t)) => t.to_device(device).map_err(|e| load_err(e.to_string())),
                Ok(None) => Err(load_err("not in the checkpoint".into())),
                Err(e) => Err(load_err(e.to_string())),
            },
        }
    }
}
