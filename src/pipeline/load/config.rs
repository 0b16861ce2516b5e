//! Typed views of the diffusers / transformers JSON configs (UNet, VAE, CLIP text encoder).
//! One code path for every SD1/SD2-style architecture: nothing here is hard-coded to a model
//! size. Unsupported features are rejected with an error, never silently ignored.

use serde_json::Value;

use crate::pipeline::error::{PipelineError, Result};

/// Reads typed fields out of a config document with diffusers' defaults.
pub(crate) struct Fields<'a> {
    pub(crate) what: &'static str,
    pub(crate) doc: &'a Value,
}

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.doc.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn bad(&self, key: &str) -> PipelineError {
        PipelineError::Config(format!(
            "{}: field `{key}` is missing or invalid",
            self.what
        ))
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.bad(key)),
        }
    }

    pub(crate) fn usize_req(&self, key: &str) -> Result<usize> {
        self.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.bad(key))
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.bad(key)),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key)),
        }
    }

    pub(crate) fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.bad(key)),
        }
    }

    fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let arr = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad(key))?;
        arr.iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.bad(key))
            })
            .collect()
    }

    fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let arr = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad(key))?;
        arr.iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| self.bad(key)))
            .collect()
    }

    /// diffusers accepts either one integer for every block or one per block.
    fn per_block(&self, key: &str, n: usize, default: Option<usize>) -> Result<Vec<usize>> {
        match self.get(key) {
            None => default.map(|d| vec![d; n]).ok_or_else(|| self.bad(key)),
            Some(Value::Array(_)) => {
                let list = self.usize_list(key)?;
                if list.len() != n {
                    return Err(PipelineError::Config(format!(
                        "{}: `{key}` has {} entries for {n} blocks",
                        self.what,
                        list.len()
                    )));
                }
                Ok(list)
            }
            Some(v) => {
                let one = v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| self.bad(key))?;
                Ok(vec![one; n])
            }
        }
    }

    /// Rejects a field that selects a feature this implementation does not have.
    fn require_absent_or(&self, key: &str, allowed: &[Value]) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(v) if allowed.contains(v) => Ok(()),
            Some(v) => Err(PipelineError::Config(format!(
                "{}: unsupported `{key}` = {v}",
                self.what
            ))),
        }
    }
}

/// The UNet2DConditionModel config, SD1/SD2 subset.
#[derive(Debug, Clone)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: usize,
    pub block_out_channels: Vec<usize>,
    /// Per down block: true = CrossAttnDownBlock2D, false = DownBlock2D.
    pub down_cross_attn: Vec<bool>,
    /// Per up block (in up order): true = CrossAttnUpBlock2D.
    pub up_cross_attn: Vec<bool>,
    pub layers_per_block: Vec<usize>,
    /// Attention heads per block (diffusers' `attention_head_dim` misnomer for SD1/SD2).
    pub num_attention_heads: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub center_input_sample: bool,
    /// SDXL's added conditioning (`addition_embed_type: text_time`); None for SD1/SD2.
    pub addition: Option<TextTimeConfig>,
}

/// `addition_embed_type: "text_time"` (SDXL): the pooled text embedding and the sinusoidal
/// embedding of the micro-conditioning time ids, projected and added to the time embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTimeConfig {
    /// `addition_time_embed_dim`: sinusoidal width per time id.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim`: pooled width + time ids * time_embed_dim.
    pub input_dim: usize,
}

impl TextTimeConfig {
    /// None without an added embedding; an error for another kind or missing widths.
    fn from_fields(f: &Fields) -> Result<Option<TextTimeConfig>> {
        match f.get("addition_embed_type") {
            None => {
                // A projection width without an added embedding selects class embeddings.
                f.require_absent_or("projection_class_embeddings_input_dim", &[])?;
                Ok(None)
            }
            Some(v) if v.as_str() == Some("text_time") => {
                let cfg = TextTimeConfig {
                    time_embed_dim: f.usize_req("addition_time_embed_dim")?,
                    input_dim: f.usize_req("projection_class_embeddings_input_dim")?,
                };
                if cfg.time_embed_dim == 0 || cfg.time_embed_dim % 2 != 0 || cfg.input_dim == 0 {
                    return Err(f.bad("addition_time_embed_dim"));
                }
                Ok(Some(cfg))
            }
            Some(v) => Err(PipelineError::Config(format!(
                "{}: unsupported `addition_embed_type` = {v}",
                f.what
            ))),
        }
    }
}

