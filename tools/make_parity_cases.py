#!/usr/bin/env python3
"""Builds NEW tiny random-weight SD pipelines (configs unlike tests/fixtures) and golden cases
for them with diffusers, in the schema of tests/fixtures/manifest.json that `runai replay`
reads. Checks the pipeline "as a new user would": other UNet/text-encoder/VAE configs, sizes
that are not multiples of 64 (odd latent sizes), long and unicode prompts, empty negatives,
3/7/12 steps, every scheduler, img2img (strength 0.5) and 9-channel inpainting.

Must never write outside OUT and never download anything (the tokenizer comes from
tests/fixtures). Run with the reference venv:

    /work/bench-venv/bin/python tools/make_parity_cases.py /tmp/newuser

Conventions (same as tests/fixtures): `init_noise` is supplied as `latents=` (the pipeline
multiplies it by init_noise_sigma); every other random draw the pipeline makes (VAE posterior
sample, img2img noise, ancestral/DDPM step noise) goes through diffusers' `randn_tensor`, which
is wrapped to record each output in call order as `randn_i`; `image` = (vae_decode_out / 2 +
0.5).clamp(0, 1) and the PNG = round(image * 255) half-to-even. Weights are rounded to
bfloat16-representable float32 values like the public fixtures.
"""

import inspect
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

REPO = Path(__file__).resolve().parent.parent
FIXTURE_TOKENIZERS = {
    "v1": REPO / "tests/fixtures/models/tiny-sd1/tokenizer",  # pad <|endoftext|>
    "v2": REPO / "tests/fixtures/models/tiny-sd2/tokenizer",  # pad '!'
}

BASE_SCHED = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
}

LONG_PROMPT = (
    "an extremely detailed matte painting of a sprawling medieval harbour town at golden hour, "
    "with wooden ships, fishermen mending nets, gulls circling over slate roofs, a lighthouse on "
    "a rocky promontory, distant snow capped mountains, volumetric light, soft haze, intricate "
    "stonework, cobblestone streets, lanterns, banners fluttering in the wind, trending on "
    "artstation, by several famous painters, ultra sharp focus, eight k resolution"
)
UNICODE_PROMPT = "café au lait — 東京の夜景, neon ✨ über naïve façade"

MODELS = {
    # SD1-like: 3 resolution levels, attention_head_dim as a list, layers_per_block 1,
    # cross_attention_dim 48, a 3-layer quick_gelu text encoder of width 48.
    "nu-sd1": {
        "family": "v1",
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "epsilon",
        "unet": dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            attention_head_dim=[2, 4, 4],
            cross_attention_dim=48,
            norm_num_groups=32,
        ),
        "text": dict(
            hidden_size=48,
            intermediate_size=96,
            num_attention_heads=4,
            num_hidden_layers=3,
            hidden_act="quick_gelu",
        ),
        "vae": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
        "seed": 101,
    },
    # SD2-like: v-prediction, linear projections, upcast attention, int head dim, gelu text
    # encoder of width 24.
    "nu-sd2": {
        "family": "v2",
        "pipeline": "StableDiffusionPipeline",
        "prediction_type": "v_prediction",
        "unet": dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 32, 64),
            layers_per_block=2,
            attention_head_dim=8,
            cross_attention_dim=24,
            use_linear_projection=True,
            upcast_attention=True,
            norm_num_groups=32,
        ),
        "text": dict(
            hidden_size=24,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=3,
            hidden_act="gelu",
        ),
        "vae": dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1),
        "seed": 202,
    },
    # 9-channel inpainting UNet with its own text encoder (width 40, 5 heads).
    "nu-inpaint": {
        "family": "v1",
        "pipeline": "StableDiffusionInpaintPipeline",
        "prediction_type": "epsilon",
        "unet": dict(
            sample_size=8,
            in_channels=9,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 32, 64),
            layers_per_block=1,
            attention_head_dim=8,
            cross_attention_dim=40,
            norm_num_groups=32,
        ),
        "text": dict(
            hidden_size=40,
            intermediate_size=80,
            num_attention_heads=5,
            num_hidden_layers=2,
            hidden_act="quick_gelu",
        ),
        "vae": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
        "seed": 303,
    },
}

