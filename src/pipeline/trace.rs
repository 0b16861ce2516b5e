//! Optional recorder of named intermediate tensors (prompt_embeds, unet_out_0, final_latents,
//! ...) for golden replays and debugging. Off by default; the pipeline never reads it back.

use candle_core::{DType, Device, Tensor};

use super::error::Result;

/// Named f32 CPU copies of intermediates, in recording order.
#[derive(Default)]
pub struct Trace {
    entries: Vec<(String, Tensor)>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    /// Stores an f32 CPU copy under `name`, replacing an earlier one of the same name.
    pub(crate) fn record(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        let copy = tensor.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        self.entries.retain(|(n, _)| n != name);
        self.entries.push((name.to_owned(), copy));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Records into `trace` when one is attached.
pub(crate) fn record(trace: &mut Option<&mut Trace>, name: &str, t: &Tensor) -> Result<()> {
    match trace {
        Some(tr) => tr.record(name, t),
        None => Ok(()),
    }
}
