//! Our CLIP text transformer (transformers' CLIPTextModel): token + position embeddings,
//! pre-LayerNorm encoder layers with a causal mask, quick_gelu or exact erf GELU, final
//! LayerNorm, and diffusers' `clip_skip`. candle's SD CLIP is not used: its GELU is the tanh
//! approximation and its config is closed. With f32 weights on the CPU the layers run on the
//! host kernels of clip_cpu (fused QKV, bias/residual/activation inside the gemm tasks, one
//! attention task per sequence and head); elsewhere on candle ops. Never pads or tokenizes:
//! it takes ids.

use candle_core::{CpuStorage, DType, Device, Module, Storage, StorageRef, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use crate::pipeline::error::{PipelineError, Result};
use crate::pipeline::kernels::cpu::clip::{self as clip_cpu, Activation, Write};
use crate::pipeline::kernels::cpu::{on_host_f32, takes_host_f32};
use crate::pipeline::load::config::{ClipActivation, ClipConfig};

struct ClipAttention {
    /// q, k and v projections stacked into one `[3 * hidden, hidden]` layer at load time: one
    /// gemm instead of three; the separate weights are not kept.
    qkv_proj: Dense,
    out_proj: Dense,
    heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    fn new(vb: VarBuilder, cfg: &ClipConfig, host: bool) -> Result<Self> {
        let h = cfg.hidden_size;
        let parts = ["q_proj", "k_proj", "v_proj"]
            .into_iter()
            .map(|name| linear(h, h, vb.pp(name)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let weight = Tensor::cat(&parts.iter().map(|l| l.weight()).collect::<Vec<_>>(), 0)?;
        let bias = parts
            .iter()
            .map(|l| l.bias().cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PipelineError::Config("text encoder q/k/v without bias".into()))?;
        let bias = Tensor::cat(&bias, 0)?;
        Ok(ClipAttention {
            qkv_proj: Dense::new(Linear::new(weight, Some(bias)), host)?,
            out_proj: Dense::new(linear(h, h, vb.pp("out_proj"))?, host)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let qkv = self.qkv_proj.forward(xs)?;
        let q = self.split_heads(&qkv.narrow(D::Minus1, 0, c)?)?;
        let k = self.split_heads(&qkv.narrow(D::Minus1, c, c)?)?;
        let v = self.split_heads(&qkv.narrow(D::Minus1, 2 * c, c)?)?;
        // Softmax in f32 even for f16 weights: padded prompts produce large logits.
        let in_dtype = q.dtype();
        let q = q.to_dtype(DType::F32)?;
        let k = k.to_dtype(DType::F32)?;
        let v = v.to_dtype(DType::F32)?;
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(causal_mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .to_dtype(in_dtype)?
            .transpose(1, 2)?
            .reshape((b, t, c))?;
        Ok(self.out_proj.forward(&out)?)
    }
}

struct ClipMlp {
    fc1: Dense,
    fc2: Dense,
    act: ClipActivation,
}

impl ClipMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.fc1.forward(xs)?;
        let xs = match self.act {
            ClipActivation::QuickGelu => (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702)?)?)?,
            ClipActivation::Gelu => xs.gelu_erf()?,
        };
        Ok(self.fc2.forward(&xs)?)
    }
}

/// One pre-LayerNorm encoder layer, shared with the safety checker's vision tower.
pub(crate) struct ClipLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipLayer {
    pub(crate) fn new(vb: VarBuilder, cfg: &ClipConfig, host: bool) -> Result<Self> {
        let h = cfg.hidden_size;
        let inter = cfg.intermediate_size;
        Ok(ClipLayer {
            layer_norm1: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(vb.pp("self_attn"), cfg, host)?,
            layer_norm2: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            mlp: ClipMlp {
                fc1: Dense::new(linear(h, inter, vb.pp("mlp.fc1"))?, host)?,
                fc2: Dense::new(linear(inter, h, vb.pp("mlp.fc2"))?, host)?,
                act: cfg.hidden_act,
            },
        })
    }

    /// The same layer on host f32 buffers: `x [batch * seq, hidden]` is updated in place.
    fn forward_host(
        &self,
        x: &mut [f32],
        bufs: &mut HostBuffers,
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let attn = &self.self_attn;
        host_layer_norm(&self.layer_norm1, x, &mut bufs.normed)?;
        attn.qkv_proj
            .host(&bufs.normed, &mut bufs.qkv, Write::Replace)?;
        let (heads, head_dim) = (attn.heads, attn.head_dim);
        clip_cpu::causal_attention(&bufs.qkv, batch, seq, heads, head_dim, &mut bufs.attn)?;
        attn.out_proj.host(&bufs.attn, x, Write::Accumulate)?;

        host_layer_norm(&self.layer_norm2, x, &mut bufs.normed)?;
        let act = match self.mlp.act {
            ClipActivation::QuickGelu => Activation::QuickGelu,
            ClipActivation::Gelu => Activation::GeluErf,
        };
        let mid = &mut bufs.mid;
        self.mlp.fc1.host(&bufs.normed, mid, Write::Activate(act))?;
        self.mlp.fc2.host(&bufs.mid, x, Write::Accumulate)?;
        Ok(())
    }

    /// `mask` is added to the attention logits (`[seq, seq]`; zeros for no mask).
    pub(crate) fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + h)?)
    }
}

