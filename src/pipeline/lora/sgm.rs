//! UNet module names as Stability's SGM / CompVis LDM code spells them, which kohya's
//! sd-scripts use for SDXL LoRAs (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
//! `lora_unet_output_blocks_2_2_conv`, `lora_unet_label_emb_0_0`): for a diffusers module path
//! of our UNet, the SGM paths that name the same layer. Counting follows the checkpoints'
//! layout: `input_blocks.0` is `conv_in`, then per level its resnets (with their attentions)
//! and a downsampler; `output_blocks` run the levels in reverse with one more resnet each,
//! the upsampler sitting in the level's last block after the resnet (part 1) or after the
//! resnet and attention (part 2).

/// diffusers' ResnetBlock2D layer names -> SGM's ResBlock names.
const RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
];

/// diffusers paths with a fixed SGM name.
const FIXED: [(&str, &str); 7] = [
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
];

/// `"N.rest"` -> `(N, rest)`.
fn index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

fn resnet(part: &str) -> Option<&'static str> {
    RESNET.iter().find(|(d, _)| *d == part).map(|(_, s)| *s)
}

/// The SGM module paths (with `.`, no `.weight`) for the diffusers UNet module `module`,
/// given the UNet's `layers_per_block` per level. Usually one; an upsampler has two
/// candidates (part 1 or 2, depending on whether its level has attention).
pub(crate) fn sgm_paths(module: &str, layers_per_block: &[usize]) -> Vec<String> {
    if let Some((_, sgm)) = FIXED.iter().find(|(d, _)| *d == module) {
        return vec![(*sgm).to_owned()];
    }
    let levels = layers_per_block.len();
    if let Some(rest) = module.strip_prefix("down_blocks.") {
        let Some((level, rest)) = index(rest) else {
            return Vec::new();
        };
        let Some(&n) = layers_per_block.get(level) else {
            return Vec::new();
        };
        let start = 1 + layers_per_block[..level]
            .iter()
            .map(|l| l + 1)
            .sum::<usize>();
        return down_block(rest, start, n).into_iter().collect();
    }
    if let Some(rest) = module.strip_prefix("mid_block.") {
        if let Some(rest) = rest.strip_prefix("attentions.0.") {
            return vec![format!("middle_block.1.{rest}")];
        }
        let Some((i, part)) = rest.strip_prefix("resnets.").and_then(index) else {
            return Vec::new();
        };
        return match (i, resnet(part)) {
            (0, Some(p)) => vec![format!("middle_block.0.{p}")],
            (1, Some(p)) => vec![format!("middle_block.2.{p}")],
            _ => Vec::new(),
        };
    }
    if let Some(rest) = module.strip_prefix("up_blocks.") {
        let Some((block, rest)) = index(rest) else {
            return Vec::new();
        };
        // up_blocks[b] is level `levels - 1 - b`, with one resnet more than the down path.
        let n_up = |b: usize| {
            levels
                .checked_sub(1 + b)
                .and_then(|level| layers_per_block.get(level))
                .map(|n| n + 1)
        };
        let Some(n) = n_up(block) else {
            return Vec::new();
        };
        let start = (0..block).filter_map(n_up).sum::<usize>();
        return up_block(rest, start, n);
    }
    Vec::new()
}

/// A module of a down level whose first SGM block is `start` and which has `n` resnets.
fn down_block(rest: &str, start: usize, n: usize) -> Option<String> {
    if let Some((l, part)) = rest.strip_prefix("resnets.").and_then(index) {
        let p = resnet(part)?;
        return (l < n).then(|| format!("input_blocks.{}.0.{p}", start + l));
    }
    if let Some((l, tail)) = rest.strip_prefix("attentions.").and_then(index) {
        return (l < n).then(|| format!("input_blocks.{}.1.{tail}", start + l));
    }
    (rest == "downsamplers.0.conv").then(|| format!("input_blocks.{}.0.op", start + n))
}

