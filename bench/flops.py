#!/usr/bin/env python3
"""Counts the forward FLOPs of the SD1.5 modules (diffusers UNet, VAE decoder, CLIP text
encoder) with torch's FlopCounterMode on the meta device: no weights, no compute, no files.
Convolutions and matmuls only (norms, softmax, activations are not counted).
usage: flops.py [DIR_OF_bench_diffusers.py]   (default ../../shared/tools from bench/)"""
import os
import sys

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "tools"))
import bench_diffusers as b
from torch.utils.flop_counter import FlopCounterMode
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextModel, CLIPTextConfig
torch.set_grad_enabled(False)
with torch.device("meta"):
    unet = UNet2DConditionModel(**b.SD15_UNET)
    vae = AutoencoderKL(**b.SD15_VAE)
    te = CLIPTextModel(CLIPTextConfig(**b.SD15_TEXT))
def count(fn):
    with FlopCounterMode(display=False) as f:
        fn()
    return f.get_total_flops() / 1e9, f
for s in (256, 512):
    x = torch.randn(2, 4, s//8, s//8, device="meta"); c = torch.randn(2, 77, 768, device="meta")
    g, f = count(lambda: unet(x, torch.tensor(500, device="meta"), encoder_hidden_states=c))
    print("unet", s, round(g, 1))
    if s == 256:
        d = f.get_flop_counts()
        glob = d.get("Global", {})
        for k, v in sorted(glob.items(), key=lambda kv: -kv[1]):
            print("   ", k, round(v/1e9, 1))
for s in (256, 512):
    z = torch.randn(1, 4, s//8, s//8, device="meta")
    g, _ = count(lambda: vae.decode(z))
    print("vae", s, round(g, 1))
ids = torch.zeros(2, 77, dtype=torch.long, device="meta")
g, _ = count(lambda: te(ids))
print("text batch2", round(g, 1))
