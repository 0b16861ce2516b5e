//! AUTOMATIC1111 textual-inversion embedding files: `.pt` with the vectors under
//! `string_to_param["*"]`, `.safetensors` with `emb_params` (or any single tensor), and SDXL's
//! `clip_l` + `clip_g` pair. The embedding's name is the file stem; writing it in a prompt
//! inserts its vectors. A file is a stranger's bytes: size, shape and values are checked.

use std::path::Path;

use candle_core::Tensor;

use super::tensor_file::TensorFile;
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::prompt::chunk::CHUNK_LENGTH;

/// Largest embedding file read (real ones are a few KiB).
pub const MAX_EMBEDDING_BYTES: u64 = 16 << 20;

/// One embedding: its vectors for each text tower (`[clip_l]`, or `[clip_l, clip_g]`).
#[derive(Debug, Clone)]
pub struct TextualInversion {
    pub name: String,
    /// `[n_vectors, width]` f32 per tower.
    pub vectors: Vec<Tensor>,
}

impl TextualInversion {
    /// Whether it fits a model whose towers are `widths` wide.
    pub fn fits(&self, widths: &[usize]) -> bool {
        self.vectors.len() == widths.len()
            && self
                .vectors
                .iter()
                .zip(widths)
                .all(|(v, &w)| v.dims().get(1) == Some(&w))
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> PipelineError {
    PipelineError::Config(format!(
        "{}: not a usable textual-inversion embedding: {why}",
        path.display()
    ))
}

/// Reads the embedding at `path`; its name is the file stem.
pub fn read_embedding(path: &Path) -> Result<TextualInversion> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad(path, "the file name is not UTF-8 text"))?
        .to_owned();
    let file = TensorFile::open(path, MAX_EMBEDDING_BYTES)?;
    let shapes = file.shapes();
    let has = |n: &str| shapes.iter().any(|(k, _)| k == n);
    let keys: Vec<String> = if has("clip_l") && has("clip_g") {
        vec!["clip_l".into(), "clip_g".into()]
    } else if has("*") {
        vec!["*".into()]
    } else if has("emb_params") {
        vec!["emb_params".into()]
    } else if shapes.len() == 1 {
        vec![shapes[0].0.clone()]
    } else {
        return Err(bad(
            path,
            "expected `emb_params`, `string_to_param` or `clip_l` + `clip_g`",
        ));
    };
    let mut vectors = Vec::with_capacity(keys.len());
    for key in keys {
        let t = file.load_f32(&key)?;
        let t = match t.rank() {
            1 => t.unsqueeze(0)?,
            2 => t,
            r => return Err(bad(path, format!("a tensor of rank {r}"))),
        };
        let (n, width) = t.dims2()?;
        if n == 0 || n > CHUNK_LENGTH || width == 0 {
            return Err(bad(
                path,
                format!("{n} vectors of width {width} (1..={CHUNK_LENGTH} vectors)"),
            ));
        }
        let finite = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(bad(path, "values that are not finite"));
        }
        vectors.push(t);
    }
    Ok(TextualInversion { name, vectors })
}
