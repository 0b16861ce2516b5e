//! CLIP BPE tokenizer loading (from `tokenizer.json`, or from `vocab.json` + `merges.txt`
//! configured exactly like the CLIP tokenizer.json) and prompt -> 77 ids as diffusers feeds
//! the text encoder. Never logs prompt text.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::pipeline::error::{PipelineError, Result};

pub(crate) const BOS: &str = "<|startoftext|>";
pub(crate) const EOS: &str = "<|endoftext|>";
/// CLIP's context length.
pub const MAX_LENGTH: usize = 77;

/// Most characters of a prompt ever handed to the tokenizer, so its cost is bounded whatever
/// the prompt's length (see [`tokenize_window`]).
pub const WINDOW_CHARS: usize = 8192;

/// The CLIP pre-tokenization pattern (contractions, letter runs, single digits, other symbols).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn tok_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Tokenizer(e.to_string())
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| PipelineError::Json {
            path: path.to_owned(),
            source,
        })
}

/// The pad token a tokenizer folder declares (`special_tokens_map.json`, else
/// `tokenizer_config.json`), as a string; `<|endoftext|>` when neither says.
pub(crate) fn declared_pad_token(dir: &Path) -> Result<String> {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        if let Some(doc) = read_json(&dir.join(name))? {
            let pad = doc.get("pad_token");
            let text = pad
                .and_then(|p| p.as_str())
                .or_else(|| pad.and_then(|p| p.get("content")).and_then(|c| c.as_str()));
            if let Some(t) = text {
                return Ok(t.to_owned());
            }
        }
    }
    Ok(EOS.to_owned())
}

/// Builds the CLIP tokenizer from `vocab.json` + `merges.txt`, equivalent to the
/// `tokenizer.json` transformers writes for CLIPTokenizerFast. `pad_token` becomes a special
/// added token as transformers makes it (SD2's `!`).
pub fn from_vocab_merges(vocab: &Path, merges: &Path, pad_token: &str) -> Result<Tokenizer> {
    let vocab_s = vocab
        .to_str()
        .ok_or_else(|| tok_err("non UTF-8 vocab path"))?;
    let merges_s = merges
        .to_str()
        .ok_or_else(|| tok_err("non UTF-8 merges path"))?;
    let bpe = BPE::from_file(vocab_s, merges_s)
        .unk_token(EOS.to_owned())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".to_owned())
        .build()
        .map_err(tok_err)?;
    let bos_id = bpe_id(&bpe, BOS)?;
    let eos_id = bpe_id(&bpe, EOS)?;
    let mut tokenizer = Tokenizer::new(bpe);
    let normalizer = NormSequence::new(vec![
        NFC.into(),
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(tok_err)?
        .into(),
        Lowercase.into(),
    ]);
    tokenizer.with_normalizer(Some(normalizer));
    let split = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(tok_err)?;
    let pre = PreSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]);
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_post_processor(Some(
        RobertaProcessing::new((EOS.to_owned(), eos_id), (BOS.to_owned(), bos_id))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    tokenizer.with_decoder(Some(ByteLevel::new(true, true, true)));
    let mut special = vec![
        AddedToken::from(BOS, true).normalized(false),
        AddedToken::from(EOS, true).normalized(false),
    ];
    if pad_token != BOS && pad_token != EOS {
        special.push(AddedToken::from(pad_token.to_owned(), true).normalized(false));
    }
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

fn bpe_id(bpe: &BPE, token: &str) -> Result<u32> {
    use tokenizers::Model;
    bpe.token_to_id(token)
        .ok_or_else(|| tok_err(format!("vocabulary lacks {token}")))
}

/// Loads a diffusers `tokenizer/` folder: `tokenizer.json` when present, else
/// `vocab.json` + `merges.txt`. Returns the tokenizer and its pad token id.
pub fn load_tokenizer_dir(dir: &Path) -> Result<(Tokenizer, u32)> {
    let pad = declared_pad_token(dir)?;
    let json = dir.join("tokenizer.json");
    let tokenizer = if json.is_file() {
        Tokenizer::from_file(&json).map_err(tok_err)?
    } else {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        if !vocab.is_file() || !merges.is_file() {
            return Err(PipelineError::MissingFile(
                dir.to_owned(),
                "tokenizer.json or vocab.json + merges.txt".into(),
            ));
        }
        from_vocab_merges(&vocab, &merges, &pad)?
    };
    let pad_id = tokenizer
        .token_to_id(&pad)
        .ok_or_else(|| tok_err(format!("pad token {pad:?} is not in the vocabulary")))?;
    Ok((tokenizer, pad_id))
}

/// Prompt -> exactly 77 ids as diffusers' pipelines build them: `<|startoftext|>`, at most
/// 75 prompt tokens, `<|endoftext|>`, then `pad_id` up to 77.
pub fn prompt_ids(tokenizer: &Tokenizer, prompt: &str, pad_id: u32) -> Result<Vec<u32>> {
    let bos = tokenizer
        .token_to_id(BOS)
        .ok_or_else(|| tok_err("vocabulary lacks <|startoftext|>"))?;
    let eos = tokenizer
        .token_to_id(EOS)
        .ok_or_else(|| tok_err("vocabulary lacks <|endoftext|>"))?;
    let enc = tokenizer
        .encode(tokenize_window(prompt), false)
        .map_err(tok_err)?;
    let body = enc.get_ids();
    let keep = body.len().min(MAX_LENGTH - 2);
    let mut ids = Vec::with_capacity(MAX_LENGTH);
    ids.push(bos);
    ids.extend_from_slice(&body[..keep]);
    ids.push(eos);
    ids.resize(MAX_LENGTH, pad_id);
    Ok(ids)
}

/// The start of `prompt` that decides its first 75 tokens, at most [`WINDOW_CHARS`]
/// characters, so tokenizing never costs more than that.
///
/// The cut is made only at ASCII whitespace, which CLIP's normalizer and pre-tokenizer treat
/// as a hard boundary: no pre-token spans it, so the tokens before the cut are exactly the
/// first tokens of the whole prompt. Every whitespace-separated word yields at least one
/// token, so cutting after [`MAX_LENGTH`] words keeps every token CLIP uses. Prompts shorter
/// than the window are returned whole; only a prompt whose first 75 tokens do not fit in
/// [`WINDOW_CHARS`] characters (no real prompt) can tokenize differently.
pub fn tokenize_window(prompt: &str) -> &str {
    text_window(prompt, MAX_LENGTH, WINDOW_CHARS).0
}

/// The start of `text` holding its first `max_words` whitespace-separated words (so at least
/// that many tokens), cut at ASCII whitespace, and at most `max_chars` characters (cut at the
/// last whitespace before, else mid-word); true when something was cut off.
pub(crate) fn text_window(text: &str, max_words: usize, max_chars: usize) -> (&str, bool) {
    let mut words = 0;
    let mut in_word = false;
    let mut last_cut = None;
    for (n, (i, c)) in text.char_indices().enumerate() {
        if n == max_chars {
            return (&text[..last_cut.unwrap_or(i)], true);
        }
        if c.is_whitespace() {
            if in_word {
                words += 1;
            }
            in_word = false;
            if c.is_ascii_whitespace() {
                if words >= max_words {
                    return (&text[..i], !text[i..].trim().is_empty());
                }
                last_cut = Some(i);
            }
        } else {
            in_word = true;
        }
    }
    (text, false)
}
