//! The CLIP BPE tokenizer for single-file checkpoints (which carry none): a `tokenizer.json`
//! beside the checkpoint if the administrator placed one, else the standard CLIP tokenizer
//! compiled into the binary, so runai works offline. Never downloads anything.

use std::path::{Path, PathBuf};

use tokenizers::{AddedToken, Tokenizer};

use super::model::ModelVersion;

/// The standard CLIP tokenizer (open_clip's `bpe_simple_vocab_16e6`, as Hugging Face ships
/// it with every SD1/SD2 pipeline).
static EMBEDDED_CLIP_TOKENIZER: &[u8] = include_bytes!("../../assets/clip_tokenizer.json");

const EOS: &str = "<|endoftext|>";
/// SD2 pads with `!` (id 0) and, like transformers, treats it as a special token.
const SD2_PAD: &str = "!";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("tokenizer {path} has no {token:?} token")]
    MissingToken { path: String, token: String },
}

/// Files checked beside `checkpoint`, in order: `<stem>.tokenizer.json`, `tokenizer.json`.
fn candidates(checkpoint: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let (Some(dir), Some(stem)) = (checkpoint.parent(), checkpoint.file_stem()) {
        let mut name = stem.to_os_string();
        name.push(".tokenizer.json");
        out.push(dir.join(name));
        out.push(dir.join("tokenizer.json"));
    }
    out
}

/// The tokenizer for a single-file checkpoint of `version`, and its pad token id.
pub(crate) fn single_file_tokenizer(
    checkpoint: &Path,
    version: ModelVersion,
) -> Result<(Tokenizer, u32), TokenizerError> {
    let (tokenizer, origin) = match candidates(checkpoint).into_iter().find(|p| p.is_file()) {
        Some(path) => {
            // Named by file name only; the parser's message could quote the file.
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let t = Tokenizer::from_file(&path).map_err(|_| TokenizerError::Load {
                path: name.clone(),
                reason: "not a valid tokenizer.json".to_string(),
            })?;
            (t, name)
        }
        None => (embedded_tokenizer()?, "embedded CLIP tokenizer".to_string()),
    };
    with_pad_convention(tokenizer, version, &origin)
}

pub fn embedded_tokenizer() -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_bytes(EMBEDDED_CLIP_TOKENIZER).map_err(|e| TokenizerError::Load {
        path: "embedded CLIP tokenizer".into(),
        reason: e.to_string(),
    })
}

/// Applies the family's pad convention: SD1 pads with `<|endoftext|>`, SD2 with a special `!`.
pub fn with_pad_convention(
    mut tokenizer: Tokenizer,
    version: ModelVersion,
    origin: &str,
) -> Result<(Tokenizer, u32), TokenizerError> {
    let pad = match version {
        // SDXL's first tokenizer pads like SD1 (its second like SD2).
        ModelVersion::V1 | ModelVersion::Xl => EOS,
        ModelVersion::V2 => {
            tokenizer.add_special_tokens(&[AddedToken::from(SD2_PAD, true)]);
            SD2_PAD
        }
    };
    let id = tokenizer
        .token_to_id(pad)
        .ok_or_else(|| TokenizerError::MissingToken {
            path: origin.to_string(),
            token: pad.to_string(),
        })?;
    Ok((tokenizer, id))
}