/// CLIPTextModel up to `last_hidden_state` (after final_layer_norm).
pub(crate) struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipLayer>,
    final_layer_norm: LayerNorm,
    max_positions: usize,
    device: Device,
    /// f32 weights in host memory: run the layers on the host kernels of clip_cpu.
    host_f32: bool,
}

impl ClipTextTransformer {
    /// `vb` points at the model root; weights live under `text_model.` as transformers and
    /// the Hub's SD repos name them. A root without that prefix is accepted too.
    pub(crate) fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let host_f32 = on_host_f32(vb.device(), vb.dtype());
        Self::build(vb, cfg, host_f32)
    }

    /// `new` with the choice of path made by the caller: `host_f32` requires f32 CPU weights.
    fn build(vb: VarBuilder, cfg: &ClipConfig, host_f32: bool) -> Result<Self> {
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding = embedding(cfg.vocab_size, h, emb.pp("token_embedding"))?;
        let position_embedding =
            embedding(cfg.max_position_embeddings, h, emb.pp("position_embedding"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipLayer::new(vb.pp(format!("encoder.layers.{i}")), cfg, host_f32))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(h, cfg.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(ClipTextTransformer {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            max_positions: cfg.max_position_embeddings,
            device: vb.device().clone(),
            host_f32,
        })
    }

    /// Width of the hidden states (and of a textual-inversion vector).
    pub(crate) fn hidden_size(&self) -> usize {
        self.token_embedding.hidden_size()
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes token ids `[batch, seq]` (u32) into `[batch, seq, hidden]`.
    ///
    /// `clip_skip` as diffusers: None or 0 = output of the last layer; k = output of the
    /// layer k before the last. Either way the result goes through final_layer_norm.
    pub(crate) fn forward(&self, ids: &Tensor, clip_skip: Option<usize>) -> Result<Tensor> {
        self.forward_with_vectors(ids, &[], clip_skip)
    }

    /// As [`ClipTextTransformer::forward`] with some token embeddings replaced before the
    /// position embeddings are added (textual inversion): each `(position, vectors [n,
    /// hidden])` overwrites rows `position..position + n` of every sequence; rows past the
    /// end are dropped.
    pub(crate) fn forward_with_vectors(
        &self,
        ids: &Tensor,
        replace: &[(usize, &Tensor)],
        clip_skip: Option<usize>,
    ) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        if seq > self.max_positions {
            return Err(PipelineError::InvalidRequest(format!(
                "{seq} tokens exceed the text encoder's {} positions",
                self.max_positions
            )));
        }
        let skip = clip_skip.unwrap_or(0);
        if skip >= self.layers.len() {
            return Err(PipelineError::InvalidRequest(format!(
                "clip_skip {skip} must be below the text encoder's {} layers",
                self.layers.len()
            )));
        }
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?.unsqueeze(0)?;
        let mut tok = self.token_embedding.forward(ids)?;
        for (position, vectors) in replace {
            tok = replace_rows(&tok, *position, vectors)?;
        }
        let pos = self.position_embedding.forward(&positions)?;
        let mut xs = tok.broadcast_add(&pos)?;
        let layers = &self.layers[..self.layers.len() - skip];
        if self.host_f32 && takes_host_f32(&xs) {
            return self.forward_host(&xs, layers);
        }
        let mask = causal_mask(seq, &self.device)?;
        for layer in layers {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(self.final_layer_norm.forward(&xs)?)
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// SDXL's two outputs of one pass: the hidden state after the first `keep` layers,
    /// without final_layer_norm (diffusers' `hidden_states[keep]`), and final_layer_norm of
    /// the last layer's output (what the pooled embedding is taken from).
    pub(crate) fn forward_states(&self, ids: &Tensor, keep: usize) -> Result<(Tensor, Tensor)> {
        let (hidden, last) = self.forward_states_with_vectors(ids, &[], keep, true)?;
        let last = last.ok_or_else(|| {
            PipelineError::Config("text encoder: the last hidden state was not computed".into())
        })?;
        Ok((hidden, last))
    }

    /// As [`ClipTextTransformer::forward_states`] with textual-inversion rows written over
    /// the token embeddings (see [`ClipTextTransformer::forward_with_vectors`]); the layers
    /// after `keep` run only when `last` asks for the final state.
    pub(crate) fn forward_states_with_vectors(
        &self,
        ids: &Tensor,
        replace: &[(usize, &Tensor)],
        keep: usize,
        last: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (_, seq) = ids.dims2()?;
        if seq > self.max_positions || keep > self.layers.len() {
            return Err(PipelineError::InvalidRequest(format!(
                "{seq} tokens / hidden state {keep} exceed the text encoder's {} positions / \
                 {} layers",
                self.max_positions,
                self.layers.len()
            )));
        }
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?.unsqueeze(0)?;
        let mut tok = self.token_embedding.forward(ids)?;
        for (position, vectors) in replace {
            tok = replace_rows(&tok, *position, vectors)?;
        }
        let xs = tok.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let (first, rest) = self.layers.split_at(keep);
        if self.host_f32 && takes_host_f32(&xs) {
            let (batch, seq, hidden) = xs.dims3()?;
            let mut x = xs.flatten_all()?.to_vec1::<f32>()?;
            let mut bufs = HostBuffers::new(batch * seq, hidden, &self.layers);
            for layer in first {
                layer.forward_host(&mut x, &mut bufs, batch, seq)?;
            }
            let hidden_state = Tensor::from_slice(&x, (batch, seq, hidden), &self.device)?;
            if !last {
                return Ok((hidden_state, None));
            }
            for layer in rest {
                layer.forward_host(&mut x, &mut bufs, batch, seq)?;
            }
            host_layer_norm(&self.final_layer_norm, &x, &mut bufs.normed)?;
            let last = Tensor::from_vec(bufs.normed, (batch, seq, hidden), &self.device)?;
            return Ok((hidden_state, Some(last)));
        }
        let mask = causal_mask(seq, &self.device)?;
        let mut xs = xs;
        for layer in first {
            xs = layer.forward(&xs, &mask)?;
        }
        let hidden_state = xs.clone();
        if !last {
            return Ok((hidden_state, None));
        }
        for layer in rest {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok((hidden_state, Some(self.final_layer_norm.forward(&xs)?)))
    }

    /// `layers` then final_layer_norm on host buffers, reused from layer to layer.
    fn forward_host(&self, xs: &Tensor, layers: &[ClipLayer]) -> Result<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        let mut x = xs.flatten_all()?.to_vec1::<f32>()?;
        let mut bufs = HostBuffers::new(batch * seq, hidden, layers);
        for layer in layers {
            layer.forward_host(&mut x, &mut bufs, batch, seq)?;
        }
        host_layer_norm(&self.final_layer_norm, &x, &mut bufs.normed)?;
        Ok(Tensor::from_vec(
            bufs.normed,
            (batch, seq, hidden),
            &self.device,
        )?)
    }
}

/// A linear layer: candle's, or with its weight rearranged once at load into the column
/// blocks of `clip_cpu::block_columns` for the host kernels (the original layout is dropped,
/// so this takes no extra memory).
enum Dense {
    Candle(Linear),
    Host {
        blocks: Tensor,
        bias: Tensor,
        out_dim: usize,
        block: usize,
    },
}

impl Dense {
    fn new(l: Linear, host: bool) -> Result<Self> {
        if !host {
            return Ok(Dense::Candle(l));
        }
        let (out_dim, in_dim) = l.weight().dims2()?;
        let bias = l.bias().cloned().ok_or_else(|| {
            PipelineError::Config("text encoder linear layer without bias".into())
        })?;
        let block = clip_cpu::column_block(out_dim);
        let blocks = {
            let w = Host::of(l.weight())?;
            clip_cpu::block_columns(w.get()?, out_dim, in_dim, block)?
        };
        let blocks = Tensor::from_vec(blocks, out_dim * in_dim, l.weight().device())?;
        Ok(Dense::Host {
            blocks,
            bias,
            out_dim,
            block,
        })
    }

    fn out_dim(&self) -> usize {
        match self {
            Dense::Candle(l) => l.weight().dims().first().copied().unwrap_or(0),
            Dense::Host { out_dim, .. } => *out_dim,
        }
    }

    /// `out` (as `mode` says) from `x [rows, in]` with the host kernel.
    fn host(&self, x: &[f32], out: &mut [f32], mode: Write) -> Result<()> {
        let Dense::Host {
            blocks,
            bias,
            block,
            ..
        } = self
        else {
            return Err(PipelineError::Config(
                "text encoder layer not prepared for the host kernels".into(),
            ));
        };
        let (w, b) = (Host::of(blocks)?, Host::of(bias)?);
        Ok(clip_cpu::linear(x, w.get()?, *block, b.get()?, out, mode)?)
    }
}

impl Module for Dense {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Dense::Candle(l) => l.forward(xs),
            // The encoder takes the host path whenever its weights are host f32, and its
            // activations are then host f32 too.
            Dense::Host { .. } => {
                candle_core::bail!("text encoder: host-prepared layer on the candle path")
            }
        }
    }
}

/// Scratch activations of one host forward pass.
struct HostBuffers {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    mid: Vec<f32>,
}

impl HostBuffers {
    fn new(rows: usize, hidden: usize, layers: &[ClipLayer]) -> Self {
        let inner = layers.first().map_or(0, |l| l.mlp.fc1.out_dim());
        HostBuffers {
            normed: vec![0f32; rows * hidden],
            qkv: vec![0f32; rows * 3 * hidden],
            attn: vec![0f32; rows * hidden],
            mid: vec![0f32; rows * inner],
        }
    }
}

/// Read access to a contiguous host f32 tensor's values, without copying them.
struct Host<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> Host<'a> {
    fn of(t: &'a Tensor) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| PipelineError::Config("text encoder weight not contiguous".into()))?;
        Ok(Host {
            storage,
            start,
            end,
        })
    }

    fn get(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => v.get(self.start..self.end),
            _ => None,
        }
        .ok_or_else(|| PipelineError::Config("text encoder weight not host f32".into()))
    }
}

