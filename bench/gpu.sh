#!/usr/bin/env bash
# GPU comparison of issue #6, for a machine with an NVIDIA GPU (untested so far: no GPU was
# available when it was written). Builds runai with CUDA, then for each phase runs
# `runai bench` (f16 UNet/text encoder, f32 VAE) and bench/diffusers_gpu.py (diffusers fp16)
# alternately on the same card, appending RESULT lines to OUT; bench/table.py renders them.
# Never installs anything system-wide and writes only OUT and target/.
#
# usage: bench/gpu.sh MODEL_DIR [OUT.jsonl]
#   MODEL_DIR: a diffusers SD1.5 folder (real weights or `bench_diffusers.py make`'s random
#              ones; the timings are the same) with a tokenizer/ folder.
#   env: PYTHON (python with torch+CUDA, diffusers, transformers: tools/requirements-reference.txt
#        with the CUDA torch wheel), FEATURES (default cuda,cudnn; add flash-attn if the
#        toolchain builds it), REPEATS (default 5), SKIP_BUILD=1 to reuse target/release/runai,
#        CUDA_COMPUTE_CAP (e.g. 90 for H100) if nvidia-smi cannot report it.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 MODEL_DIR [OUT.jsonl]" >&2
    exit 2
fi
MODEL=$1
OUT=${2:-bench-gpu-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PYTHON=${PYTHON:-python3}
FEATURES=${FEATURES:-cuda,cudnn}
REPEATS=${REPEATS:-5}
RUNAI=$root/target/release/runai
PHASES=(text_encode unet_512 vae_decode_512 txt2img_512_ddim50)

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver?" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >&2
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    # candle's kernels build for the card's compute capability (e.g. "9.0" -> 90).
    CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
    export CUDA_COMPUTE_CAP
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 1; }
    (cd "$root" && cargo build --release --features "$FEATURES")
fi
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "torch has no CUDA"; print("torch", torch.__version__, torch.version.cuda)' >&2

# The same alternation and output as the CPU comparison, with the GPU tools.
REFERENCE="$PYTHON $here/diffusers_gpu.py" RUNAI="$RUNAI" RUNAI_ARGS="--device cuda:0 --dtype f16" \
    REPEATS="$REPEATS" "$here/compare.sh" "$MODEL" "$OUT" "${PHASES[@]}"
python3 "$here/table.py" "$OUT"
