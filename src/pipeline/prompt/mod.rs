//! AUTOMATIC1111's prompt language: attention weights and `BREAK` (`parse`), 75-token chunks
//! with comma backtracking and textual-inversion placeholders (`chunk`), encoding the chunks
//! with one or more CLIP towers with "Original" emphasis (`encode`), and extra-network tags
//! such as `<lora:NAME:0.8>` (`tags`). Plain Rust on top of the text encoder.

pub(crate) mod chunk;
pub(crate) mod encode;
pub mod parse;
pub mod tags;

/// How a request's prompt text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptSyntax {
    /// The text goes to CLIP as written, cut at 75 tokens (diffusers' behaviour).
    #[default]
    Literal,
    /// A1111's syntax. `pad_cond_uncond`: when prompt and negative prompt have different
    /// chunk counts, pad the shorter with the empty prompt's chunk and run them as one UNet
    /// batch (A1111's option "Pad prompt/negative prompt"); off (A1111's default), the UNet
    /// runs them as two calls with their own context lengths.
    A1111 { pad_cond_uncond: bool },
}