fn host_layer_norm(ln: &LayerNorm, x: &[f32], out: &mut [f32]) -> Result<()> {
    let g = Host::of(ln.weight())?;
    let b = ln
        .bias()
        .ok_or_else(|| PipelineError::Config("text encoder layer norm without bias".into()))?;
    let b = Host::of(b)?;
    Ok(clip_cpu::layer_norm(x, g.get()?, b.get()?, ln.eps(), out)?)
}

/// `tok [b, seq, hidden]` with rows `at..` replaced by `vectors [n, hidden]` (cut at `seq`).
fn replace_rows(tok: &Tensor, at: usize, vectors: &Tensor) -> Result<Tensor> {
    let (b, seq, hidden) = tok.dims3()?;
    let (n, width) = vectors.dims2()?;
    if width != hidden {
        return Err(PipelineError::InvalidRequest(format!(
            "embedding vectors are {width} wide, the text encoder is {hidden}"
        )));
    }
    if at >= seq {
        return Ok(tok.clone());
    }
    let n = n.min(seq - at);
    let rows = vectors
        .narrow(0, 0, n)?
        .to_dtype(tok.dtype())?
        .unsqueeze(0)?
        .repeat((b, 1, 1))?;
    let mut parts = Vec::with_capacity(3);
    if at > 0 {
        parts.push(tok.narrow(1, 0, at)?);
    }
    parts.push(rows);
    if at + n < seq {
        parts.push(tok.narrow(1, at + n, seq - at - n)?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// Additive mask `[seq, seq]`: -inf above the diagonal so a token only attends backwards.
fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let mut data = vec![0f32; seq * seq];
    for i in 0..seq {
        for j in (i + 1)..seq {
            data[i * seq + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(data, (seq, seq), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn config(act: ClipActivation) -> ClipConfig {
        ClipConfig {
            vocab_size: 100,
            hidden_size: 48,
            intermediate_size: 96,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            max_position_embeddings: 16,
            layer_norm_eps: 1e-5,
            hidden_act: act,
        }
    }

    /// The host kernels and candle's op-by-op graph give the same embeddings, for both
    /// activations, with and without clip_skip, for a batch of two different prompts.
    #[test]
    fn host_path_matches_candle_path() -> Result<()> {
        for act in [ClipActivation::QuickGelu, ClipActivation::Gelu] {
            let cfg = config(act);
            let vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
            let host = ClipTextTransformer::new(vb.clone(), &cfg)?;
            assert!(host.host_f32, "f32 CPU weights must take the host path");
            // Same variables (the VarMap hands out the ones created above), candle's path.
            let graph = ClipTextTransformer::build(vb, &cfg, false)?;
            let ids: Vec<u32> = (0..2 * 11).map(|i| (i * 37 % 100) as u32).collect();
            let ids = Tensor::from_vec(ids, (2, 11), &Device::Cpu)?;
            for skip in [None, Some(1)] {
                let a = host.forward(&ids, skip)?;
                let b = graph.forward(&ids, skip)?;
                assert_eq!(a.dims(), &[2, 11, 48]);
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "host vs candle diff {d} ({skip:?})");
            }
        }
        Ok(())
    }

    /// A prompt's row of a batch-2 call equals encoding it alone (the generate path encodes
    /// negative and positive prompts together).
    #[test]
    fn batched_rows_match_single_calls() -> Result<()> {
        let cfg = config(ClipActivation::QuickGelu);
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = ClipTextTransformer::new(vb, &cfg)?;
        let ids: Vec<u32> = (0..2 * 16).map(|i| (i * 53 % 100) as u32).collect();
        let ids = Tensor::from_vec(ids, (2, 16), &Device::Cpu)?;
        let both = model.forward(&ids, None)?;
        for row in 0..2 {
            let alone = model.forward(&ids.narrow(0, row, 1)?, None)?;
            let d = (both.narrow(0, row, 1)? - alone)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-6, "row {row}: batched vs alone diff {d}");
        }
        Ok(())
    }
}
