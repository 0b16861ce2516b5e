//! Reading models from disk: diffusers folders (`loader`), the weights in them (`weights`:
//! safetensors, `pickle`: PyTorch checkpoints read by our bounded reader), the component
//! configs (`config`), the tokenizer, and the set of parts a model is built from; the add-on
//! files (`tensor_file`): textual-inversion embeddings (`embedding`) and LoRAs.

pub mod config;
pub(crate) mod embedding;
pub mod loader;
pub mod model_parts;
pub(crate) mod pickle;
pub(crate) mod tensor_file;
pub mod tokenizer;
pub(crate) mod weights;
