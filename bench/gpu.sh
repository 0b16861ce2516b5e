#!/usr/bin/env bash
# The GPU check of issue #17, one prepared script for a machine with an NVIDIA GPU and nothing
# on it but this repository, a Rust toolchain and Python (target: under 10 minutes there):
#   1. toolchain  the machine's nvcc if it has one, else CUDA 13.0 from PyPI's NVIDIA wheels
#                 (tools/cuda-toolchain.sh link); cudnn when its library can be found
#   2. build      `cargo build --release --features cuda[,cudnn]`
#   3. parity     `runai parity` over the 25 golden cases on the GPU in f32 (the CPU's limits)
#                 and in f16 (the limits of src/cli/parity.rs, derived in BENCHMARKS.md)
#   4. reference  diffusers fp16 + SDPA: the PYTHON given if it has CUDA torch and diffusers,
#                 else a cached virtual environment with bench/requirements-gpu.txt
#   5. model      the full-size SD1.5 architecture with random weights (same shapes and cost
#                 as the real one), made once by diffusers_gpu.py make and cached
#   6. server     a whole runai server on loopback: one 512x512 txt2img must come back as a PNG,
#                 then images/s with 1 and 4 concurrent clients (bench/throughput.py)
#   7. batching   bench/batching.sh: images/min and p50/p95 latency with --max-batch 1, 4
#                 and 8 for 1, 4 and 8 clients (3 jobs each, mixed samplers, 10 steps)
#   7a. shared    one UNet call shared by 1, 4 and 8 jobs (`runai bench --jobs J`): the cost per
#                 job of the call continuous batching makes, without the server around it
#   7b. phases    bench/compare.sh: runai f16 against diffusers fp16 + SDPA, alternating, for a
#                 text encode, a UNet step (batch 2, 512x512), a VAE decode (512x512) and a
#                 50-step DDIM txt2img (512x512)
#   8. summary    one table (bench/gpu_summary.py), also written to OUT/summary.md
# Every step's output lands in OUT; nothing is installed system-wide; caches live under
# RUNAI_CUDA_CACHE (~/.cache/runai-ci). A failing step is marked in the table, the later steps
# still run, and the exit code is 1.
#
# --dry runs the same steps on the CPU on the tiny fixture model at tiny sizes (64x64, 4 steps
# for the server; 256 phases), with a dev build and without CUDA, so the script is known to
# work before a GPU is lent (CI runs it: .ci/run). The diffusers column is filled only when
# PYTHON already has torch and diffusers (then on the CPU in fp32); otherwise it is skipped and
# the table says so: a dry run never downloads torch.
#
# usage: bench/gpu.sh [--dry] [OUT_DIR]
#   env: PYTHON (python3), MODEL (a diffusers SD1.5-size folder instead of the random one),
#        FEATURES (default cuda,cudnn or cuda), REPEATS (timed runs per phase, default 3; dry 1),
#        REQUESTS (per client in the throughput runs, default 2), SKIP_BUILD=1 (reuse the
#        binary; RUNAI_BIN names one built elsewhere), CUDA_COMPUTE_CAP (default:
#        nvidia-smi's), WHEELS (a folder of wheels to install the reference from, offline),
#        RUNAI_CUDA_CACHE
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
DRY=0
if [ "${1:-}" = --dry ]; then
    DRY=1
    shift
