//! Model discovery, identification (SD1/SD2, inpaint, prediction type) and single-file
//! checkpoint conversion. No actix here.
//!
//! - [`catalog::Registry`]: scans the roots, identifies models, resolves client names with path
//!   confinement ([`paths`]).
//! - [`single_file`]: LDM `.safetensors` / `.ckpt` checkpoints as diffusers-named
//!   [`crate::pipeline::model_parts::ModelParts`] ([`tensors`], [`ldm_shapes`], [`ldm_keys`],
//!   [`ldm_config`], [`ldm_yaml`], [`tokenizer`]).
//! - [`convert`]: writes a diffusers folder from a single file, on explicit request only.
//! - [`cache`]: the LRU of loaded models used by the worker.

pub mod cache;
pub mod catalog;
pub mod convert;
pub mod identify;
pub mod ldm_config;
pub mod ldm_keys;
pub mod ldm_shapes;
pub mod ldm_yaml;
pub mod loader;
pub mod model;
pub mod paths;
pub mod scan;
pub mod single_file;
pub mod tensors;
pub mod tokenizer;
pub mod weights;

pub use catalog::{Registry, ResolveError, ScanReport};
