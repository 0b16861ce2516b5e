//! Hand-written compute kernels, by device. Only the CPU has its own today; on CUDA candle's
//! ops (and cuDNN / flash attention when built in) do the work.

pub(crate) mod cpu;