fi
OUT=${1:-$PWD/bench-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: >"$OUT/steps.tsv"
export RUNAI_CUDA_CACHE=${RUNAI_CUDA_CACHE:-$HOME/.cache/runai-ci}
PYTHON=${PYTHON:-python3}
REQUESTS=${REQUESTS:-2}
start=$(date +%s)
failed=0
step() { echo >&2; echo "== $1 ($(($(date +%s) - start)) s)" >&2; }
# record STEP STATUS DETAIL: one row of the summary (status ok, FAIL or skipped).
record() {
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/steps.tsv"
    echo "$1: $2 $3" >&2
    if [ "$2" = FAIL ]; then failed=1; fi
}

if [ $DRY = 1 ]; then
    DEVICE=cpu
    DTYPE=f32
    PROFILE=${PROFILE:-dev}
    FEATURES=${FEATURES:-}
    MODEL=${MODEL:-$root/tests/fixtures/models/tiny-sd1}
    PHASES=(text_encode unet_256 vae_decode_256 txt2img_256_ddim10)
    SIZE=64 STEPS=4 REPEATS=${REPEATS:-1}
    export RUNAI_REF_DEVICE=cpu
else
    command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver? (bench/gpu.sh --dry runs on the CPU)" >&2; exit 1; }
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/gpu.csv" >&2
    DEVICE=cuda:0
    DTYPE=f16
    PROFILE=${PROFILE:-release}
    MODEL=${MODEL:-$RUNAI_CUDA_CACHE/sd15-random}
    PHASES=(text_encode unet_512 vae_decode_512 txt2img_512_ddim50)
    SIZE=512 STEPS=50 REPEATS=${REPEATS:-3}
    # candle's build script compiles its kernels on half the cores unless told (cudaforge).
    export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
    if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
        # candle's kernels build for the card's compute capability ("9.0" -> 90).
        CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
        export CUDA_COMPUTE_CAP
    fi
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
RUNAI=${RUNAI_BIN:-$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/runai}

step "toolchain"
if [ $DRY = 1 ]; then
    record toolchain skipped "dry run: CPU build, no CUDA"
else
    if ! command -v nvcc >/dev/null && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
        export PATH=${CUDA_HOME:-/usr/local/cuda}/bin:$PATH
    fi
    if command -v nvcc >/dev/null; then
        nvcc_dir=$(dirname "$(command -v nvcc)")
        export CUDA_HOME=${CUDA_HOME:-$(dirname "$nvcc_dir")}
        # The binary finds cublas, nvrtc and curand there at run time too.
        export LD_LIBRARY_PATH=$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "using the installed $(nvcc --version | tail -1) at $CUDA_HOME" >&2
    else
        # shellcheck source=../tools/cuda-toolchain.sh
        source "$root/tools/cuda-toolchain.sh" link
    fi
    # cudnn: the toolchain's, the system's, or the one a CUDA PyTorch brought in its wheels.
    if [ -z "${FEATURES:-}" ]; then
        FEATURES=cuda
        cudnn=$(ls "$CUDA_HOME"/lib64/libcudnn.so 2>/dev/null || true)
        [ -n "$cudnn" ] || cudnn=$(ldconfig -p 2>/dev/null | awk '/libcudnn\.so\.9 / {print $NF; exit}')
        [ -n "$cudnn" ] || cudnn=$("$PYTHON" -c 'import glob, os, nvidia.cudnn as c; print((glob.glob(os.path.join(list(c.__path__)[0], "lib", "libcudnn.so.9")) + [""])[0])' 2>/dev/null || true)
        if [ -n "$cudnn" ]; then
            links=$RUNAI_CUDA_CACHE/cudnn-link
            mkdir -p "$links"
            ln -sf "$cudnn" "$links/libcudnn.so"
            export LIBRARY_PATH=$links:$(dirname "$cudnn")${LIBRARY_PATH:+:$LIBRARY_PATH}
            export LD_LIBRARY_PATH=$links:$(dirname "$cudnn")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            FEATURES=cuda,cudnn
        else
            echo "no libcudnn found: building without the cudnn feature" >&2
        fi
    fi
    record toolchain ok "nvcc $(nvcc --version | grep -o 'release [0-9.]*') at $CUDA_HOME, sm_$CUDA_COMPUTE_CAP, features $FEATURES"
fi

step "build ($PROFILE${FEATURES:+, features $FEATURES})"
if [ "${SKIP_BUILD:-0}" = 1 ]; then
    record build skipped "SKIP_BUILD=1: reusing $RUNAI"
else
    t0=$(date +%s)
    if (cd "$root" && cargo build --locked --profile "$PROFILE" ${FEATURES:+--features "$FEATURES"} 2>&1 | tail -3 >&2); then
        record build ok "$(($(date +%s) - t0)) s"
    else
        record build FAIL "cargo build failed"
    fi
fi
[ -x "$RUNAI" ] || { echo "no runai binary at $RUNAI" >&2; exit 1; }

for dt in f32 f16; do
    step "golden parity $dt on $DEVICE"
    if "$RUNAI" parity --manifest "$root/tests/fixtures/manifest.json" --device "$DEVICE" --dtype "$dt" \
        >"$OUT/parity-$dt.txt" 2>"$OUT/parity-$dt.err"; then
        record "parity $dt" ok "$(grep '^RESULT ' "$OUT/parity-$dt.txt" | cut -c8-)"
    else
        record "parity $dt" FAIL "$(grep '^RESULT ' "$OUT/parity-$dt.txt" | cut -c8-) $(tail -c 300 "$OUT/parity-$dt.err" | tr '\n' ' ')"
    fi
done

step "reference (diffusers)"
REF_PY=
ref_check='import torch, diffusers, transformers; import sys; sys.exit(0 if DRY or torch.cuda.is_available() else 3)'
if "$PYTHON" -c "DRY=$DRY; $ref_check" 2>/dev/null; then
    REF_PY=$PYTHON
elif [ $DRY = 1 ]; then
    record reference skipped "no torch+diffusers in $PYTHON (a dry run installs nothing): the diffusers column stays empty"
else
    venv=$RUNAI_CUDA_CACHE/ref-gpu-$(sha256sum "$here/requirements-gpu.txt" | cut -c1-12)
    if [ ! -f "$venv/.complete" ]; then
        rm -rf "$venv"
        # Reuse a CUDA torch already on the machine; install only what is missing.
        "$PYTHON" -m venv --system-site-packages "$venv"
        pip_src=()
        [ -n "${WHEELS:-}" ] && pip_src=(--no-index --find-links "$WHEELS")
        if "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
            grep -v '^torch==' "$here/requirements-gpu.txt" >"$venv/requirements.txt"
        else
            cp "$here/requirements-gpu.txt" "$venv/requirements.txt"
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_src[@]}" \
            -r "$venv/requirements.txt" >&2 && touch "$venv/.complete"
    fi
    if [ -f "$venv/.complete" ] && "$venv/bin/python" -c "DRY=0; $ref_check"; then
        REF_PY=$venv/bin/python
    else
        record reference FAIL "could not install the diffusers reference into $venv"
    fi
