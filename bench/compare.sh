#!/usr/bin/env bash
# Runs the CPU comparison of issue #6: for every phase, the reference tool
# (bench_diffusers.py _phase) and `runai bench` one after the other, in alternating order, on
# the same model folder, and appends both RESULT lines (with the load average around each run)
# to a JSON-lines file that bench/table.py turns into the BENCHMARKS.md table.
# Never writes anywhere but OUT; never builds (build runai with `cargo build --release` first).
#
# usage: bench/compare.sh MODEL_DIR OUT.jsonl [PHASE...]
#   env: SD_TOKENIZER_DIR (default MODEL_DIR/tokenizer), PYTHON (a venv with tools/requirements-reference.txt), BENCH_TOOL (bench_diffusers.py),
#        RUNAI (the release binary), REPEATS (timed runs after 1 warm-up, default 3),
#        REFERENCE (another reference command, called as `REFERENCE MODEL PHASE REPEATS`;
#        `none` times runai alone, as bench/gpu.sh --dry does where no torch is installed),
#        RUNAI_ARGS (extra `runai bench` arguments, e.g. `--device cuda:0 --dtype f16`)
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 MODEL_DIR OUT.jsonl [PHASE...]" >&2
    exit 2
fi
MODEL=$1
OUT=$2
shift 2
PHASES=("$@")
if [ ${#PHASES[@]} -eq 0 ]; then
    PHASES=(text_encode unet_256 vae_decode_256 unet_512 txt2img_256_ddim10)
fi
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ "${REFERENCE:-}" = none ]; then
    REF=()
elif [ -n "${REFERENCE:-}" ]; then
    # Another reference command (bench/gpu.sh passes diffusers_gpu.py); words split on spaces.
    read -r -a REF <<<"$REFERENCE"
else
    if [ -z "${BENCH_TOOL:-}" ]; then
        # ../shared next to the main checkout, or two levels up from a worktree under wt/.
        for cand in "$here/../../shared/tools/bench_diffusers.py" "$here/../../../shared/tools/bench_diffusers.py"; do
            if [ -f "$cand" ]; then BENCH_TOOL=$cand; break; fi
        done
    fi
    : "${BENCH_TOOL:?bench_diffusers.py not found: set BENCH_TOOL}"
    REF=("$PYTHON" "$BENCH_TOOL" _phase)
fi
read -r -a RUNAI_EXTRA <<<"${RUNAI_ARGS:-}"
RUNAI=${RUNAI:-$here/../target/release/runai}
REPEATS=${REPEATS:-3}
# The reference tool looks for its tokenizer next to itself unless told.
export SD_TOKENIZER_DIR=${SD_TOKENIZER_DIR:-$MODEL/tokenizer}

loadavg() { cut -d' ' -f1 /proc/loadavg; }
# The machine, recorded with every row (results from different CPUs must never be mixed up).
cpu_field() { sed -n "s/^$1[[:space:]]*: //p" /proc/cpuinfo 2>/dev/null | head -1; }
CPU="$(cpu_field 'model name') (family $(cpu_field 'cpu family') model $(cpu_field model); $(nproc) threads)"

run_one() { # impl phase
    local impl=$1 phase=$2 line before after
    if [ "$impl" = diffusers ] && [ ${#REF[@]} -eq 0 ]; then return 0; fi
    before=$(loadavg)
    if [ "$impl" = diffusers ]; then
        line=$("${REF[@]}" "$MODEL" "$phase" "$REPEATS" | grep '^RESULT ' | tail -1)
    else
        line=$("$RUNAI" bench --model "$MODEL" --phase "$phase" --repeats "$REPEATS" \
            "${RUNAI_EXTRA[@]}" | grep '^RESULT ' | tail -1)
    fi
    after=$(loadavg)
    if [ -z "$line" ]; then
        echo "$impl $phase: no RESULT line" >&2
        return 1
    fi
    printf '{"impl": "%s", "phase": "%s", "finished": "%s", "cpu": "%s", "loadavg_before": %s, "loadavg_after": %s, "result": %s}\n' \
        "$impl" "$phase" "$(date -u +%FT%TZ)" "$CPU" "$before" "$after" "${line#RESULT }" >>"$OUT"
    echo "$impl $phase ${line#RESULT }" >&2
}

i=0
for phase in "${PHASES[@]}"; do
    # Alternate who goes first, so neither side always runs on a warmer page cache.
    if [ $((i % 2)) -eq 0 ]; then
        run_one diffusers "$phase"
        run_one runai "$phase"
    else
        run_one runai "$phase"
        run_one diffusers "$phase"
    fi
    i=$((i + 1))
done
