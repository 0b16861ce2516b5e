#!/usr/bin/env python3
"""Images per second a running runai server delivers to N concurrent clients, for
bench/gpu.sh and bench/batching.sh: each client connects over loopback (framing of
examples/client.py, the plugin's own), sends REQUESTS txt2img requests one after the other
(seed i for its i-th) and waits for each image; the clock runs from the first request to the
last image. `--scheduler` takes a comma-separated list: request i of client c uses entry
(c + i) mod len, so concurrent clients mix samplers. One untimed request first loads the
model. Prints one `RESULT {json}` line (clients, images, wall_s, images_per_s,
images_per_min, p50/p95 latency, per-request latencies). Python standard library only;
writes nothing.

usage: throughput.py --port P --clients N --requests K --size S --steps T
                     [--scheduler ddim[,euler_a,...]]"""
import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import client  # noqa: E402  (examples/client.py: the plugin's framing)


def generate(port, size, steps, scheduler, seed):
    """One txt2img over a fresh connection; returns the number of images received."""
    args = argparse.Namespace(command="txt2img", prompt="a red fox in the snow",
                              negative_prompt="blurry", steps=steps, scale=7.5, seed=seed,
                              width=size, height=size, n_samples=1, scheduler=scheduler,
                              model="", strength=None, image=None, mask=None)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        hello = client.recv_message(sock)
        if not hello or "versions" not in hello:
            raise RuntimeError(f"unexpected greeting: {hello!r}")
        client.send_message(sock, client.generation_request(args))
        images = 0
        while True:
            msg = client.recv_message(sock)
            if msg is None:
                raise RuntimeError("server closed the connection")
            if "image" in msg:
                images += 1
            elif msg.get("event") == "done":
                return images
            elif msg.get("event") in ("error", "cancelled", "closing"):
                raise RuntimeError(json.dumps(msg))


def cpu_model():
    """This machine's CPU as /proc/cpuinfo names it (recorded with every row)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown"
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}; {os.cpu_count()} threads)")


def nearest_rank(values, pct):
    """The pct-th percentile by the nearest-rank method (an observed value)."""
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))
    return ordered[rank - 1]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--requests", type=int, required=True, help="per client")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scheduler", default="ddim")
    a = p.parse_args()

    schedulers = [x for x in a.scheduler.split(",") if x]
    generate(a.port, a.size, a.steps, schedulers[0], 0)  # warm-up: loads the model
    latencies, errors, lock = [], [], threading.Lock()

    def one_client(c):
        for i in range(a.requests):
            t = time.perf_counter()
            try:
                sched = schedulers[(c + i) % len(schedulers)]
                n = generate(a.port, a.size, a.steps, sched, 1000 * c + i)
                if n != 1:
                    raise RuntimeError(f"expected 1 image, got {n}")
            except Exception as e:  # reported in the RESULT line, counted as a failure
                with lock:
                    errors.append(f"client {c} request {i}: {e}")
                return
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=one_client, args=(c,)) for c in range(a.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    res = {"impl": "runai", "cpu": cpu_model(), "clients": a.clients, "requests_per_client": a.requests,
           "size": a.size, "steps": a.steps, "scheduler": a.scheduler,
           "images": len(latencies), "wall_s": round(wall, 3),
           "images_per_s": round(len(latencies) / wall, 4) if wall > 0 else None,
           "images_per_min": round(60 * len(latencies) / wall, 3) if wall > 0 else None,
           "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
           "latency_p95_s": round(nearest_rank(latencies, 95), 3) if latencies else None,
           "latencies_s": [round(x, 3) for x in latencies], "errors": errors}
    print("RESULT " + json.dumps(res), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
