//! The pipeline's error type: everything that can go wrong loading or running a model.
//! Never carries prompt text or image data (errors may be logged or sent to clients).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Weights(#[from] super::load::weights::WeightsError),
    #[error("PyTorch weights: {0}")]
    Pickle(#[from] super::load::pickle::PickleError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("model folder {0} lacks {1}")]
    MissingFile(PathBuf, String),
    #[error("unsupported or invalid model config: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("cancelled")]
    Cancelled,
}

pub(crate) type Result<T> = std::result::Result<T, PipelineError>;
