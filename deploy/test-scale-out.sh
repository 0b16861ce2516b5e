#!/usr/bin/env bash
# Scale-out test: two runai backends on the tiny fixture model behind HAProxy (TCP mode,
# leastconn, health checks), all on loopback. Shows that a reader that reads like the Krita
# plugin gets every message whole through `runai relay` + HAProxy, that both backends serve
# jobs, that killing one mid-run leaves the other serving, and that clients which reconnect
# succeed.
# Installs haproxy from Debian's packages when missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNAI=${RUNAI_BIN:-target/debug/runai}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f"; tail -20 "$f"; done >&2; exit 1; }

if ! command -v haproxy >/dev/null 2>&1; then
  echo "installing haproxy from Debian's packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy) >/dev/null
fi
[ -x "$RUNAI" ] || cargo build --quiet --bin runai

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
lb=$(free_port); b1=$(free_port); b2=$(free_port); relay=$(free_port)
lbh=$(free_port); h1=$(free_port); h2=$(free_port)

start_backend() { # name port http-port
  RUST_LOG=info "$RUNAI" --host 127.0.0.1 --port "$2" --http-port "$3" \
    --model-base-path tests/fixtures/models --model tiny-sd1 >"$work/$1.log" 2>&1 &
  pids+=($!)
  eval "pid_$1=$!"
}
start_backend b1 "$b1" "$h1"
start_backend b2 "$b2" "$h2"
for p in "$b1" "$b2"; do
  ok=
  for _ in $(seq 1 100); do
    if "$RUNAI" client --port "$p" --wait 2 ping >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || fail "backend on port $p did not answer ping"
done

RUNAI_LB_BIND="127.0.0.1:$lb" RUNAI_BACKEND1="127.0.0.1:$b1" RUNAI_BACKEND2="127.0.0.1:$b2" \
RUNAI_LB_HTTP_BIND="127.0.0.1:$lbh" RUNAI_HTTP_BACKEND1="127.0.0.1:$h1" \
RUNAI_HTTP_BACKEND2="127.0.0.1:$h2" haproxy -db -f deploy/haproxy.cfg >"$work/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  "$RUNAI" client --port "$lb" --wait 2 ping >/dev/null 2>&1 && break
  sleep 0.2
done

jobs_done() { grep -c "done:" "$work/$1.log" || true; }

echo "phase 0: the legacy plugin's reader through a relay and HAProxy (small receive buffer)"
RUST_LOG=info "$RUNAI" relay --server "127.0.0.1:$lb" --listen "127.0.0.1:$relay" >"$work/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $relay), 1)" 2>/dev/null && break
  sleep 0.2
done
python3 deploy/plugin_style_reader.py "$relay" --jobs 2 --size 256 --samples 2 --rcvbuf 3000 \
  || fail "a plugin-style reader behind relay + HAProxy lost or split a message"

echo "phase 0b: the HTTP API through HAProxy on :$lbh (A1111 txt2img)"
python3 - "$lbh" <<'PY' || fail "HTTP through HAProxy"
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(50):
    try:
        urllib.request.urlopen(base + "/health", timeout=2)
        break
    except Exception:
        time.sleep(0.2)
body = json.dumps({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}).encode()
for i in range(4):
    req = urllib.request.Request(base + "/sdapi/v1/txt2img", body, {"Content-Type": "application/json"})
    reply = json.load(urllib.request.urlopen(req, timeout=60))
    assert len(reply["images"]) == 1, reply
print("HTTP: 4 txt2img requests answered through HAProxy")
PY

echo "phase 1: 8 concurrent clients x 3 jobs through HAProxy on :$lb"
python3 deploy/scale_out_driver.py "$lb" 8 3 --steps 4 || fail "phase 1 lost jobs"
n1=$(jobs_done b1); n2=$(jobs_done b2)
echo "jobs served: backend1=$n1 backend2=$n2"
[ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] || fail "both backends should have served jobs"

echo "phase 2: 8 clients x 4 longer jobs; backend1 is killed mid-run"
python3 deploy/scale_out_driver.py "$lb" 8 4 --steps 30 --retry-seconds 30 >"$work/phase2.out" 2>&1 &
driver=$!
sleep 2
before_kill=$(jobs_done b2)
kill -9 "$pid_b1"
echo "killed backend1 (pid $pid_b1)"
wait "$driver" || { cat "$work/phase2.out"; fail "phase 2: clients did not all succeed after the kill"; }
cat "$work/phase2.out"
after=$(jobs_done b2)
echo "backend2 jobs: $before_kill before the kill, $after at the end"
[ "$after" -gt "$before_kill" ] || fail "backend2 should keep serving after backend1 died"
grep -q '"retries": [1-9]' "$work/phase2.out" || echo "note: no client needed to reconnect this run"

echo "phase 3: a new client after the kill is served by the survivor"
"$RUNAI" client --port "$lb" --wait 60 ping >/dev/null || fail "ping through HAProxy after the kill"
python3 deploy/scale_out_driver.py "$lb" 2 1 --steps 4 || fail "phase 3"
echo "scale-out test passed"