impl UNetConfig {
    pub fn from_json(doc: &Value) -> Result<UNetConfig> {
        let f = Fields {
            what: "unet config",
            doc,
        };
        let block_out_channels = f.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        if n == 0 {
            return Err(f.bad("block_out_channels"));
        }
        let down_types = f.str_list("down_block_types")?;
        let up_types = f.str_list("up_block_types")?;
        if down_types.len() != n || up_types.len() != n {
            return Err(PipelineError::Config(
                "unet config: block type lists do not match block_out_channels".into(),
            ));
        }
        let kind = |t: &str, cross: &str, plain: &str| -> Result<bool> {
            if t == cross {
                Ok(true)
            } else if t == plain {
                Ok(false)
            } else {
                Err(PipelineError::Config(format!(
                    "unet config: unsupported block type {t}"
                )))
            }
        };
        let down_cross_attn = down_types
            .iter()
            .map(|t| kind(t, "CrossAttnDownBlock2D", "DownBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let up_cross_attn = up_types
            .iter()
            .map(|t| kind(t, "CrossAttnUpBlock2D", "UpBlock2D"))
            .collect::<Result<Vec<_>>>()?;
        let mid = f.str_or("mid_block_type", "UNetMidBlock2DCrossAttn")?;
        if mid != "UNetMidBlock2DCrossAttn" {
            return Err(PipelineError::Config(format!(
                "unet config: unsupported mid block {mid}"
            )));
        }
        let addition = TextTimeConfig::from_fields(&f)?;
        for key in [
            "class_embed_type",
            "encoder_hid_dim",
            "encoder_hid_dim_type",
            "time_cond_proj_dim",
            "num_class_embeds",
            "time_embedding_dim",
            "time_embedding_act_fn",
            "timestep_post_act",
        ] {
            f.require_absent_or(key, &[])?;
        }
        f.require_absent_or("only_cross_attention", &[Value::Bool(false)])?;
        f.require_absent_or("dual_cross_attention", &[Value::Bool(false)])?;
        f.require_absent_or("class_embeddings_concat", &[Value::Bool(false)])?;
        f.require_absent_or("resnet_time_scale_shift", &["default".into()])?;
        f.require_absent_or("time_embedding_type", &["positional".into()])?;
        f.require_absent_or("attention_type", &["default".into()])?;
        f.require_absent_or("act_fn", &["silu".into()])?;
        f.require_absent_or("resnet_skip_time_act", &[Value::Bool(false)])?;
        f.require_absent_or("conv_in_kernel", &[3.into()])?;
        f.require_absent_or("conv_out_kernel", &[3.into()])?;
        f.require_absent_or("resnet_out_scale_factor", &[1.0.into(), 1.into()])?;
        f.require_absent_or("reverse_transformer_layers_per_block", &[])?;

        // diffusers: num_attention_heads defaults to attention_head_dim (SD1/SD2 naming).
        let heads = if f.get("num_attention_heads").is_some() {
            f.per_block("num_attention_heads", n, None)?
        } else {
            f.per_block("attention_head_dim", n, Some(8))?
        };
        let cfg = UNetConfig {
            in_channels: f.usize_or("in_channels", 4)?,
            out_channels: f.usize_or("out_channels", 4)?,
            sample_size: f.usize_or("sample_size", 64)?,
            layers_per_block: f.per_block("layers_per_block", n, Some(2))?,
            num_attention_heads: heads,
            transformer_layers_per_block: f.per_block(
                "transformer_layers_per_block",
                n,
                Some(1),
            )?,
            cross_attention_dim: f.per_block("cross_attention_dim", n, Some(1280))?,
            use_linear_projection: f.bool_or("use_linear_projection", false)?,
            upcast_attention: f.bool_or("upcast_attention", false)?,
            norm_num_groups: f.usize_or("norm_num_groups", 32)?,
            norm_eps: f.f64_or("norm_eps", 1e-5)?,
            flip_sin_to_cos: f.bool_or("flip_sin_to_cos", true)?,
            freq_shift: f.f64_or("freq_shift", 0.0)?,
            downsample_padding: f.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: f.f64_or("mid_block_scale_factor", 1.0)?,
            center_input_sample: f.bool_or("center_input_sample", false)?,
            block_out_channels,
            down_cross_attn,
            up_cross_attn,
            addition,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Structural consistency (list lengths, divisibility); the UNet builder relies on it.
    pub(crate) fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let lists = [
            self.down_cross_attn.len(),
            self.up_cross_attn.len(),
            self.layers_per_block.len(),
            self.num_attention_heads.len(),
            self.transformer_layers_per_block.len(),
            self.cross_attention_dim.len(),
        ];
        if n == 0 || lists.iter().any(|&l| l != n) {
            return Err(PipelineError::Config(
                "unet config: per-block lists do not match block_out_channels".into(),
            ));
        }
        let g = self.norm_num_groups;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            let heads = self.num_attention_heads.get(i).copied().unwrap_or(0);
            if g == 0 || c % g != 0 || heads == 0 || c % heads != 0 {
                return Err(PipelineError::Config(format!(
                    "unet config: block {i} has {c} channels, {g} groups, {heads} heads"
                )));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(PipelineError::Config("unet config: zero channels".into()));
        }
        Ok(())
    }
}

/// The AutoencoderKL config.
#[derive(Debug, Clone)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
}

impl VaeConfig {
    pub fn from_json(doc: &Value) -> Result<VaeConfig> {
        let f = Fields {
            what: "vae config",
            doc,
        };
        let block_out_channels = f.usize_list("block_out_channels")?;
        if block_out_channels.is_empty() {
            return Err(f.bad("block_out_channels"));
        }
        f.require_absent_or("mid_block_add_attention", &[Value::Bool(true)])?;
        f.require_absent_or("act_fn", &["silu".into()])?;
        f.require_absent_or("shift_factor", &[0.into(), 0.0.into()])?;
        let cfg = VaeConfig {
            in_channels: f.usize_or("in_channels", 3)?,
            out_channels: f.usize_or("out_channels", 3)?,
            layers_per_block: f.usize_or("layers_per_block", 1)?,
            latent_channels: f.usize_or("latent_channels", 4)?,
            norm_num_groups: f.usize_or("norm_num_groups", 32)?,
            scaling_factor: f.f64_or("scaling_factor", 0.18215)?,
            force_upcast: f.bool_or("force_upcast", true)?,
            use_quant_conv: f.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: f.bool_or("use_post_quant_conv", true)?,
            block_out_channels,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Structural consistency; the VAE builder relies on it.
    pub(crate) fn check(&self) -> Result<()> {
        let g = self.norm_num_groups;
        if self.block_out_channels.is_empty()
            || g == 0
            || self.block_out_channels.iter().any(|c| c % g != 0)
        {
            return Err(PipelineError::Config(
                "vae config: channels not divisible by norm_num_groups".into(),
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(PipelineError::Config(
                "vae config: scaling_factor must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Pixels per latent cell: 2^(number of blocks - 1), 8 for every SD VAE.
    pub fn scale_factor(&self) -> usize {
        1usize << (self.block_out_channels.len().saturating_sub(1)).min(16)
    }
}

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    QuickGelu,
    /// Exact (erf) GELU, as transformers' "gelu".
    Gelu,
}

impl ClipActivation {
    /// `hidden_act` of a CLIP config (text or vision), transformers' default `quick_gelu`.
    pub(crate) fn from_fields(f: &Fields) -> Result<Self> {
        match f.str_or("hidden_act", "quick_gelu")? {
            "quick_gelu" => Ok(ClipActivation::QuickGelu),
            "gelu" => Ok(ClipActivation::Gelu),
            other => Err(PipelineError::Config(format!(
                "{}: unsupported hidden_act {other}",
                f.what
            ))),
        }
    }
}

/// The transformers CLIPTextConfig subset the text encoder needs.
#[derive(Debug, Clone)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: ClipActivation,
}

impl ClipConfig {
    pub(crate) fn from_json(doc: &Value) -> Result<ClipConfig> {
        // Some exports nest the text settings under `text_config` (full CLIPConfig).
        let doc = doc.get("text_config").unwrap_or(doc);
        let f = Fields {
            what: "text encoder config",
            doc,
        };
        let hidden_act = ClipActivation::from_fields(&f)?;
        let cfg = ClipConfig {
            vocab_size: f.usize_or("vocab_size", 49408)?,
            hidden_size: f.usize_req("hidden_size")?,
            intermediate_size: f.usize_req("intermediate_size")?,
            num_hidden_layers: f.usize_req("num_hidden_layers")?,
            num_attention_heads: f.usize_req("num_attention_heads")?,
            max_position_embeddings: f.usize_or("max_position_embeddings", 77)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
            hidden_act,
        };
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(f.bad("num_attention_heads"));
        }
        if cfg.num_hidden_layers == 0 {
            return Err(f.bad("num_hidden_layers"));
        }
        Ok(cfg)
    }
}
