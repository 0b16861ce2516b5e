//! LoRAs: reading kohya / PEFT files (`file`) and merging them into a model's UNet and text
//! encoder weights as the modules are built (`patch`; kohya's SGM names of SDXL UNet
//! layers through `sgm`). [`StableDiffusion::with_loras`] builds
//! a second model from the loaded one's weight sources with the LoRAs merged; the loaded
//! model itself is never changed, so the next request without LoRAs is exactly the plain
//! model's.

pub(crate) mod file;
pub(crate) mod patch;
pub(crate) mod sgm;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use file::Component;
pub(crate) use file::{read_lora, LoraFile};
use patch::{patched, Patch};

use super::error::{PipelineError, Result};
use super::load::config::UNetConfig;
use super::load::model_parts::ModelParts;
use super::options::RuntimeOptions;
use super::StableDiffusion;

/// A LoRA to merge: the parsed file and its multipliers.
pub(crate) struct AppliedLora {
    pub(crate) file: Arc<LoraFile>,
    pub(crate) text_multiplier: f64,
    pub(crate) unet_multiplier: f64,
}

/// Builds the model of `parts` with `loras` merged into the UNet and text-encoder
/// weights. Errors name a LoRA that matches no layer of this model (another family's).
pub(crate) fn with_loras(
    parts: &ModelParts,
    loras: &[AppliedLora],
    opts: &RuntimeOptions,
) -> Result<StableDiffusion> {
    let two_towers = parts.xl.is_some();
    if let Some(l) = loras.iter().find(|l| {
        !two_towers
            && l.file
                .modules
                .keys()
                .any(|(c, _)| *c == Component::TextEncoder2)
    }) {
        return Err(PipelineError::InvalidRequest(format!(
            "LoRA {} is for a model with two text encoders (SDXL); this model has one",
            l.file.name
        )));
    }
    let used = Arc::new(Mutex::new(BTreeSet::new()));
    let layers = UNetConfig::from_json(&parts.unet_config)?.layers_per_block;
    let patch = |component, unet: bool| Patch {
        component,
        loras: loras
            .iter()
            .map(|l| {
                let m = if unet {
                    l.unet_multiplier
                } else {
                    l.text_multiplier
                };
                (l.file.clone(), m)
            })
            .collect(),
        used: used.clone(),
        sgm_layers: unet.then(|| layers.clone()),
    };
    let mut merged = parts.clone();
    merged.unet = patched(&parts.unet, patch(Component::Unet, true));
    merged.text_encoder = patched(&parts.text_encoder, patch(Component::TextEncoder, false));
    if let (Some(xl), Some(base)) = (merged.xl.as_mut(), parts.xl.as_ref()) {
        xl.text_encoder_2 = patched(&base.text_encoder_2, patch(Component::TextEncoder2, false));
    }
    let model = StableDiffusion::from_parts(merged, opts)?;
    let used = used
        .lock()
        .map_err(|_| PipelineError::Config("LoRA bookkeeping poisoned".into()))?;
    for (index, lora) in loras.iter().enumerate() {
        let hits = used.iter().filter(|(i, _)| *i == index).count();
        if hits == 0 {
            return Err(PipelineError::InvalidRequest(format!(
                "LoRA {} matches no layer of this model (made for another model family?)",
                lora.file.name
            )));
        }
        let total = lora.file.modules.len();
        if hits < total {
            log::warn!(
                "LoRA {}: {} of {total} modules match no layer of this model",
                lora.file.name,
                total - hits
            );
        }
    }
    Ok(model)
}
