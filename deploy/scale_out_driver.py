#!/usr/bin/env python3
"""Client side of deploy/test-scale-out.sh: concurrent plugin-framed clients through HAProxy.

  scale_out_driver.py PORT CLIENTS REQUESTS [--steps N] [--retry-seconds S]

Each client opens its own connection through the load balancer and sends REQUESTS txt2img
jobs one after the other, reading progress until the image and `done`. A dropped connection
(a backend killed mid-run) is reconnected and the job re-sent, for up to --retry-seconds.
Prints one summary line `SUMMARY {json}` and exits non-zero if any job finally failed.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from client import recv_message, send_message  # noqa: E402


def one_job(port, client, job, steps):
    """Runs one txt2img job on a fresh connection; returns None on success, else a reason."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        first = recv_message(sock)
        if not first or "versions" not in first:
            return f"no versions message: {first!r}"
        send_message(sock, {
            "action": "txt2img",
            "job_id": f"c{client}-j{job}",
            "options": {
                "txt2img_prompt": f"client {client} job {job}",
                "txt2img_steps": str(steps),
                "txt2img_width": "64",
                "txt2img_height": "64",
                "txt2img_seed": str(1000 + client),
                "txt2img_scheduler": "ddim",
            },
        })
        got_image = False
        while True:
            msg = recv_message(sock)
            if msg is None:
                return "connection closed mid-job"
            if "image" in msg:
                got_image = True
            elif msg.get("event") == "done":
                return None if got_image else "done without image"
            elif msg.get("event") in ("error", "cancelled"):
                return f"{msg.get('event')}: {msg.get('code')} {msg.get('message')}"


def client_loop(port, client, requests, steps, retry_seconds, results):
    ok, retries, failures = 0, 0, []
    for job in range(requests):
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                reason = one_job(port, client, job, steps)
            except OSError as e:
                reason = f"socket error: {e}"
            if reason is None:
                ok += 1
                break
            if time.monotonic() > deadline:
                failures.append(reason)
                break
            retries += 1
            time.sleep(0.5)
    results[client] = {"ok": ok, "retries": retries, "failures": failures}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("clients", type=int)
    ap.add_argument("requests", type=int)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--retry-seconds", type=float, default=30.0)
    args = ap.parse_args()
    results = {}
    threads = [
        threading.Thread(target=client_loop,
                         args=(args.port, c, args.requests, args.steps, args.retry_seconds, results))
        for c in range(args.clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(r["ok"] for r in results.values())
    retries = sum(r["retries"] for r in results.values())
    failures = [f for r in results.values() for f in r["failures"]]
    print("SUMMARY " + json.dumps({
        "clients": args.clients, "jobs_ok": ok, "jobs_expected": args.clients * args.requests,
        "retries": retries, "failures": failures[:5], "elapsed_s": round(time.monotonic() - started, 2),
    }))
    sys.exit(0 if ok == args.clients * args.requests else 1)


if __name__ == "__main__":
    main()
