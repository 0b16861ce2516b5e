//! Where and in which precision models run. Chosen once at start-up; never changed per request.

use candle_core::{DType, Device};

/// Device and weight dtype for the UNet and text encoder. The VAE runs in f32 whenever its
/// config asks for upcasting (every SD VAE does: f16 overflows in its decoder).
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub device: Device,
    pub dtype: DType,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}
