//! Reading models from disk: diffusers folders (`loader`), the weights in them (`weights`:
//! safetensors, `pickle`: PyTorch checkpoints read by our bounded reader), the component
//! configs (`config`), the tokenizer, and the set of parts a model is built from.

pub mod config;
pub mod loader;
pub mod model_parts;
pub(crate) mod pickle;
pub mod tokenizer;
pub(crate) mod weights;
