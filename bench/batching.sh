#!/usr/bin/env bash
# Continuous batching throughput (issue #19): the same load against a runai server started with
# `--max-batch 1` (one job at a time) and with each other value of BATCHES, in alternating order
# round by round so that machine load hits both alike. The load is bench/throughput.py: CLIENTS
# concurrent clients, each sending REQUESTS txt2img jobs one after the other, SIZExSIZE, STEPS
# steps, samplers mixed across clients and jobs (SCHEDULERS). Appends one JSON line per run to
# OUT (CPU model, load average before/after, the server's flags, throughput.py's RESULT) and
# prints a table: images per minute, p50/p95 job latency, and each row's ratio to
# `--max-batch 1`. Starts and stops its own servers on loopback; never builds (build runai
# first), never writes anywhere but OUT.
#
# usage: bench/batching.sh MODEL_DIR OUT.jsonl
#   env: RUNAI (the binary; default target/release/runai), PYTHON (python3), CLIENTS (list,
#        default "4"), REQUESTS (per client, default 3), SIZE (256), STEPS (10), SCHEDULERS
#        (ddim,euler_a,dpm++_2m_karras), BATCHES (max-batch values, default "1 4"), ROUNDS
#        (default 1), RUNAI_ARGS (extra server flags, e.g. `--device cuda:0 --dtype f16`)
# example (the issue's CPU measurement, SD1.5-size random model):
#   cargo build --release && bench/batching.sh /work/bench-models/sd15-random batching.jsonl
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 MODEL_DIR OUT.jsonl" >&2
    exit 2
fi
MODEL=$(cd "$1" && pwd)
OUT=$2
here=$(cd "$(dirname "$0")" && pwd)
RUNAI=${RUNAI:-$here/../target/release/runai}
PYTHON=${PYTHON:-python3}
read -r -a CLIENT_COUNTS <<<"${CLIENTS:-4}"
REQUESTS=${REQUESTS:-3}
SIZE=${SIZE:-256}
STEPS=${STEPS:-10}
SCHEDULERS=${SCHEDULERS:-ddim,euler_a,dpm++_2m_karras}
read -r -a BATCH_VALUES <<<"${BATCHES:-1 4}"
ROUNDS=${ROUNDS:-1}
read -r -a EXTRA <<<"${RUNAI_ARGS:-}"
[ -x "$RUNAI" ] || { echo "no runai binary at $RUNAI (build it first)" >&2; exit 1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
family=$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2- | tr -d ' ')
loadavg() { cut -d' ' -f1 /proc/loadavg; }
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server=
stop_server() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=
    fi
}
trap stop_server EXIT

run_one() { # max_batch clients
    local mb=$1 clients=$2 port line before after
    port=$(free_port)
    "$RUNAI" --host 127.0.0.1 --port "$port" --max-batch "$mb" "${EXTRA[@]}" \
        --model-base-path "$(dirname "$MODEL")" --model "$(basename "$MODEL")" \
        2>"$OUT.server-$mb.log" &
    server=$!
    local up=0
    for _ in $(seq 1 300); do
        if "$RUNAI" client --port "$port" --wait 5 ping >/dev/null 2>&1; then up=1; break; fi
        sleep 0.2
    done
    [ $up = 1 ] || { echo "server (--max-batch $mb) did not answer ping" >&2; stop_server; return 1; }
    before=$(loadavg)
    line=$("$PYTHON" "$here/throughput.py" --port "$port" --clients "$clients" \
        --requests "$REQUESTS" --size "$SIZE" --steps "$STEPS" --scheduler "$SCHEDULERS" |
        grep '^RESULT ' | tail -1) || true
    after=$(loadavg)
    stop_server
    [ -n "$line" ] || { echo "max-batch $mb, $clients clients: no RESULT line" >&2; return 1; }
    printf '{"bench": "batching", "max_batch": %s, "server_args": "%s", "cpu": "%s", "cpu_family": "%s", "finished": "%s", "loadavg_before": %s, "loadavg_after": %s, "result": %s}\n' \
        "$mb" "${RUNAI_ARGS:-}" "$cpu" "$family" "$(date -u +%FT%TZ)" "$before" "$after" "${line#RESULT }" >>"$OUT"
    echo "max-batch $mb, $clients clients: ${line#RESULT }" >&2
}

status=0
for round in $(seq 1 "$ROUNDS"); do
    for clients in "${CLIENT_COUNTS[@]}"; do
        order=("${BATCH_VALUES[@]}")
        # Alternate who goes first, round by round.
        if [ $((round % 2)) -eq 0 ]; then
            order=()
            for ((i = ${#BATCH_VALUES[@]} - 1; i >= 0; i--)); do order+=("${BATCH_VALUES[$i]}"); done
        fi
        for mb in "${order[@]}"; do
            run_one "$mb" "$clients" || status=1
        done
    done
done

"$PYTHON" - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"bench": "batching"' in l]
if not rows:
    sys.exit("no batching rows")
print(f"CPU: {rows[-1]['cpu']} (family {rows[-1]['cpu_family']})")
print("| clients | --max-batch | runs | images/min | p50 latency s | p95 latency s | vs --max-batch 1 |")
print("|---|---|---|---|---|---|---|")
groups = {}
for r in rows:
    groups.setdefault((r["result"]["clients"], r["max_batch"]), []).append(r["result"])
for (clients, mb), rs in sorted(groups.items()):
    ipm = statistics.median(x["images_per_min"] for x in rs)
    p50 = statistics.median(x["latency_median_s"] for x in rs)
    p95 = statistics.median(x["latency_p95_s"] for x in rs)
    base = groups.get((clients, 1))
    if base and mb != 1:
        b_ipm = statistics.median(x["images_per_min"] for x in base)
        b_p95 = statistics.median(x["latency_p95_s"] for x in base)
        vs = f"{ipm / b_ipm:.2f}x images/min, {p95 / b_p95:.2f}x p95"
    else:
        vs = ""
    errors = sum(len(x["errors"]) for x in rs)
    err = f" ({errors} errors)" if errors else ""
    print(f"| {clients} | {mb} | {len(rs)}{err} | {ipm:.2f} | {p50:.2f} | {p95:.2f} | {vs} |")
PY
exit $status
