//! Estimates how much memory a model's weights take once loaded, from headers only, so the
//! model cache can make room before a load. Estimates count parameters times the runtime
//! element size (the VAE at f32, as the pipeline upcasts it). Never reads weight data.

use std::path::Path;

use candle_core::DType;

use super::tensors::read_safetensors_index;

fn component_elements(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    // A folder may hold both full and `.fp16` variants; the loader picks one of them.
    let plain: Vec<_> = files
        .iter()
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| !s.contains('.'))
        })
        .collect();
    let chosen: Vec<_> = if plain.is_empty() {
        files.iter().collect()
    } else {
        plain
    };
    if chosen.is_empty() {
        // Pickled `.bin` weights: their file size, at 4 bytes per parameter, is close enough.
        return std::fs::read_dir(dir)
            .map(|it| {
                it.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len() / 4)
                    .sum()
            })
            .unwrap_or(0);
    }
    chosen
        .iter()
        .filter_map(|p| read_safetensors_index(p).ok())
        .flat_map(|index| index.tensors.into_values())
        .map(|t| t.elem_count() as u64)
        .sum()
}

/// Bytes a diffusers folder's weights take at `dtype` (VAE at f32).
pub(crate) fn diffusers_bytes(dir: &Path, dtype: DType) -> u64 {
    let size = dtype.size_in_bytes() as u64;
    (component_elements(&dir.join("unet"))
        + component_elements(&dir.join("text_encoder"))
        + component_elements(&dir.join("text_encoder_2")))
        * size
        + component_elements(&dir.join("vae")) * 4
}
