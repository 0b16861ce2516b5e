//! Model discovery, identification (SD1/SD2, inpaint, prediction type) and single-file
//! checkpoint conversion. No actix here.

pub mod model;
