//! Builds the real Stable Diffusion generator from the validated compute settings. The
//! device is opened on the worker thread (inside the factory), so a missing GPU fails that
//! thread's start, not the process's argument parsing.

use std::sync::Arc;

use candle_core::{DType, Device};

use super::sd::SdGenerator;
use super::{Generator, GeneratorFactory};
use crate::config::{ComputeSpec, DTypeSpec, DeviceSpec};
use crate::pipeline::kernels::cpu::isa;
use crate::pipeline::RuntimeOptions;
use crate::registry::addons::AddOnRoots;

/// Opens the device and maps the dtype; fails with a clear message on a CPU-only build asked
/// for CUDA.
pub fn runtime_options(spec: ComputeSpec) -> anyhow::Result<RuntimeOptions> {
    let kernels = isa::configure(spec.cpu_kernels).map_err(anyhow::Error::msg)?;
    log::info!(
        "CPU: {}; CPU kernels: {}",
        isa::cpu_model().describe(),
        kernels.name()
    );
    let device = match spec.device {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(|e| {
            anyhow::anyhow!(
                "cannot open CUDA device {n}: {e} (a CUDA build needs `cargo build --release --features cuda`)"
            )
        })?,
    };
    let dtype = match spec.dtype {
        DTypeSpec::F32 => DType::F32,
        DTypeSpec::F16 => DType::F16,
        DTypeSpec::Bf16 => DType::BF16,
    };
    Ok(RuntimeOptions { device, dtype })
}

/// The factory the GPU worker calls at start and after every crash.
pub fn sd_factory(
    spec: ComputeSpec,
    max_models: usize,
    max_bytes: u64,
    roots: AddOnRoots,
) -> GeneratorFactory {
    Arc::new(move || {
        let opts = runtime_options(spec)?;
        let generator =
            SdGenerator::new(opts, max_models, max_bytes).with_addon_roots(roots.clone());
        Ok(Box::new(generator) as Box<dyn Generator>)
    })
}
