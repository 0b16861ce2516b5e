#!/usr/bin/env python3
"""The diffusers side of the SDXL CPU comparison (issue #13), beside `runai bench`'s SDXL
phases (src/cli/bench_xl.rs): the same shapes, 1 untimed warm-up, N timed runs, one
`RESULT {json}` line per phase, each phase in its own process (peak RSS per phase).

  make OUT                  writes a FULL-SIZE SDXL-base-architecture diffusers folder with
                            RANDOM weights (UNet 2.6 B parameters, CLIP-L, OpenCLIP bigG
                            with projection, the SDXL VAE; ~14 GB in f32): the structure of
                            the committed tiny SDXL fixture with SDXL base's published sizes.
                            Tokenizers and scheduler config are copied from the fixture.
                            Keep OUT outside the repository.
  MODEL PHASE REPEATS       times one phase (bench/compare.sh calls it so, as REFERENCE):
    sdxl_text_encode        both encoders, uncond then cond, one 77-token row each, the
                            penultimate hidden states (and bigG's pooled projection), as
                            StableDiffusionXLPipeline.encode_prompt runs them
    sdxl_unet_1024          one UNet call, batch 2 (CFG), 128x128 latents, context 2048
                            wide, text_time added conditioning (pooled 1280 + 6 time ids)
    sdxl_vae_decode_1024    VAE decode 1x4x128x128 -> 1x3x1024x1024 (f32)

Random weights cost the same as real ones: the shapes and FLOPs are SDXL base's.

usage: sdxl_diffusers.py make OUT
       sdxl_diffusers.py MODEL PHASE REPEATS
   or: REFERENCE="python bench/sdxl_diffusers.py" bench/compare.sh MODEL OUT.jsonl \
           sdxl_text_encode sdxl_unet_1024 sdxl_vae_decode_1024"""
import json
import os
import resource
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "tests", "fixtures", "ext", "models", "tiny-sdxl")
PROMPT = "a red fox in the snow"
NEG = "blurry"
TIMESTEP = 500


def read_config(component):
    with open(os.path.join(TINY, component, "config.json")) as f:
        doc = json.load(f)
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def make(out):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    for name in ("tokenizer", "tokenizer_2", "scheduler"):
        shutil.copytree(os.path.join(TINY, name), os.path.join(out, name), dirs_exist_ok=True)
    shutil.copy(os.path.join(TINY, "model_index.json"), out)

    unet = read_config("unet")
    unet.update(block_out_channels=[320, 640, 1280], attention_head_dim=[5, 10, 20],
                transformer_layers_per_block=[1, 2, 10], cross_attention_dim=2048,
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                sample_size=128)
    UNet2DConditionModel.from_config(unet).save_pretrained(os.path.join(out, "unet"))

    vae = read_config("vae")
    vae.update(block_out_channels=[128, 256, 512, 512], layers_per_block=2, sample_size=1024)
    AutoencoderKL.from_config(vae).save_pretrained(os.path.join(out, "vae"))

    base = read_config("text_encoder")
    base.pop("model_type", None)
    te1 = dict(base, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
               num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu")
    CLIPTextModel(CLIPTextConfig(**te1)).save_pretrained(os.path.join(out, "text_encoder"))
    te2 = dict(base, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
               num_hidden_layers=32, projection_dim=1280, hidden_act="gelu")
    CLIPTextModelWithProjection(CLIPTextConfig(**te2)).save_pretrained(
        os.path.join(out, "text_encoder_2"))
    print(json.dumps({"made": out}))


def timeit(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def phase(model, name, repeats):
    import torch
    torch.set_grad_enabled(False)
    res = {"phase": name, "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    if name == "sdxl_text_encode":
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
        te1 = CLIPTextModel.from_pretrained(os.path.join(model, "text_encoder")).eval()
        te2 = CLIPTextModelWithProjection.from_pretrained(
            os.path.join(model, "text_encoder_2")).eval()
        tok1 = CLIPTokenizer.from_pretrained(os.path.join(model, "tokenizer"))
        tok2 = CLIPTokenizer.from_pretrained(os.path.join(model, "tokenizer_2"))
        rows = [(tok1(p, padding="max_length", max_length=77, truncation=True,
                      return_tensors="pt").input_ids,
                 tok2(p, padding="max_length", max_length=77, truncation=True,
                      return_tensors="pt").input_ids) for p in (NEG, PROMPT)]
        res["load_s"] = time.perf_counter() - t0
        res["what"] = "SDXL text encoders (CLIP-L + bigG with projection), uncond+cond x 77 tokens"

        def run():
            for ids1, ids2 in rows:
                te1(ids1, output_hidden_states=True).hidden_states[-2]
                out = te2(ids2, output_hidden_states=True)
                out.hidden_states[-2], out.text_embeds
        times = timeit(run, repeats)
    elif name == "sdxl_unet_1024":
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet")).eval()
        res["load_s"] = time.perf_counter() - t0
        x = torch.randn(2, 4, 128, 128, generator=g)
        ctx = torch.randn(2, 77, 2048, generator=g)
        added = {"text_embeds": torch.randn(2, 1280, generator=g),
                 "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}
        res["what"] = "one SDXL UNet step, batch 2 (CFG), latents 128x128 (image 1024x1024)"
        times = timeit(lambda: unet(x, torch.tensor(TIMESTEP), encoder_hidden_states=ctx,
                                    added_cond_kwargs=added).sample, repeats)
    elif name == "sdxl_vae_decode_1024":
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(os.path.join(model, "vae")).eval()
        res["load_s"] = time.perf_counter() - t0
        z = torch.randn(1, 4, 128, 128, generator=g)
        res["what"] = "SDXL VAE decode 1x4x128x128 -> 1x3x1024x1024"
        times = timeit(lambda: vae.decode(z / vae.config.scaling_factor).sample, repeats)
    else:
        raise SystemExit(f"unknown phase {name}")
    res["times_s"] = [round(t, 3) for t in times]
    res["median_s"] = round(statistics.median(times), 3)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(res), flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4:
        phase(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