/// A module of an up level whose first SGM block is `start` and which has `n` resnets.
fn up_block(rest: &str, start: usize, n: usize) -> Vec<String> {
    if let Some((l, part)) = rest.strip_prefix("resnets.").and_then(index) {
        return match resnet(part) {
            Some(p) if l < n => vec![format!("output_blocks.{}.0.{p}", start + l)],
            _ => Vec::new(),
        };
    }
    if let Some((l, tail)) = rest.strip_prefix("attentions.").and_then(index) {
        return if l < n {
            vec![format!("output_blocks.{}.1.{tail}", start + l)]
        } else {
            Vec::new()
        };
    }
    if rest == "upsamplers.0.conv" {
        let last = start + n - 1;
        return vec![
            format!("output_blocks.{last}.1.conv"),
            format!("output_blocks.{last}.2.conv"),
        ];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SDXL's layout: three levels of two resnets (attention on levels 1 and 2).
    const XL: [usize; 3] = [2, 2, 2];

    fn one(module: &str) -> String {
        let paths = sgm_paths(module, &XL);
        assert_eq!(paths.len(), 1, "{module}: {paths:?}");
        paths[0].clone()
    }

    #[test]
    fn down_mid_and_fixed_names() {
        assert_eq!(one("conv_in"), "input_blocks.0.0");
        assert_eq!(
            one("down_blocks.0.resnets.0.conv1"),
            "input_blocks.1.0.in_layers.2"
        );
        assert_eq!(
            one("down_blocks.0.resnets.1.conv2"),
            "input_blocks.2.0.out_layers.3"
        );
        assert_eq!(
            one("down_blocks.0.downsamplers.0.conv"),
            "input_blocks.3.0.op"
        );
        assert_eq!(
            one("down_blocks.1.resnets.0.time_emb_proj"),
            "input_blocks.4.0.emb_layers.1"
        );
        assert_eq!(
            one("down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q"),
            "input_blocks.5.1.transformer_blocks.0.attn1.to_q"
        );
        assert_eq!(
            one("down_blocks.1.downsamplers.0.conv"),
            "input_blocks.6.0.op"
        );
        assert_eq!(
            one("down_blocks.2.attentions.0.proj_in"),
            "input_blocks.7.1.proj_in"
        );
        assert_eq!(
            one("mid_block.resnets.1.conv1"),
            "middle_block.2.in_layers.2"
        );
        assert_eq!(
            one("mid_block.attentions.0.transformer_blocks.1.ff.net.2"),
            "middle_block.1.transformer_blocks.1.ff.net.2"
        );
        assert_eq!(one("add_embedding.linear_2"), "label_emb.0.2");
        assert!(sgm_paths("down_blocks.3.resnets.0.conv1", &XL).is_empty());
        assert!(sgm_paths("down_blocks.0.resnets.2.conv1", &XL).is_empty());
    }

    #[test]
    fn up_names_count_one_more_resnet_per_level() {
        assert_eq!(
            one("up_blocks.0.resnets.0.conv_shortcut"),
            "output_blocks.0.0.skip_connection"
        );
        assert_eq!(
            one("up_blocks.0.attentions.2.proj_out"),
            "output_blocks.2.1.proj_out"
        );
        assert_eq!(
            sgm_paths("up_blocks.0.upsamplers.0.conv", &XL),
            ["output_blocks.2.1.conv", "output_blocks.2.2.conv"]
        );
        assert_eq!(
            one("up_blocks.1.resnets.0.conv1"),
            "output_blocks.3.0.in_layers.2"
        );
        assert_eq!(
            one("up_blocks.2.resnets.2.norm2"),
            "output_blocks.8.0.out_layers.0"
        );
        assert!(sgm_paths("up_blocks.2.resnets.3.conv1", &XL).is_empty());
    }

    #[test]
    fn uneven_levels_shift_the_indices() {
        // SD1-like four levels of two resnets, then a level of one.
        let layers = [2, 2, 2, 1];
        assert_eq!(
            sgm_paths("down_blocks.3.resnets.0.conv1", &layers),
            ["input_blocks.10.0.in_layers.2"]
        );
        // up_blocks.0 is the one-resnet level (two on the way up).
        assert_eq!(
            sgm_paths("up_blocks.1.resnets.0.conv1", &layers),
            ["output_blocks.2.0.in_layers.2"]
        );
    }
}
