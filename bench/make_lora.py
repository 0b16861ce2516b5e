#!/usr/bin/env python3
"""Writes a random kohya-format LoRA for a diffusers SD1.x/SD2.x folder, for timing LoRA
switches on a full-size model (bench/lora_switch.py): `lora_down`/`lora_up`/`alpha` for every
attention projection (to_q/k/v/out.0) and feed-forward linear of the UNet's transformer
blocks and every q/k/v/out/fc projection of the text encoder, rank RANK, alpha RANK/2. The
names and shapes come from the model's own safetensors headers; the values are small random
numbers, so the LoRA changes the image without meaning anything. Keep the output outside the
repository.

usage: make_lora.py MODEL_DIR OUT.safetensors [--rank 16] [--seed 0]
needs: numpy, safetensors (the reference venv has both)"""
import argparse
import json
import struct

import numpy as np
from safetensors.numpy import save_file


def header(path):
    """The tensor names and shapes of a safetensors file, from its JSON header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        doc = json.loads(f.read(n))
    doc.pop("__metadata__", None)
    return {k: v["shape"] for k, v in doc.items()}


UNET_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
                "ff.net.0.proj", "ff.net.2")
TE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
              "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def targets(model_dir):
    """(kohya name, [out, in]) for every LoRA-able linear of the UNet and text encoder."""
    found = []
    unet = header(f"{model_dir}/unet/diffusion_pytorch_model.safetensors")
    for key, shape in sorted(unet.items()):
        if key.endswith(".weight") and len(shape) == 2 and \
                any(key[:-len(".weight")].endswith(s) for s in UNET_LINEARS):
            found.append(("lora_unet_" + key[:-len(".weight")].replace(".", "_"), shape))
    te = header(f"{model_dir}/text_encoder/model.safetensors")
    for key, shape in sorted(te.items()):
        if key.endswith(".weight") and len(shape) == 2 and \
                any(key[:-len(".weight")].endswith(s) for s in TE_LINEARS):
            module = key[:-len(".weight")].removeprefix("text_model.")
            found.append(("lora_te_text_model_" + module.replace(".", "_"), shape))
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    tensors = {}
    layers = targets(a.model_dir)
    for name, (out_dim, in_dim) in layers:
        tensors[f"{name}.lora_down.weight"] = (
            rng.standard_normal((a.rank, in_dim), dtype=np.float32) * 0.02)
        tensors[f"{name}.lora_up.weight"] = (
            rng.standard_normal((out_dim, a.rank), dtype=np.float32) * 0.02)
        tensors[f"{name}.alpha"] = np.array(a.rank / 2, dtype=np.float32)
    save_file(tensors, a.out)
    print(json.dumps({"out": a.out, "layers": len(layers), "rank": a.rank,
                      "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
