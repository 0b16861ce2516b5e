//! Our own reader for zip-format PyTorch checkpoints (`.ckpt`, diffusers `.bin`), bounded by
//! construction because a checkpoint is a stranger's bytes. It walks `data.pkl` with the
//! limits of [`limits`] ([`machine`], [`opcodes`]), accepts only PyTorch's tensor rebuild
//! calls and storage types ([`rebuild`]), keeps only the state dict's tensor index ([`index`]),
//! and reads tensor data from stored zip entries after checking every offset against the
//! entry ([`archive`]). Nothing in a pickle is ever executed; errors say what is wrong and
//! never echo the file's bytes.

mod archive;
mod index;
pub(crate) mod limits;
mod machine;
mod opcodes;
mod rebuild;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use self::archive::{fits, Archive};
use self::index::PickledTensor;
use self::rebuild::StorageType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("cannot read the file: {0}")]
    Io(std::io::ErrorKind),
    #[error(
        "an old (non-zip) PyTorch pickle; only zip-format checkpoints are read (re-save it \
         with a recent PyTorch or convert it to .safetensors)"
    )]
    Legacy,
    #[error("{0}")]
    Archive(&'static str),
    #[error("data.pkl, opcode at byte {pos}: {reason}")]
    Malformed { reason: &'static str, pos: usize },
    #[error("the checkpoint exceeds the reader's limit of {limit} {what}")]
    Limit { what: &'static str, limit: usize },
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: &'static str },
}

impl PickleError {
    /// Reports a malformed opcode at the opcode's own position.
    fn at(self, pos: usize) -> Self {
        match self {
            PickleError::Malformed { reason, .. } => PickleError::Malformed { reason, pos },
            other => other,
        }
    }
}

/// One tensor, located in the file and checked against its storage entry.
#[derive(Debug, Clone)]
pub(crate) struct TensorEntry {
    pub dtype: StorageType,
    pub shape: Vec<usize>,
    stride: Vec<usize>,
    /// Absolute file offset of the tensor's first element.
    start: u64,
    /// Bytes from `start` that cover every element (strides included).
    reach: u64,
}

impl TensorEntry {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }
}

/// Checks a pickled tensor against its storage's span; `None` if it reads outside it or
/// holds more elements than the span has room for.
fn locate(t: &PickledTensor, span: archive::Span) -> Option<TensorEntry> {
    let size = t.dtype.elem_size() as u64;
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))?;
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&d, &s)| {
            acc.checked_add((d as u64).saturating_sub(1).checked_mul(s as u64)?)
        })?;
    let reach_elems = if numel == 0 {
        0
    } else {
        last.checked_add(1)? - t.offset
    };
    let offset_bytes = t.offset.checked_mul(size)?;
    let reach = reach_elems.checked_mul(size)?;
    let fits_span = fits(offset_bytes, reach, span.len) && numel.checked_mul(size)? <= span.len;
    fits_span.then(|| TensorEntry {
        dtype: t.dtype,
        shape: t.shape.clone(),
        stride: t.stride.clone(),
        start: span.start + offset_bytes,
        reach,
    })
}

/// An opened checkpoint: its tensor index, read from `data.pkl` once, and the file.
#[derive(Debug)]
pub struct Checkpoint {
    file: File,
    tensors: BTreeMap<String, TensorEntry>,
}

impl Checkpoint {
    /// Parses `data.pkl` and locates every tensor; reads no tensor data.
    pub(crate) fn open(path: &Path) -> Result<Self, PickleError> {
        let mut archive = Archive::open(path)?;
        let pickle = archive.read_pickle()?;
        let graph = machine::run(&pickle)?;
        let (pickled, _nested) = index::state_dict(&graph)?;
        drop(graph);
        let mut spans = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        for (name, t) in pickled {
            let span = match spans.get(&t.storage_key) {
                Some(span) => *span,
                None => {
                    let span = archive.entry(&format!("data/{}", t.storage_key))?;
                    spans.insert(t.storage_key.clone(), span);
                    span
                }
            };
            // Tensor names come from the file: the error does not quote them.
            let entry = locate(&t, span).ok_or(PickleError::Archive(
                "a tensor's offset, size or strides reach outside its storage",
            ))?;
            tensors.insert(name, entry);
        }
        Ok(Checkpoint {
            file: archive.into_file(),
            tensors,
        })
    }

    pub(crate) fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    /// Reads one tensor in its stored dtype onto `device`.
    pub(crate) fn load(&self, name: &str, device: &Device) -> Result<Tensor, PickleError> {
        let err = |reason| PickleError::Tensor {
            name: name.to_string(),
            reason,
        };
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| err("not in the checkpoint"))?;
        let dtype = match entry.dtype {
            StorageType::Double => DType::F64,
            StorageType::Float => DType::F32,
            StorageType::Half => DType::F16,
            StorageType::BFloat16 => DType::BF16,
            StorageType::Long => DType::I64,
            StorageType::Byte | StorageType::Bool => DType::U8,
            StorageType::Int | StorageType::Short | StorageType::Char => {
                return Err(err("its storage type cannot be loaded"))
            }
        };
        let shape = Shape::from(entry.shape.clone());
        let host = if entry.contiguous() {
            super::weights::read_host_tensor(&self.file, entry.start, dtype, shape)
        } else {
            self.gather(entry, dtype, shape)
        };
        host.and_then(|t| t.to_device(device))
            .map_err(|_| err("its data cannot be read"))
    }

    /// A strided (non-contiguous) tensor: reads the bytes its elements span, then copies each
    /// element into row-major order. `locate` bounded both by the storage entry's size.
    fn gather(
        &self,
        entry: &TensorEntry,
        dtype: DType,
        shape: Shape,
    ) -> candle_core::Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let size = entry.dtype.elem_size();
        let mut span = vec![0u8; entry.reach as usize];
        self.file
            .read_exact_at(&mut span, entry.start)
            .map_err(candle_core::Error::wrap)?;
        let mut out = Vec::with_capacity(entry.numel() * size);
        let mut index = vec![0usize; entry.shape.len()];
        for _ in 0..entry.numel() {
            let at: usize = index.iter().zip(&entry.stride).map(|(i, s)| i * s).sum();
            out.extend_from_slice(&span[at * size..(at + 1) * size]);
            for dim in (0..index.len()).rev() {
                index[dim] += 1;
                if index[dim] < entry.shape[dim] {
                    break;
                }
                index[dim] = 0;
            }
        }
        Tensor::from_raw_buffer(&out, dtype, shape.dims(), &Device::Cpu)
    }
}

impl SimpleBackend for Checkpoint {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        super::weights::expect_shape(self.get_unchecked(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
