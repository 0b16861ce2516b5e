//! Reads `.safetensors` weights with positioned reads straight into each tensor's own buffer.
//! candle's memory-mapped loader copies every tensor out of the map while the mapped pages stay
//! resident until the whole file is dropped, so a 3.4 GB UNet peaked at 6.6 GB of RSS; here the
//! file data only passes through the page cache (not counted in RSS) and the process holds one
//! copy of the weights. Never writes to the files and never trusts a header's offsets without
//! checking them against the file's length.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use safetensors::tensor::Metadata;
use safetensors::Dtype;

/// Errors while opening or reading a weight file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Header { path: PathBuf, reason: String },
}

/// Header limit. Real SD headers are a few hundred KiB (a few MiB with training metadata); a
/// parsed header takes a few times its size in memory, so this bounds what a hostile one costs.
pub(crate) const MAX_HEADER_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute offset of the tensor's bytes in the file (their length follows from the shape).
    start: u64,
}

/// One or more safetensors files (shards) read on demand.
#[derive(Debug)]
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
}

fn header_err(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Header {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn candle_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

impl SafetensorsFiles {
    /// Opens every file and indexes its tensors; no tensor data is read yet.
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self, WeightsError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let io = |source| WeightsError::Io {
                path: path.clone(),
                source,
            };
            let file = File::open(path).map_err(io)?;
            let file_len = file.metadata().map_err(io)?.len();
            let mut len8 = [0u8; 8];
            file.read_exact_at(&mut len8, 0).map_err(io)?;
            let header_len = u64::from_le_bytes(len8);
            if header_len > MAX_HEADER_BYTES || header_len.saturating_add(8) > file_len {
                return Err(header_err(path, "impossible header length"));
            }
            let mut header = vec![0u8; header_len as usize];
            file.read_exact_at(&mut header, 8).map_err(io)?;
            let meta: Metadata = serde_json::from_slice(&header)
                .map_err(|_| header_err(path, "the header is not safetensors JSON"))?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = candle_dtype(info.dtype).ok_or_else(|| {
                    header_err(path, format!("{name}: unsupported dtype {:?}", info.dtype))
                })?;
                let (begin, end) = info.data_offsets;
                let elements = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let expected = elements.and_then(|e| e.checked_mul(dtype.size_in_bytes()));
                if end < begin
                    || expected != Some(end - begin)
                    || data_start + end as u64 > file_len
                {
                    return Err(header_err(path, format!("{name}: bad data offsets")));
                }
                let entry = Entry {
                    file: index,
                    dtype,
                    shape: info.shape.clone(),
                    start: data_start + begin as u64,
                };
                entries.insert(name, entry);
            }
            files.push((path.clone(), file));
        }
        Ok(SafetensorsFiles { files, entries })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Reads one tensor as stored (its file's dtype) onto `device`.
    pub(crate) fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        let (_, file) = &self.files[entry.file];
        let shape = Shape::from(entry.shape.clone());
        let host = read_host_tensor(file, entry.start, entry.dtype, shape)
            .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?;
        host.to_device(device)
    }
}

/// Reads a row-major tensor of `dtype` and `shape` stored at `start` of `file` into host
/// memory; an f32 tensor on a little-endian host is read straight into its own buffer. The
/// caller has checked that the bytes lie within the file.
pub(crate) fn read_host_tensor(
    file: &File,
    start: u64,
    dtype: DType,
    shape: Shape,
) -> candle_core::Result<Tensor> {
    let len = shape.elem_count() * dtype.size_in_bytes();
    let read = |buf: &mut [u8]| {
        file.read_exact_at(buf, start)
            .map_err(|e| candle_core::Error::Msg(format!("cannot read tensor data: {}", e.kind())))
    };
    if dtype == DType::F32 && cfg!(target_endian = "little") {
        let mut values = vec![0f32; len / 4];
        read(bytemuck::cast_slice_mut(&mut values))?;
        Tensor::from_vec(values, shape, &Device::Cpu)
    } else {
        let mut bytes = vec![0u8; len];
        read(&mut bytes)?;
        Tensor::from_raw_buffer(&bytes, dtype, shape.dims(), &Device::Cpu)
    }
}

/// `tensor` if it has the shape a module asked for, else candle's shape-mismatch error (what
/// every `SimpleBackend::get` must check).
pub(crate) fn expect_shape(
    tensor: Tensor,
    expected: Shape,
    name: &str,
) -> candle_core::Result<Tensor> {
    if tensor.shape() != &expected {
        return Err(candle_core::Error::UnexpectedShape {
            msg: format!("shape mismatch for {name}"),
            expected,
            got: tensor.shape().clone(),
        });
    }
    Ok(tensor)
}

impl SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        expect_shape(self.get_unchecked(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel)
    }

    #[test]
    fn reads_the_same_tensors_as_candles_mmap_loader() {
        let path = fixture("models/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
        let ours = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap();
        // SAFETY: read-only map of a test fixture nothing writes to.
        let theirs = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }.unwrap();
        let names: Vec<String> = theirs.tensors().into_iter().map(|(n, _)| n).collect();
        assert!(names.len() > 10);
        let values = |t: Tensor| -> Vec<f32> {
            let t = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .unwrap();
            t.to_vec1().unwrap()
        };
        for name in names {
            let a = ours.load(&name, &Device::Cpu).unwrap();
            let b = theirs.load(&name, &Device::Cpu).unwrap();
            assert_eq!(a.shape(), b.shape(), "{name}");
            assert_eq!(a.dtype(), b.dtype(), "{name}");
            assert_eq!(values(a), values(b), "{name}");
        }
    }

    #[test]
    fn refuses_offsets_beyond_the_file() {
        let dir = std::env::temp_dir().join(format!("runai-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.safetensors");
        let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]); // only 8 of the 16 declared bytes
        std::fs::write(&path, &bytes).unwrap();
        let err = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.to_string().contains("bad data offsets"), "{err}");
    }
}
