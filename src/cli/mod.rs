pub mod convert;
pub mod replay;
