//! Model discovery, identification (SD1/SD2/SDXL, inpaint, prediction type) and single-file
//! checkpoint conversion. No actix here.
//!
//! - [`catalog::Registry`]: scans the roots, identifies models, resolves client names with path
//!   confinement ([`paths`]).
//! - [`single_file`]: LDM `.safetensors` / `.ckpt` checkpoints as diffusers-named
//!   [`crate::pipeline::load::model_parts::ModelParts`] ([`tensors`], [`ldm_shapes`], [`ldm_keys`],
//!   [`ldm_config`], [`ldm_yaml`], [`tokenizer`]; SDXL's SGM layout: [`sgm`]).
//! - [`resolver`]: the `ModelResolver` seam the registry actor drives, and `ResolveError`.
//! - [`convert`]: writes a diffusers folder from a single file, on explicit request only.
//! - [`addons`]: LoRA and embedding folders: confined name lookup and listing.
//! - [`cache`]: the LRU of loaded models used by the worker.
//! - [`guard`]: contains a panic in per-file work so one bad file costs only itself.
//!
//! Rules an operator can rely on:
//! - Any folder layout works under a root: the seed's (`runwayml/stable-diffusion-v1-5`,
//!   `v1/`, `v2/`, ...) and AUTOMATIC1111's flat `models/Stable-diffusion` alike. A model's
//!   name is its path relative to its root.
//! - SD1/SD2/SDXL, txt2img/inpaint and the prediction type come from the weights and configs,
//!   never from names. A single file's architecture numbers come from its tensor shapes plus the
//!   `.yaml` beside it (`model.yaml` for `model.safetensors`) when present, else from the
//!   standard SD1.5 / SD2.1 configs; `parameterization: "v"` in that yaml means
//!   v-prediction, and without a yaml a single file is an epsilon model.
//! - SDXL base models and fine-tunes are served (folders and SGM single files); the SDXL
//!   refiner and other architectures are listed nowhere and answered with a clear error.
//! - Clients' paths are confined lexically to the roots; links placed inside a root by the
//!   administrator are followed. Model files are only read, and `.ckpt` pickles only parsed.

pub mod addons;
pub(crate) mod cache;
pub(crate) mod catalog;
pub mod convert;
pub(crate) mod guard;
pub mod identify;
pub(crate) mod ldm_config;
pub mod ldm_keys;
pub(crate) mod ldm_shapes;
pub(crate) mod ldm_yaml;
pub mod loader;
pub mod model;
pub(crate) mod paths;
pub(crate) mod resolver;
pub(crate) mod scan;
pub(crate) mod sgm;
pub mod single_file;
pub(crate) mod tensors;
pub mod tokenizer;
pub(crate) mod weights;

pub use catalog::{Registry, ScanReport};
pub use resolver::{ModelResolver, ResolveError};