fi
if [ -n "$REF_PY" ]; then
    record reference ok "$("$REF_PY" -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
fi

step "model"
if [ -f "$MODEL/model_index.json" ]; then
    record model ok "$MODEL"
elif [ -n "$REF_PY" ]; then
    "$REF_PY" "$here/diffusers_gpu.py" make "$MODEL" && record model ok "made $MODEL (random weights)" ||
        record model FAIL "diffusers_gpu.py make $MODEL failed"
else
    record model FAIL "no model at $MODEL and no reference to make one"
fi

step "server over loopback"
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$RUNAI" --host 127.0.0.1 --port "$port" --device "$DEVICE" --dtype "$DTYPE" \
    --model-base-path "$(dirname "$MODEL")" --model "$(basename "$MODEL")" 2>"$OUT/server.log" &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop_server EXIT
up=0
for _ in $(seq 1 100); do
    if "$RUNAI" client --port "$port" --wait 5 ping >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
done
if [ $up = 1 ]; then
    t0=$(date +%s%N)
    if "$RUNAI" client --port "$port" txt2img --prompt "a red fox in the snow" --width "$SIZE" \
        --height "$SIZE" --steps "$STEPS" --scheduler ddim --out "$OUT/server" >"$OUT/server-client.txt" 2>&1 &&
        "$PYTHON" -c 'import struct, sys
