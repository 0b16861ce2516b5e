//! Reading a LoRA file: kohya-ss / AUTOMATIC1111 keys (`lora_unet_<module>`,
//! `lora_te_<module>`, `lora_te1_`/`lora_te2_` for SDXL, each with `lora_down.weight`,
//! `lora_up.weight`, optional `alpha` and `lora_mid.weight`) and diffusers / PEFT keys
//! (`unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder.`, `text_encoder_2.`).
//! Every module becomes a low-rank [`LoraModule`] addressed by its component and its module
//! path with `.` written as `_` (kohya's spelling). Shapes are checked; values are not used
//! until a module is merged.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::tensor_file::TensorFile;

/// Largest LoRA file read (real ones are up to a few hundred MiB; SDXL LyCORIS ~1.7 GiB).
pub(crate) const MAX_LORA_BYTES: u64 = 4 << 30;

/// Which network a module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Component {
    Unet,
    /// The (first) text encoder.
    TextEncoder,
    /// SDXL's second text encoder.
    TextEncoder2,
}

/// One adapted layer: `delta = (alpha / rank) * up @ [mid] @ down`, reshaped to the weight.
#[derive(Debug, Clone)]
pub(crate) struct LoraModule {
    /// `[rank, in, k, k]` or `[rank, in]`.
    pub(crate) down: Tensor,
    /// `[out, rank, 1, 1]` or `[out, rank]`.
    pub(crate) up: Tensor,
    /// Tucker core `[rank, rank, k, k]` (LoCon `lora_mid`).
    pub(crate) mid: Option<Tensor>,
    /// `alpha / rank` (1 when the file has no alpha).
    pub(crate) scale: f64,
}

/// A parsed LoRA file.
#[derive(Debug, Clone)]
pub(crate) struct LoraFile {
    pub(crate) name: String,
    /// By (component, module path with `_` for `.`).
    pub(crate) modules: BTreeMap<(Component, String), LoraModule>,
}

fn bad(name: &str, why: impl std::fmt::Display) -> PipelineError {
    PipelineError::InvalidRequest(format!("LoRA {name}: {why}"))
}

/// (component, module, part) of a key, or None for keys that are not LoRA weights.
fn split_key(key: &str) -> Option<(Component, String, &str)> {
    const KOHYA: [(&str, Component); 4] = [
        ("lora_unet_", Component::Unet),
        ("lora_te1_", Component::TextEncoder),
        ("lora_te2_", Component::TextEncoder2),
        ("lora_te_", Component::TextEncoder),
    ];
    for (prefix, component) in KOHYA {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (module, part) = rest.split_once('.')?;
            return Some((component, module.to_owned(), part));
        }
    }
    const PEFT: [(&str, Component); 3] = [
        ("unet.", Component::Unet),
        ("text_encoder_2.", Component::TextEncoder2),
        ("text_encoder.", Component::TextEncoder),
    ];
    for (prefix, component) in PEFT {
        if let Some(rest) = key.strip_prefix(prefix) {
            for part in ["lora_A.weight", "lora_B.weight", "alpha"] {
                if let Some(module) = rest.strip_suffix(part).and_then(|m| m.strip_suffix('.')) {
                    return Some((component, module.replace('.', "_"), part));
                }
            }
        }
    }
    None
}

/// Parts of one module as found in the file.
#[derive(Default)]
struct Parts {
    down: Option<String>,
    up: Option<String>,
    mid: Option<String>,
    alpha: Option<String>,
}

