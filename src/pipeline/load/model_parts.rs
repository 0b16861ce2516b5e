//! The neutral hand-over between "where the weights come from" (a diffusers folder, or a
//! single-file checkpoint converted by the registry) and the pipeline that builds modules.

use candle_nn::VarBuilder;

/// Everything needed to build a Stable Diffusion model, in diffusers naming.
///
/// Configs are the JSON documents a diffusers folder ships (`unet/config.json`,
/// `vae/config.json`, `text_encoder/config.json` as transformers writes it,
/// `scheduler/scheduler_config.json`); a single-file loader synthesizes the same documents.
/// Weights are VarBuilders whose keys are the diffusers / transformers names: UNet keys like
/// `down_blocks.0.attentions.0.proj_in.weight`, VAE keys like `encoder.conv_in.weight`, text
/// encoder keys like `text_model.encoder.layers.0.self_attn.q_proj.weight`.
pub struct ModelParts {
    pub unet_config: serde_json::Value,
    pub vae_config: serde_json::Value,
    pub text_encoder_config: serde_json::Value,
    pub scheduler_config: serde_json::Value,
    pub tokenizer: tokenizers::Tokenizer,
    /// Token id used to pad prompts to 77 tokens: 49407 (`<|endoftext|>`) for SD1,
    /// 0 (`!`) for SD2, as each tokenizer's `pad_token` says.
    pub pad_token_id: u32,
    pub unet: VarBuilder<'static>,
    pub vae: VarBuilder<'static>,
    pub text_encoder: VarBuilder<'static>,
    /// SDXL's second text tower (None for SD1/SD2).
    pub xl: Option<XlParts>,
}

/// What an SDXL model adds: `text_encoder_2` (CLIPTextModelWithProjection, keys
/// `text_model.*` and `text_projection.weight`), `tokenizer_2`, and the pipeline's
/// `force_zeros_for_empty_prompt` (model_index.json; diffusers' default true).
pub struct XlParts {
    pub text_encoder_2_config: serde_json::Value,
    pub tokenizer_2: tokenizers::Tokenizer,
    pub pad_token_id_2: u32,
    pub text_encoder_2: VarBuilder<'static>,
    pub force_zeros_for_empty_prompt: bool,
}
