//! Model discovery, identification (SD1/SD2, inpaint, prediction type) and single-file
//! checkpoint conversion. No actix here.

pub mod identify;
pub mod ldm_config;
pub mod ldm_keys;
pub mod ldm_shapes;
pub mod ldm_yaml;
pub mod model;
pub mod single_file;
pub mod tensors;
pub mod tokenizer;
