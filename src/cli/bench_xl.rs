//! `runai bench`'s SDXL phases: both text encoders, one UNet call at 1024x1024 (batch 2, with
//! the added conditioning) and a 1024x1024 VAE decode, on an SDXL diffusers folder. Loads only
//! what each phase needs, like the SD phases in bench.rs. Measures only.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::bench::{
    measure_vae_decode, randn, time_runs, Measured, NEG, PROMPT, TOKENS, UNET_TIMESTEP,
};
use crate::pipeline::load::config::{ClipConfig, UNetConfig};
use crate::pipeline::load::loader::{component_weights, read_json};
use crate::pipeline::load::tokenizer::{load_tokenizer_dir, prompt_ids};
use crate::pipeline::models::added_cond::AddedCond;
use crate::pipeline::models::clip::ClipTextTransformer;
use crate::pipeline::models::clip_projection::ClipTextWithProjection;
use crate::pipeline::models::unet::UNet;
use crate::pipeline::RuntimeOptions;

/// The SDXL phases; `side` is the image side (1024 for the benchmark, small in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XlPhase {
    TextEncode,
    Unet,
    VaeDecode,
}

/// One SDXL phase at `side` x `side` pixels.
pub(crate) fn measure_xl(
    model: &Path,
    phase: XlPhase,
    side: usize,
    repeats: usize,
    opts: &RuntimeOptions,
) -> anyhow::Result<Measured> {
    let t0 = Instant::now();
    let dev = &opts.device;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    match phase {
        XlPhase::TextEncode => {
            let load = |dir: &str| -> anyhow::Result<_> {
                let doc = read_json(&model.join(dir).join("config.json"))?;
                let vb = component_weights(&model.join(dir), opts.dtype, opts)?;
                Ok((ClipConfig::from_json(&doc)?, doc, vb))
            };
            let (cfg_1, _, vb_1) = load("text_encoder")?;
            let (cfg_2, doc_2, vb_2) = load("text_encoder_2")?;
            let te_1 = ClipTextTransformer::new(vb_1, &cfg_1)?;
            let te_2 = ClipTextWithProjection::new(vb_2, &cfg_2, &doc_2)?;
            let (tok_1, pad_1) = load_tokenizer_dir(&model.join("tokenizer"))?;
            let (tok_2, pad_2) = load_tokenizer_dir(&model.join("tokenizer_2"))?;
            let mut rows = Vec::new();
            for prompt in [NEG, PROMPT] {
                rows.push((
                    prompt_ids(&tok_1, prompt, pad_1)?,
                    prompt_ids(&tok_2, prompt, pad_2)?,
                ));
            }
            let load_s = t0.elapsed().as_secs_f64();
            let (keep_1, keep_2) = (te_1.num_layers() - 1, te_2.num_layers() - 1);
            let times = time_runs(repeats, dev, || {
                // As the pipeline encodes: one row at a time, penultimate states + pooled.
                for (ids_1, ids_2) in &rows {
                    let t1 = Tensor::new(ids_1.as_slice(), dev)?.unsqueeze(0)?;
                    te_1.forward_states(&t1, keep_1)?;
                    let t2 = Tensor::new(ids_2.as_slice(), dev)?.unsqueeze(0)?;
                    te_2.forward(&t2, ids_2, keep_2)?;
                }
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: format!(
                    "SDXL text encoders (CLIP-L + bigG with projection), uncond+cond x {TOKENS} tokens"
                ),
                times,
            })
        }
        XlPhase::Unet => {
            let cfg = UNetConfig::from_json(&read_json(&model.join("unet/config.json"))?)?;
            let added = cfg
                .addition
                .clone()
                .ok_or_else(|| anyhow::anyhow!("not an SDXL UNet (no text_time embedding)"))?;
            let vb = component_weights(&model.join("unet"), opts.dtype, opts)?;
            let unet = UNet::new(vb, &cfg)?;
            let load_s = t0.elapsed().as_secs_f64();
            let l = side / 8;
            let x = randn(&mut rng, &[2, cfg.in_channels, l, l], dev)?;
            let ctx_dim = cfg.cross_attention_dim.first().copied().unwrap_or(2048);
            let ctx = randn(&mut rng, &[2, TOKENS, ctx_dim], dev)?;
            let pooled = added.input_dim - 6 * added.time_embed_dim;
            let s = side as f32;
            let ids = [s, s, 0.0, 0.0, s, s, s, s, 0.0, 0.0, s, s];
            let cond = AddedCond {
                text_embeds: randn(&mut rng, &[2, pooled], dev)?,
                time_ids: Tensor::from_slice(&ids, (2, 6), dev)?,
            };
            let times = time_runs(repeats, dev, || {
                unet.forward_per_sample(&x, &[UNET_TIMESTEP; 2], &ctx, Some(&cond))?;
                Ok(())
            })?;
            Ok(Measured {
                load_s,
                what: format!(
                    "one SDXL UNet step, batch 2 (CFG), latents {l}x{l} (image {side}x{side})"
                ),
                times,
            })
        }
        XlPhase::VaeDecode => measure_vae_decode(model, side, repeats, opts, t0, "SDXL VAE decode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SDXL phase runs on the committed tiny SDXL (same code path as the full-size
    /// model; a small side keeps the test short) and yields one timing per repeat.
    #[test]
    fn xl_phases_run_on_the_tiny_fixture() {
        let model =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext/models/tiny-sdxl");
        for phase in [XlPhase::TextEncode, XlPhase::Unet, XlPhase::VaeDecode] {
            let m = measure_xl(&model, phase, 64, 2, &RuntimeOptions::default()).unwrap();
            assert_eq!(m.times.len(), 2, "{phase:?}");
            assert!(m.times.iter().all(|t| *t > 0.0), "{phase:?}");
        }
        let sd1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-sd1");
        assert!(measure_xl(&sd1, XlPhase::Unet, 64, 1, &RuntimeOptions::default()).is_err());
    }
}