# (model, task, scheduler, height, width, steps, prompt, negative, guidance, strength)
CASES = [
    ("nu-sd1", "txt2img", "ddim", 64, 96, 7, UNICODE_PROMPT, "lowres, blurry", 7.5, None),
    ("nu-sd1", "txt2img", "euler", 128, 64, 3, LONG_PROMPT, "", 7.5, None),
    ("nu-sd1", "txt2img", "dpmpp_2m_karras", 48, 80, 12, "a cat", "dog", 5.0, None),
    ("nu-sd1", "txt2img", "heun", 96, 64, 3, "a lighthouse at night", "", 9.0, None),
    ("nu-sd1", "txt2img", "lms", 72, 72, 7, "portrait of an old man", "cartoon", 7.5, None),
    ("nu-sd1", "txt2img", "pndm", 64, 64, 12, UNICODE_PROMPT, "", 6.0, None),
    ("nu-sd1", "ancestral", "euler_a", 64, 96, 7, "a red fox in the snow", "", 7.5, None),
    ("nu-sd1", "img2img", "dpmpp_2m", 64, 96, 12, "a watercolor landscape", "ugly", 7.5, 0.5),
    ("nu-sd1", "txt2img", "ddpm", 64, 64, 7, "a bowl of fruit", "", 7.5, None),
    ("nu-sd2", "txt2img", "unipc", 96, 64, 7, LONG_PROMPT, "blurry", 7.5, None),
    ("nu-sd2", "txt2img", "ddim", 64, 128, 3, UNICODE_PROMPT, "", 7.5, None),
    ("nu-sd2", "ancestral", "euler_a", 64, 64, 12, "a castle on a hill", "fog", 8.0, None),
    ("nu-sd2", "img2img", "euler", 96, 64, 7, "an oil painting of a ship", "", 7.5, 0.5),
    ("nu-sd2", "txt2img", "dpmpp_2m_karras", 96, 96, 7, "a robot", "text", 4.0, None),
    ("nu-sd2", "txt2img", "heun", 56, 72, 3, "tiny odd sized picture", "", 7.5, None),
    # img2img on square sizes and with steps * strength an integer, to tell size handling
    # from the int(steps * strength) rule.
    ("nu-sd1", "img2img", "dpmpp_2m", 64, 64, 12, "a watercolor landscape", "ugly", 7.5, 0.5),
    ("nu-sd2", "img2img", "euler", 64, 64, 6, "an oil painting of a ship", "", 7.5, 0.5),
    ("nu-sd2", "img2img", "ddim", 96, 64, 6, "an oil painting of a ship", "", 7.5, 0.5),
    ("nu-inpaint", "inpaint", "unipc", 64, 96, 7, "a wooden door", "blurry", 7.5, 1.0),
    ("nu-inpaint", "inpaint", "euler_a", 96, 64, 3, UNICODE_PROMPT, "", 7.5, 1.0),
    ("nu-inpaint", "inpaint", "ddim", 64, 64, 12, LONG_PROMPT, "low quality", 7.5, 1.0),
]


