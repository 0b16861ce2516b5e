//! A1111's chunking of a parsed prompt into 77-token windows: every piece is tokenized on
//! its own, tokens go into chunks of 75 with the piece's weight as multiplier, a chunk that
//! fills up with a comma among its last [`COMMA_BACKTRACK`] tokens is cut after that comma
//! (the rest moves to the next chunk), `BREAK` closes the current chunk, and a textual-
//! inversion name is replaced by as many placeholder tokens as the embedding has vectors
//! (never split across chunks). Each chunk is then wrapped as `<|startoftext|>` + 75 +
//! `<|endoftext|>`, short chunks padded with `<|endoftext|>` and everything after the first
//! `<|endoftext|>` set to the tower's pad token.

use tokenizers::Tokenizer;

use super::parse::Piece;
use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::load::tokenizer::{text_window, BOS, EOS, MAX_LENGTH};

/// Prompt tokens per chunk (77 minus start and end).
pub(crate) const CHUNK_LENGTH: usize = MAX_LENGTH - 2;
/// A1111's default "prompt word wrap length limit".
pub(crate) const COMMA_BACKTRACK: usize = 20;
/// Most characters of one prompt piece handed to the tokenizer (a prompt that long fails
/// with a clear error; its cost stays bounded whatever its length).
const PIECE_WINDOW_CHARS: usize = 1 << 16;
/// Most chunks a prompt may have (1,500 prompt tokens): bounds text-encoder and UNet cost.
pub(crate) const MAX_CHUNKS: usize = 20;

/// The special ids of one text tower's tokenizer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialIds {
    pub(crate) bos: u32,
    pub(crate) eos: u32,
    pub(crate) pad: u32,
    /// `,</w>`, for the comma backtrack (none in an odd vocabulary: no backtrack).
    pub(crate) comma: Option<u32>,
}

impl SpecialIds {
    pub(crate) fn of(tokenizer: &Tokenizer, pad: u32) -> Result<SpecialIds> {
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| PipelineError::Tokenizer(format!("vocabulary lacks {t}")))
        };
        Ok(SpecialIds {
            bos: id(BOS)?,
            eos: id(EOS)?,
            pad,
            comma: tokenizer.token_to_id(",</w>"),
        })
    }
}

/// What chunking needs to know of a textual-inversion embedding.
#[derive(Debug, Clone)]
pub(crate) struct EmbeddingName {
    /// The name's token ids (tokenized like prompt text, no specials).
    pub(crate) ids: Vec<u32>,
    /// How many vectors (placeholder tokens) it inserts.
    pub(crate) vectors: usize,
}

/// Where an embedding's vectors go in a chunk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fix {
    /// Position in the 77-token window of the first vector.
    pub(crate) position: usize,
    /// Index into the embedding list given to [`chunk_prompt`].
    pub(crate) embedding: usize,
}

/// One 77-token window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) ids: Vec<u32>,
    pub(crate) multipliers: Vec<f64>,
    pub(crate) fixes: Vec<Fix>,
}

/// A chunk being filled (prompt tokens only, no start/end).
#[derive(Default)]
struct Open {
    tokens: Vec<u32>,
    multipliers: Vec<f64>,
    fixes: Vec<Fix>,
}

struct Chunker {
    special: SpecialIds,
    chunks: Vec<Chunk>,
    current: Open,
    last_comma: Option<usize>,
}

impl Chunker {
    /// Closes the current chunk: pads to 75, wraps with start/end, pads after the first end.
    fn next_chunk(&mut self) -> Result<()> {
        let open = std::mem::take(&mut self.current);
        self.last_comma = None;
        if self.chunks.len() == MAX_CHUNKS {
            return Err(PipelineError::InvalidRequest(format!(
                "the prompt is too long: it needs more than {MAX_CHUNKS} chunks of {CHUNK_LENGTH} tokens"
            )));
        }
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(self.special.bos);
        ids.extend_from_slice(&open.tokens);
        ids.resize(MAX_LENGTH - 1, self.special.eos);
        ids.push(self.special.eos);
        if self.special.pad != self.special.eos {
            if let Some(end) = ids.iter().position(|&t| t == self.special.eos) {
                for t in &mut ids[end + 1..] {
                    *t = self.special.pad;
                }
            }
        }
        let mut multipliers = Vec::with_capacity(MAX_LENGTH);
        multipliers.push(1.0);
        multipliers.extend_from_slice(&open.multipliers);
        multipliers.resize(MAX_LENGTH, 1.0);
        let fixes = open
            .fixes
            .into_iter()
            .map(|f| Fix {
                position: f.position + 1,
                embedding: f.embedding,
            })
            .collect();
        self.chunks.push(Chunk {
            ids,
            multipliers,
            fixes,
        });
        Ok(())
    }
}