d = open(sys.argv[1], "rb").read(24)
assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", d[16:24])
assert (w, h) == (int(sys.argv[2]),) * 2, (w, h)' "$OUT/server-0.png" "$SIZE"; then
        record server ok "${SIZE}x$SIZE PNG, $STEPS DDIM steps, $((($(date +%s%N) - t0) / 1000000)) ms (first request: model load included)"
    else
        record server FAIL "$(tail -c 300 "$OUT/server-client.txt" | tr '\n' ' ')"
    fi
    for clients in 1 4; do
        if "$PYTHON" "$here/throughput.py" --port "$port" --clients "$clients" --requests "$REQUESTS" \
            --size "$SIZE" --steps "$STEPS" >"$OUT/throughput-$clients.txt" 2>&1; then
            record "throughput $clients" ok "$(grep '^RESULT ' "$OUT/throughput-$clients.txt" | cut -c8-)"
        else
            record "throughput $clients" FAIL "$(tail -c 300 "$OUT/throughput-$clients.txt" | tr '\n' ' ')"
        fi
    done
else
    record server FAIL "no answer to ping on port $port: $(tail -c 300 "$OUT/server.log" | tr '\n' ' ')"
fi
stop_server
trap - EXIT

step "shared UNet call: 1, 4 and 8 jobs per call"
# Issue #19: what sharing saves per call on this device (on the 2-core CPU: 0.47 s of a
# 2.27 s call; BENCHMARKS.md "Continuous batching"). One line per J in OUT/jobs.jsonl.
UNET_PHASE=$([ $DRY = 1 ] && echo unet_256 || echo unet_512)
: >"$OUT/jobs.jsonl"
jobs_failed=
for j in 1 4 8; do
    if "$RUNAI" bench --model "$MODEL" --phase "$UNET_PHASE" --jobs "$j" --repeats "$REPEATS" \
        --device "$DEVICE" --dtype "$DTYPE" >"$OUT/jobs-$j.txt" 2>&1; then
        grep '^RESULT ' "$OUT/jobs-$j.txt" | cut -c8- >>"$OUT/jobs.jsonl"
    else
        jobs_failed="$jobs_failed $j"
    fi
done
if [ -z "$jobs_failed" ]; then
    record "shared call" ok "$OUT/jobs.jsonl"
else
    record "shared call" FAIL "jobs$jobs_failed: $(tail -c 300 "$OUT/jobs-${jobs_failed##* }.txt" | tr '\n' ' ')"
fi

step "continuous batching: --max-batch 1, 4, 8 with 1, 4 and 8 clients"
# Issue #19's measurement at the GPU's size: REQUESTS jobs per client, mixed samplers (DDIM,
# Euler a, DPM++ 2M Karras), 10 steps (4 in a dry run), each server flag on a fresh server.
if RUNAI="$RUNAI" PYTHON="$PYTHON" CLIENTS="1 4 8" BATCHES="1 4 8" REQUESTS=3 SIZE="$SIZE" \
    STEPS=$([ $DRY = 1 ] && echo 4 || echo 10) RUNAI_ARGS="--device $DEVICE --dtype $DTYPE" \
    "$here/batching.sh" "$MODEL" "$OUT/batching.jsonl" >"$OUT/batching.md" 2>"$OUT/batching.err"; then
    record batching ok "$(grep '^| [0-9]' "$OUT/batching.md" | awk -F'|' '{printf "%s clients, max-batch%s:%s img/min, p95%ss;", $2, $3, $5, $7}')"
else
    record batching FAIL "$(tail -c 300 "$OUT/batching.err" | tr '\n' ' ')"
fi

step "phases: runai $DTYPE against diffusers"
reference=none
[ -z "$REF_PY" ] || reference="$REF_PY $here/diffusers_gpu.py"
if REFERENCE=$reference RUNAI="$RUNAI" RUNAI_ARGS="--device $DEVICE --dtype $DTYPE" REPEATS="$REPEATS" \
    "$here/compare.sh" "$MODEL" "$OUT/phases.jsonl" "${PHASES[@]}"; then
    record phases ok "$OUT/phases.jsonl"
else
    record phases FAIL "bench/compare.sh failed"
fi

step "summary"
"$PYTHON" "$here/gpu_summary.py" "$OUT" | tee "$OUT/summary.md"
exit $failed