def round_bf16(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def build_model(out: Path, name: str, spec: dict) -> dict:
    torch.manual_seed(spec["seed"])
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec["vae"]["block_out_channels"]),
        up_block_types=("UpDecoderBlock2D",) * len(spec["vae"]["block_out_channels"]),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        **spec["vae"],
    )
    text_cfg = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        projection_dim=spec["text"]["hidden_size"],
        **spec["text"],
    )
    text = CLIPTextModel(text_cfg)
    for m in (unet, vae, text):
        round_bf16(m)
        m.eval()
    tok = CLIPTokenizer.from_pretrained(str(FIXTURE_TOKENIZERS[spec["family"]]))
    sched = PNDMScheduler.from_config(
        {**BASE_SCHED, "prediction_type": spec["prediction_type"]}
    )
    cls = {
        "StableDiffusionPipeline": StableDiffusionPipeline,
        "StableDiffusionInpaintPipeline": StableDiffusionInpaintPipeline,
    }[spec["pipeline"]]
    pipe = cls(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = out / "models" / name
    pipe.save_pretrained(str(path), safe_serialization=True)
    return {
        "path": f"models/{name}",
        "pipeline": spec["pipeline"],
        "family": spec["family"],
        "unet_config": dict(unet.config),
        "vae_config": dict(vae.config),
        "text_encoder_config": text_cfg.to_dict(),
        "vae_scale_factor": 2 ** (len(vae.config.block_out_channels) - 1),
    }


_ORIG_RANDN = diffusers.utils.torch_utils.randn_tensor


class Recorder:
    """Records the outputs of diffusers' randn_tensor (patched once, wherever it was imported)
    in call order."""

    current = None

    def __init__(self):
        self.draws = []
        Recorder.current = self
        for mod in list(sys.modules.values()):
            name = getattr(mod, "__name__", "") or ""
            if name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is _ORIG_RANDN:
                mod.randn_tensor = _recording_randn


def _recording_randn(*args, **kwargs):
    t = _ORIG_RANDN(*args, **kwargs)
    caller = inspect.stack()[1]
    site = f"{Path(caller.filename).stem}.{caller.function}"
    Recorder.current.draws.append((site, t.detach().clone()))
    return t


def make_inputs(out: Path, h: int, w: int, seed: int):
    # One file per size, shared by the cases of that size: the seed depends on the size only.

    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack(
        [
            0.5 + 0.4 * np.sin(6 * xx + 2 * yy),
            0.5 + 0.4 * np.cos(5 * yy - 3 * xx),
            0.5 + 0.3 * np.sin(9 * xx * yy),
        ],
        -1,
    )
    img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
    init_name = f"init_{w}x{h}.png"
    Image.fromarray((img * 255).round().astype(np.uint8)).save(inputs / init_name)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h * 3 // 4, w // 3 : w * 5 // 6] = 255
    mask_name = f"mask_{w}x{h}.png"
    Image.fromarray(mask, mode="L").save(inputs / mask_name)
    return f"inputs/{init_name}", f"inputs/{mask_name}"


def run_case(out: Path, model_name: str, spec: dict, case: tuple, idx: int) -> dict:
    (model, task, sname, h, w, steps, prompt, neg, g, strength) = case
    path = out / "models" / model
    pipe_cls = {
        "txt2img": StableDiffusionPipeline,
        "ancestral": StableDiffusionPipeline,
        "img2img": StableDiffusionImg2ImgPipeline,
        "inpaint": StableDiffusionInpaintPipeline,
    }[task]
    pipe = pipe_cls.from_pretrained(str(path), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    cls, extra = SCHEDULERS[sname]
    pipe.scheduler = cls.from_config(
        {**BASE_SCHED, "prediction_type": spec["prediction_type"], **extra}
    )
    tensors = {}
    te_outs, unet_outs = [], []
    hooks = [
        pipe.text_encoder.register_forward_hook(
            lambda m, a, o: te_outs.append(o[0].detach().clone())
        ),
        pipe.unet.register_forward_hook(
            lambda m, a, o: unet_outs.append(o[0].detach().clone())
        ),
    ]
    rec = Recorder()
    gen_seed = 1000 + idx
    kwargs = dict(
        prompt=prompt,
        negative_prompt=neg,
        num_inference_steps=steps,
        guidance_scale=g,
        generator=torch.Generator().manual_seed(gen_seed),
        output_type="latent",
    )
    if sname == "ddim":
        kwargs["eta"] = 0.0
    case_inputs = {}
    extra_fields = {}
    lat_shape = [1, 4, h // 8, w // 8]
    if task in ("txt2img", "ancestral", "inpaint"):
        init_noise = torch.randn(lat_shape, generator=torch.Generator().manual_seed(42 + idx))
        tensors["init_noise"] = init_noise
        kwargs["latents"] = init_noise.clone()
        kwargs["height"], kwargs["width"] = h, w
        case_inputs["init_noise"] = (
            f"supplied initial latent noise, torch.randn({lat_shape}, generator=manual_seed("
            f"{42 + idx})); the pipeline multiplies it by scheduler.init_noise_sigma"
        )
    if task in ("img2img", "inpaint"):
        init_rel, mask_rel = make_inputs(out, h, w, 1000 * h + w)
        kwargs["image"] = Image.open(out / init_rel).convert("RGB")
        kwargs["strength"] = strength
        extra_fields["image"] = init_rel
        extra_fields["strength"] = strength
        if task == "inpaint":
            kwargs["mask_image"] = Image.open(out / mask_rel).convert("L")
            extra_fields["mask"] = mask_rel
    with torch.no_grad():
        latents = pipe(**kwargs).images
        scaling = pipe.vae.config.scaling_factor
        decoded = pipe.vae.decode(latents / scaling, return_dict=False)[0]
    for hk in hooks:
        hk.remove()
    image = (decoded / 2 + 0.5).clamp(0, 1)
    tensors["prompt_embeds"] = te_outs[0]
    tensors["negative_prompt_embeds"] = te_outs[1]
    tensors["unet_out_0"] = unet_outs[0]
    tensors["final_latents"] = latents
    tensors["vae_decode_out"] = decoded
    tensors["image"] = image
    draws = []
    for i, (site, t) in enumerate(rec.draws):
        tensors[f"randn_{i}"] = t
        draws.append({"key": f"randn_{i}", "site": site, "shape": list(t.shape)})
    cid = f"{model}/{task}_{sname}_{w}x{h}_s{steps}"
    gold = out / "golden" / model
    gold.mkdir(parents=True, exist_ok=True)
    stem = f"{task}_{sname}_{w}x{h}_s{steps}"
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(gold / f"{stem}.safetensors"))
    png = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(png).save(gold / f"{stem}.png")
    sched_cfg = dict(pipe.scheduler.config)
    (gold / f"{stem}.scheduler_config.json").write_text(json.dumps(sched_cfg, indent=1))
    return {
        "id": cid,
        "model": model,
        "task": task,
        "pipeline": type(pipe).__name__,
        "files": {
            "tensors": f"golden/{model}/{stem}.safetensors",
            "png": f"golden/{model}/{stem}.png",
            "scheduler_config": f"golden/{model}/{stem}.scheduler_config.json",
        },
        "prompt": prompt,
        "negative_prompt": neg,
        "height": h,
        "width": w,
        "latent_shape": lat_shape,
        "num_inference_steps": steps,
        "guidance_scale": g,
        "guidance_rescale": 0.0,
        "clip_skip": None,
        "num_images_per_prompt": 1,
        "cfg_batch_order": "[uncond, cond] (UNet batch 2); noise_pred = u + guidance_scale * (c - u)",
        "scheduler": {
            "name": sname,
            "class": type(pipe.scheduler).__name__,
            "config": sched_cfg,
            "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
            "order": pipe.scheduler.order,
        },
        "scheduler_call_kwargs": {"eta": 0.0} if sname == "ddim" else {},
        "n_unet_calls": len(unet_outs),
        "generator_seed": gen_seed,
        "inputs": case_inputs,
        "randn_draws_in_order": draws,
        **extra_fields,
    }


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    models = {name: build_model(out, name, spec) for name, spec in MODELS.items()}
    cases = []
    for idx, case in enumerate(CASES):
        c = run_case(out, case[0], MODELS[case[0]], case, idx)
        print(c["id"], "unet calls", c["n_unet_calls"], "draws", len(c["randn_draws_in_order"]), flush=True)
        cases.append(c)
    manifest = {
        "fixture_set": "new-user",
        "description": "tiny random-weight pipelines with configs, sizes, prompts, steps and "
        "schedulers unlike tests/fixtures",
        "generator": "tools/make_parity_cases.py",
        "command": "python tools/make_parity_cases.py <OUT>",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "conventions": {
            "cfg": "batch 2 = [uncond, cond]; noise_pred = u + g * (c - u)",
            "image": "'image' = (vae_decode_out / 2 + 0.5).clamp(0, 1); PNG = round(image * 255) (half-to-even)",
            "latents": "final_latents are the scheduler's output after the last step (before / scaling_factor)",
            "randn": "randn_i = outputs of diffusers.utils.torch_utils.randn_tensor in call order",
        },
        "models": models,
        "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))


if __name__ == "__main__":
    main()
