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

run_one() { # impl phase
    local impl=$1 phase=$2 line before after
    before=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$impl" = diffusers ]; then
        line=$("$PYTHON" "$here/diffusers_gpu.py" "$MODEL" "$phase" "$REPEATS" | grep '^RESULT ' | tail -1)
    else
        line=$("$RUNAI" bench --model "$MODEL" --phase "$phase" --repeats "$REPEATS" \
            --device cuda:0 --dtype f16 | grep '^RESULT ' | tail -1)
    fi
    after=$(cut -d' ' -f1 /proc/loadavg)
    if [ -z "$line" ]; then
        echo "$impl $phase: no RESULT line" >&2
        return 1
    fi
    printf '{"impl": "%s", "phase": "%s", "finished": "%s", "loadavg_before": %s, "loadavg_after": %s, "result": %s}\n' \
        "$impl" "$phase" "$(date -u +%FT%TZ)" "$before" "$after" "${line#RESULT }" >>"$OUT"
    echo "$impl $phase ${line#RESULT }" >&2
}

i=0
for phase in "${PHASES[@]}"; do
    if [ $((i % 2)) -eq 0 ]; then
        run_one diffusers "$phase"
        run_one runai "$phase"
    else
        run_one runai "$phase"
        run_one diffusers "$phase"
    fi
    i=$((i + 1))
done
python3 "$here/table.py" "$OUT"
