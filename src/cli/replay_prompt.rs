//! `runai replay` for the prompt-encoding cases: `a1111_encode_prompt` (A1111 syntax on one
//! prompt) writes `prompt_embeds`, `prompt_embeds_no_emphasis` and per chunk and tower
//! `<tower>_chunk<j>_input_ids` / `<tower>_chunk<j>_multipliers` (and SDXL's
//! `pooled_prompt_embeds`: the bigG tower's pooled embedding of the first chunk);
//! `encode_prompt` with an `embedding_file` (textual inversion) writes the same with the
//! `a1111_` prefix, the embedding loaded from the case's file. Towers are named `clip_l` (and
//! `clip_g` for a second encoder). Reads the model and the case's inputs, never the golden outputs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::pipeline::error::Result;
use crate::pipeline::load::embedding::read_embedding;
use crate::pipeline::prompt::encode::{concat_towers, TowerEncoding};
use crate::pipeline::prompt::parse::parse_prompt_attention;
use crate::pipeline::StableDiffusion;

/// Tower names in the order of a model's encoders.
const TOWER_NAMES: [&str; 2] = ["clip_l", "clip_g"];

/// Whether `case` is a prompt-encoding case this module replays.
pub(crate) fn is_prompt_case(case: &Value) -> bool {
    matches!(
        case.get("task").and_then(Value::as_str),
        Some("a1111_encode_prompt" | "encode_prompt")
    )
}

/// Encodes the case's prompt with `model` and returns the tensors under the golden names.
pub(crate) fn replay(
    root: &Path,
    case: &Value,
    model: &mut StableDiffusion,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let prompt = case
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("case lacks `prompt`"))?;
    let prefix = match case.get("embedding_file").and_then(Value::as_str) {
        Some(file) => {
            let path = root.join(file);
            let embedding =
                read_embedding(&path).with_context(|| format!("reading {}", path.display()))?;
            if model.set_embeddings(vec![embedding]) == 0 {
                return Err(anyhow!("{file} does not fit this model's text encoder"));
            }
            "a1111_"
        }
        None => "",
    };
    let clip_skip = case
        .get("clip_skip")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 1)
        .map(|n| n - 1);
    let pieces = parse_prompt_attention(prompt);
    let towers = model.towers()?;
    let outs = towers
        .iter()
        .map(|t| t.encode_pieces(&pieces, clip_skip, true))
        .collect::<Result<Vec<_>>>()?;
    Ok(tensors(prefix, &outs)?)
}

fn tensors(prefix: &str, outs: &[TowerEncoding]) -> Result<HashMap<String, Tensor>> {
    let mut map = HashMap::new();
    let embeds: Vec<&Tensor> = outs.iter().map(|o| &o.embeds).collect();
    map.insert(format!("{prefix}prompt_embeds"), concat_towers(&embeds)?);
    let plain: Option<Vec<&Tensor>> = outs.iter().map(|o| o.unweighted.as_ref()).collect();
    if let Some(plain) = plain {
        map.insert(
            format!("{prefix}prompt_embeds_no_emphasis"),
            concat_towers(&plain)?,
        );
    }
    if let Some(pooled) = outs.iter().find_map(|o| o.pooled.as_ref()) {
        map.insert(format!("{prefix}pooled_prompt_embeds"), pooled.clone());
    }
    for (out, tower) in outs.iter().zip(TOWER_NAMES) {
        for (j, chunk) in out.chunks.iter().enumerate() {
            let ids: Vec<i64> = chunk.ids.iter().map(|&i| i64::from(i)).collect();
            let mults: Vec<f32> = chunk.multipliers.iter().map(|&m| m as f32).collect();
            map.insert(
                format!("{prefix}{tower}_chunk{j}_input_ids"),
                Tensor::from_vec(ids, chunk.ids.len(), &Device::Cpu)?,
            );
            map.insert(
                format!("{prefix}{tower}_chunk{j}_multipliers"),
                Tensor::from_vec(mults, chunk.multipliers.len(), &Device::Cpu)?,
            );
        }
    }
    Ok(map)
}