/// The longest embedding whose name's ids start at `tokens[at..]`: (index, name length).
fn embedding_at(names: &[EmbeddingName], tokens: &[u32], at: usize) -> Option<(usize, usize)> {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.ids.is_empty() && tokens[at..].starts_with(&n.ids))
        .max_by_key(|(_, n)| n.ids.len())
        .map(|(i, n)| (i, n.ids.len()))
}

/// Tokenizes one piece of prompt text (no start/end tokens, no truncation).
pub(crate) fn tokenize(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, false)
        .map_err(|e| PipelineError::Tokenizer(e.to_string()))?
        .get_ids()
        .to_vec())
}

/// Chunks `pieces` (from [`super::parse`]) as A1111's `tokenize_line` does. Returns at least
/// one chunk.
pub(crate) fn chunk_prompt(
    tokenizer: &Tokenizer,
    special: SpecialIds,
    pieces: &[Piece],
    names: &[EmbeddingName],
) -> Result<Vec<Chunk>> {
    let mut c = Chunker {
        special,
        chunks: Vec::new(),
        current: Open::default(),
        last_comma: None,
    };
    for piece in pieces {
        if piece.is_break() {
            c.next_chunk()?;
            continue;
        }
        // Tokenize no more than can fit: one word is at least one token, so a piece with
        // more words than the chunks left can hold fails below whatever its tail says.
        let room = (MAX_CHUNKS - c.chunks.len()) * CHUNK_LENGTH;
        let (text, truncated) = text_window(&piece.text, room + 1, PIECE_WINDOW_CHARS);
        let tokens = tokenize(tokenizer, text)?;
        let mut at = 0;
        while at < tokens.len() {
            let token = tokens[at];
            let len = c.current.tokens.len();
            if Some(token) == special.comma {
                c.last_comma = Some(len);
            } else if let Some(comma) = c.last_comma.filter(|&comma| {
                COMMA_BACKTRACK != 0 && len == CHUNK_LENGTH && len - comma <= COMMA_BACKTRACK
            }) {
                let cut = comma + 1;
                let tokens = c.current.tokens.split_off(cut);
                let multipliers = c.current.multipliers.split_off(cut);
                c.next_chunk()?;
                c.current.tokens = tokens;
                c.current.multipliers = multipliers;
            }
            if c.current.tokens.len() == CHUNK_LENGTH {
                c.next_chunk()?;
            }
            match embedding_at(names, &tokens, at) {
                None => {
                    c.current.tokens.push(token);
                    c.current.multipliers.push(piece.weight);
                    at += 1;
                }
                Some((index, name_len)) => {
                    let vectors = names[index].vectors;
                    if c.current.tokens.len() + vectors > CHUNK_LENGTH {
                        c.next_chunk()?;
                    }
                    c.current.fixes.push(Fix {
                        position: c.current.tokens.len(),
                        embedding: index,
                    });
                    let n = c.current.tokens.len() + vectors;
                    c.current.tokens.resize(n, 0);
                    c.current.multipliers.resize(n, piece.weight);
                    at += name_len;
                }
            }
        }
        if truncated {
            return Err(PipelineError::InvalidRequest(format!(
                "the prompt is too long: more than {MAX_CHUNKS} chunks of {CHUNK_LENGTH} tokens \
                 or a part over {PIECE_WINDOW_CHARS} characters"
            )));
        }
    }
    if !c.current.tokens.is_empty() || c.chunks.is_empty() {
        c.next_chunk()?;
    }
    Ok(c.chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::load::tokenizer::load_tokenizer_dir;
    use crate::pipeline::prompt::parse::parse_prompt_attention;

    fn chunks(prompt: &str) -> Result<Vec<Chunk>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tiny-sd1/tokenizer");
        let (tokenizer, pad) = load_tokenizer_dir(&dir)?;
        let special = SpecialIds::of(&tokenizer, pad)?;
        chunk_prompt(&tokenizer, special, &parse_prompt_attention(prompt), &[])
    }

    fn too_long(prompt: &str) -> bool {
        matches!(chunks(prompt), Err(PipelineError::InvalidRequest(m)) if m.contains("too long"))
    }

    #[test]
    fn the_longest_prompt_that_fits_is_chunked_whole() {
        let words = MAX_CHUNKS * CHUNK_LENGTH;
        let all = chunks(&"fox ".repeat(words)).unwrap();
        assert_eq!(all.len(), MAX_CHUNKS);
        assert!(too_long(&"fox ".repeat(words + 1)));
    }

    #[test]
    fn huge_prompts_are_refused_after_a_bounded_read() {
        // Millions of words (cut after the words that can fit) and one endless word (cut at
        // the character window): both refused, neither tokenized whole.
        assert!(too_long(&"a fox ".repeat(2_000_000)));
        assert!(too_long(&"x".repeat(5_000_000)));
        assert!(too_long(&format!("{} (tail:1.2)", "x".repeat(5_000_000))));
    }
}
