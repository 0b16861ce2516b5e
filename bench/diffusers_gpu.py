#!/usr/bin/env python3
"""The reference side of bench/gpu.sh: diffusers on CUDA in fp16 with PyTorch's SDPA
attention (the VAE in fp32, as diffusers upcasts it: SD VAEs set force_upcast), timed with
torch.cuda.synchronize() inside the timed region, 1 warm-up then N runs, one `RESULT {json}`
line with median_s, times_s, load_s, peak_rss_mb and peak_gpu_mb. With RUNAI_REF_DEVICE=cpu
(bench/gpu.sh --dry) the same phases run on the CPU in fp32.

usage: diffusers_gpu.py MODEL_DIR PHASE REPEATS
  PHASE: text_encode, unet_S, vae_decode_S, txt2img_S_ddimN (S = image side, e.g. 512)
       diffusers_gpu.py make OUT_DIR
  writes a diffusers folder of the full-size SD1.5 architecture with RANDOM weights (UNet and
  text encoder fp16, VAE fp32, ~2.0 GB; the tokenizer is the repository's CLIP tokenizer):
  the same shapes and FLOPs as the real model, for timing only.
Reads the model folder only (make writes only OUT_DIR)."""
import json
import os
import resource
import statistics
import sys
import time

PROMPT = "a red fox in the snow"
NEG = "blurry"
HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer")

# The published SD1.5 configs, where they differ from the diffusers/transformers defaults.
SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                scaling_factor=0.18215, force_upcast=True)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
SD15_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                  steps_offset=1)


def make(out):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).half(),
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER),
        unet=UNet2DConditionModel(**SD15_UNET).half(),
        scheduler=PNDMScheduler(**SD15_SCHED),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # Not a PNDM argument, but in SD1.5's scheduler config: the DDIM scheduler made from it
    # (txt2img phases) must not clip.
    pipe.scheduler.register_to_config(clip_sample=False)
    tmp = out + ".partial"
    pipe.save_pretrained(tmp)
    os.replace(tmp, out)
    print(f"wrote {out}", file=sys.stderr)


def use_sdpa(*modules):
    """PyTorch's scaled_dot_product_attention on every attention layer (diffusers' default with
    torch 2 already; set explicitly so the comparison never depends on that default). Returns
    what was set, for the RESULT line."""
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0
    except ImportError:  # a diffusers without the class: its default is SDPA
        return "sdpa (diffusers default)"
    for m in modules:
        m.set_attn_processor(AttnProcessor2_0())
    return "sdpa (AttnProcessor2_0)"


def parse_phase(phase):
    """('text_encode' | 'unet' | 'vae_decode' | 'txt2img', side, steps)."""
    parts = phase.split("_")
    if phase == "text_encode":
        return "text_encode", 0, 0
    if parts[0] == "unet" and len(parts) == 2:
        return "unet", int(parts[1]), 0
    if parts[:2] == ["vae", "decode"] and len(parts) == 3:
        return "vae_decode", int(parts[2]), 0
    if parts[0] == "txt2img" and len(parts) == 3 and parts[2].startswith("ddim"):
        return "txt2img", int(parts[1]), int(parts[2][4:])
    raise SystemExit(f"unknown phase {phase}")


def main(model, phase, repeats):
    import torch
    torch.set_grad_enabled(False)
    on_cpu = os.environ.get("RUNAI_REF_DEVICE", "cuda") == "cpu"
    dev = torch.device("cpu" if on_cpu else "cuda")
    half = torch.float32 if on_cpu else torch.float16
    sync = (lambda: None) if on_cpu else torch.cuda.synchronize
    kind, side, steps = parse_phase(phase)
    res = {"phase": phase, "impl": "diffusers", "torch": torch.__version__,
           "device": "cpu" if on_cpu else torch.cuda.get_device_name(0),
           "dtype": "f32" if on_cpu else "f16"}
    t0 = time.perf_counter()
    if kind == "text_encode":
        from transformers import CLIPTextModel, CLIPTokenizer
        tok = CLIPTokenizer.from_pretrained(os.path.join(model, "tokenizer"))
        te = CLIPTextModel.from_pretrained(os.path.join(model, "text_encoder"),
                                           torch_dtype=half).to(dev).eval()
        ids = tok([NEG, PROMPT], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids.to(dev)
        fn = lambda: te(ids)[0]
        res["what"] = "CLIP text encoder, batch 2 x 77 tokens"
    elif kind == "unet":
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet"),
                                                    torch_dtype=half).to(dev).eval()
        res["attention"] = use_sdpa(unet)
        g = torch.Generator().manual_seed(0)
        lat = side // 8
        x = torch.randn(2, unet.config.in_channels, lat, lat, generator=g).to(dev, half)
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(dev, half)
        t = torch.tensor(500, device=dev)
        fn = lambda: unet(x, t, encoder_hidden_states=ctx).sample
        res["what"] = f"one UNet step, batch 2 (CFG), latents {lat}x{lat}"
    elif kind == "vae_decode":
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(os.path.join(model, "vae")).to(dev).eval()
        res["attention"] = use_sdpa(vae)
        lat = side // 8
        z = torch.randn(1, vae.config.latent_channels, lat, lat,
                        generator=torch.Generator().manual_seed(0)).to(dev)
        fn = lambda: vae.decode(z / vae.config.scaling_factor).sample
        res["what"] = f"VAE decode 1x4x{lat}x{lat} -> 1x3x{side}x{side} (f32, as force_upcast)"
    else:
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(
            model, torch_dtype=half, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False).to(dev)
        res["attention"] = use_sdpa(pipe.unet, pipe.vae)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)

        def fn():
            return pipe(PROMPT, negative_prompt=NEG, height=side, width=side,
                        num_inference_steps=steps, guidance_scale=7.5,
                        generator=torch.Generator(device=dev).manual_seed(0)).images
        res["what"] = (f"StableDiffusionPipeline {side}x{side}, {steps} DDIM steps, CFG 7.5, "
                       f"{res['dtype']}, to PIL")
    sync()
    res["load_s"] = round(time.perf_counter() - t0, 3)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    res["times_s"] = [round(x, 4) for x in times]
    res["median_s"] = round(statistics.median(times), 4)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    if not on_cpu:
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
