#!/usr/bin/env python3
"""GPU counterpart of tools/bench_diffusers.py for bench/gpu.sh: the same phases on CUDA in
fp16 (the VAE in fp32 where diffusers upcasts it: SD VAEs set force_upcast), timed with
torch.cuda.synchronize() inside the timed region, 1 warm-up then N runs, one `RESULT {json}`
line with median_s, times_s, load_s, peak_rss_mb and peak_gpu_mb.

usage: diffusers_gpu.py MODEL_DIR PHASE REPEATS
  PHASE: text_encode unet_512 vae_decode_512 txt2img_512_ddim50
Reads the model folder only; writes nothing."""
import json
import os
import resource
import statistics
import sys
import time

PROMPT = "a red fox in the snow"
NEG = "blurry"


def main(model, phase, repeats):
    import torch
    torch.set_grad_enabled(False)
    dev = torch.device("cuda")
    half = torch.float16
    res = {"phase": phase, "impl": "diffusers", "device": torch.cuda.get_device_name(0),
           "dtype": "f16", "torch": torch.__version__}
    t0 = time.perf_counter()
    if phase == "text_encode":
        from transformers import CLIPTextModel, CLIPTokenizer
        tok = CLIPTokenizer.from_pretrained(os.path.join(model, "tokenizer"))
        te = CLIPTextModel.from_pretrained(os.path.join(model, "text_encoder"),
                                           torch_dtype=half).to(dev).eval()
        ids = tok([NEG, PROMPT], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids.to(dev)
        fn = lambda: te(ids)[0]
        res["what"] = "CLIP text encoder, batch 2 x 77 tokens"
    elif phase == "unet_512":
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet"),
                                                    torch_dtype=half).to(dev).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 64, 64, generator=g).to(dev, half)
        ctx = torch.randn(2, 77, 768, generator=g).to(dev, half)
        t = torch.tensor(500, device=dev)
        fn = lambda: unet(x, t, encoder_hidden_states=ctx).sample
        res["what"] = "one UNet step, batch 2 (CFG), latents 64x64"
    elif phase == "vae_decode_512":
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(os.path.join(model, "vae")).to(dev).eval()
        z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)).to(dev)
        fn = lambda: vae.decode(z / vae.config.scaling_factor).sample
        res["what"] = "VAE decode 1x4x64x64 -> 1x3x512x512 (f32, as force_upcast)"
    elif phase == "txt2img_512_ddim50":
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(
            model, torch_dtype=half, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False).to(dev)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)

        def fn():
            return pipe(PROMPT, negative_prompt=NEG, height=512, width=512,
                        num_inference_steps=50, guidance_scale=7.5,
                        generator=torch.Generator(device=dev).manual_seed(0)).images
        res["what"] = "StableDiffusionPipeline 512x512, 50 DDIM steps, CFG 7.5, fp16, to PIL"
    else:
        raise SystemExit(f"unknown phase {phase}")
    torch.cuda.synchronize()
    res["load_s"] = round(time.perf_counter() - t0, 3)
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    res["times_s"] = [round(x, 4) for x in times]
    res["median_s"] = round(statistics.median(times), 4)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
