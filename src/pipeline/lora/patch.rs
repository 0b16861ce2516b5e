//! Merging LoRAs into weights as they are read: a VarBuilder backend over a model
//! component's own weights that returns `W + sum multiplier * delta` for every weight a
//! LoRA module adapts (matched by module path, `.` written as `_`; UNet modules also by
//! their SGM path, see sgm.rs), and `W` unchanged otherwise. It records which modules were
//! used, so a LoRA that matches no layer is reported. The base weights are never modified: a
//! model built from the plain backend is the plain model.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::file::{Component, LoraFile};
use super::sgm::sgm_paths;

/// The LoRAs to merge into one component, with their multipliers.
pub(crate) struct Patch {
    pub(crate) component: Component,
    pub(crate) loras: Vec<(Arc<LoraFile>, f64)>,
    /// (lora index, module as the file names it) pairs that were merged.
    pub(crate) used: Arc<Mutex<BTreeSet<(usize, String)>>>,
    /// For the UNet: its `layers_per_block` per level, to also match modules by their
    /// SGM / LDM names (kohya's SDXL LoRAs); None for the text encoders.
    pub(crate) sgm_layers: Option<Vec<usize>>,
}

struct PatchedBackend {
    base: VarBuilder<'static>,
    patch: Patch,
}

impl PatchedBackend {
    fn patched(&self, name: &str, w: Tensor) -> candle_core::Result<Tensor> {
        let Some(module) = name.strip_suffix(".weight") else {
            return Ok(w);
        };
        let component = self.patch.component;
        let key = (component, module.replace('.', "_"));
        // The same layer under its SGM names, computed only when some LoRA lacks the
        // diffusers name.
        let mut aliases: Option<Vec<(Component, String)>> = None;
        let mut merged: Option<Tensor> = None;
        for (index, (lora, multiplier)) in self.patch.loras.iter().enumerate() {
            let found = match lora.modules.get_key_value(&key) {
                Some(hit) => Some(hit),
                None => {
                    let aliases = aliases.get_or_insert_with(|| match &self.patch.sgm_layers {
                        Some(layers) => sgm_paths(module, layers)
                            .into_iter()
                            .map(|p| (component, p.replace('.', "_")))
                            .collect(),
                        None => Vec::new(),
                    });
                    aliases.iter().find_map(|a| lora.modules.get_key_value(a))
                }
            };
            let Some(((_, file_module), m)) = found else {
                continue;
            };
            let delta = m
                .delta(w.dims())
                .map_err(|e| candle_core::Error::Msg(format!("{module}: {e}")))?;
            let acc = match merged.take() {
                Some(t) => t,
                None => w.to_dtype(DType::F32)?,
            };
            merged = Some((acc + (delta * *multiplier)?)?);
            if let Ok(mut used) = self.patch.used.lock() {
                used.insert((index, file_module.clone()));
            }
        }
        match merged {
            Some(t) => t.to_dtype(w.dtype()),
            None => Ok(w),
        }
    }
}

impl SimpleBackend for PatchedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let w = self.base.get_with_hints_dtype(s, name, h, dtype)?;
        self.patched(name, w)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let w = self.base.get_unchecked_dtype(name, dtype)?;
        self.patched(name, w)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.contains_tensor(name)
    }
}

/// `base` with `patch` merged into the weights it serves.
pub(crate) fn patched(base: &VarBuilder<'static>, patch: Patch) -> VarBuilder<'static> {
    let dtype = base.dtype();
    let device = base.device().clone();
    VarBuilder::from_backend(
        Box::new(PatchedBackend {
            base: base.clone(),
            patch,
        }),
        dtype,
        device,
    )
}