/// Reads the LoRA at `path` under the name `name` (for messages).
pub(crate) fn read_lora(path: &Path, name: &str) -> Result<LoraFile> {
    let file = TensorFile::open(path, MAX_LORA_BYTES)
        .map_err(|e| bad(name, format!("cannot be read: {e}")))?;
    let mut grouped: BTreeMap<(Component, String), Parts> = BTreeMap::new();
    for (key, _) in file.shapes() {
        let Some((component, module, part)) = split_key(&key) else {
            continue;
        };
        let parts = grouped.entry((component, module)).or_default();
        let slot = match part {
            "lora_down.weight" | "lora_A.weight" => &mut parts.down,
            "lora_up.weight" | "lora_B.weight" => &mut parts.up,
            "lora_mid.weight" => &mut parts.mid,
            "alpha" => &mut parts.alpha,
            _ => continue,
        };
        *slot = Some(key);
    }
    if grouped.is_empty() {
        return Err(bad(
            name,
            "no LoRA weights in the file (kohya or PEFT keys)",
        ));
    }
    let mut modules = BTreeMap::new();
    for ((component, module), parts) in grouped {
        let (Some(down), Some(up)) = (&parts.down, &parts.up) else {
            return Err(bad(
                name,
                format!("module {module} lacks its down or up weight"),
            ));
        };
        let down = file.load_f32(down)?;
        let up = file.load_f32(up)?;
        let rank = *down.dims().first().unwrap_or(&0);
        let up_rank = *up.dims().get(1).unwrap_or(&0);
        let shapes_ok = matches!(down.rank(), 2 | 4)
            && up.rank() == down.rank()
            && rank > 0
            && (parts.mid.is_some() || up_rank == rank)
            && up.dims()[2..].iter().all(|&d| d == 1);
        if !shapes_ok {
            return Err(bad(
                name,
                format!(
                    "module {module}: down {:?} and up {:?} do not fit",
                    down.dims(),
                    up.dims()
                ),
            ));
        }
        let mid = match &parts.mid {
            Some(key) => {
                let mid = file.load_f32(key)?;
                let ok = mid.rank() == 4
                    && mid.dims()[0] == up_rank
                    && mid.dims()[1] == rank
                    && down.rank() == 4;
                if !ok {
                    return Err(bad(
                        name,
                        format!("module {module}: lora_mid {:?}", mid.dims()),
                    ));
                }
                Some(mid)
            }
            None => None,
        };
        let alpha = match &parts.alpha {
            Some(key) => file
                .load_f32(key)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .first()
                .copied(),
            None => None,
        };
        let scale = match alpha {
            Some(a) if a.is_finite() => f64::from(a) / rank as f64,
            Some(_) => return Err(bad(name, format!("module {module}: alpha is not finite"))),
            None => 1.0,
        };
        modules.insert(
            (component, module),
            LoraModule {
                down,
                up,
                mid,
                scale,
            },
        );
    }
    Ok(LoraFile {
        name: name.to_owned(),
        modules,
    })
}

impl LoraModule {
    /// `scale * up @ [mid] @ down` in the shape `shape` of the adapted weight (f32).
    pub(crate) fn delta(&self, shape: &[usize]) -> Result<Tensor> {
        let up = self.up.flatten_from(1)?;
        let delta = match &self.mid {
            None => up.matmul(&self.down.flatten_from(1)?)?,
            Some(mid) => {
                // delta[o, i, y, x] = sum_n,m up[o, n] mid[n, m, y, x] down[m, i]
                let (r1, r2, kh, kw) = mid.dims4()?;
                let down = self.down.flatten_from(1)?; // [r2, in] for a 1x1-style down
                let core = mid.permute((2, 3, 0, 1))?.reshape((kh * kw, r1, r2))?;
                let per_tap = up
                    .unsqueeze(0)?
                    .repeat((kh * kw, 1, 1))?
                    .matmul(&core)?
                    .matmul(&down.unsqueeze(0)?.repeat((kh * kw, 1, 1))?)?;
                let (_, out, inp) = per_tap.dims3()?;
                per_tap
                    .reshape((kh, kw, out, inp))?
                    .permute((2, 3, 0, 1))?
                    .contiguous()?
                    .flatten_from(1)?
            }
        };
        let n: usize = shape.iter().product();
        if delta.elem_count() != n {
            return Err(PipelineError::InvalidRequest(format!(
                "a LoRA module of {:?} does not fit a layer of shape {shape:?}",
                delta.dims()
            )));
        }
        Ok((delta.reshape(shape)? * self.scale)?)
    }
}
