#!/usr/bin/env python3
"""What a LoRA switch costs on a running runai server, against a model load and a plain
request (issue #14): one connection sends 1-step SIZExSIZE txt2img requests in the order
plain (loads the model), plain, LORA_A, LORA_B, LORA_A, plain, LORA_A+LORA_B, plain, each with
its own `<lora:NAME:1>` tags, and times each request end to end. A request's extra time over
the median plain request is what building its LoRA model cost (the server's log says the
same as `merged N LoRA(s) ... in X ms`, and the model load as `loaded model ... in X ms`).
Prints one `RESULT {json}` line. Python standard library only; writes nothing.

usage: lora_switch.py --port P --lora-a NAME --lora-b NAME [--size 256]"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import client  # noqa: E402  (examples/client.py: the plugin's framing)


def timed(sock, size, loras, seed):
    tags = "".join(f" <lora:{name}:1>" for name in loras)
    args = argparse.Namespace(command="txt2img", prompt="a red fox in the snow" + tags,
                              negative_prompt="blurry", steps=1, scale=7.5, seed=seed,
                              width=size, height=size, n_samples=1, scheduler="ddim",
                              model="", strength=None, image=None, mask=None)
    t0 = time.perf_counter()
    client.send_message(sock, client.generation_request(args))
    while True:
        msg = client.recv_message(sock)
        if msg is None:
            raise RuntimeError("server closed the connection")
        if msg.get("event") == "done":
            return time.perf_counter() - t0
        if msg.get("event") in ("error", "cancelled", "closing"):
            raise RuntimeError(json.dumps(msg))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lora-a", required=True)
    p.add_argument("--lora-b", required=True)
    p.add_argument("--size", type=int, default=256)
    a = p.parse_args()
    a_, b_ = a.lora_a, a.lora_b
    order = [("first plain (model load)", []), ("plain", []), ("A", [a_]), ("B", [b_]),
             ("A again", [a_]), ("plain after LoRAs", []), ("A+B", [a_, b_]), ("plain", [])]
    with socket.create_connection(("127.0.0.1", a.port)) as sock:
        hello = client.recv_message(sock)
        if not hello or "versions" not in hello:
            raise RuntimeError(f"unexpected greeting: {hello!r}")
        rows = [(label, round(timed(sock, a.size, loras, 1), 3)) for label, loras in order]
    plain = statistics.median(t for label, t in rows[1:] if label.startswith("plain"))
    print("RESULT " + json.dumps({
        "size": a.size,
        "requests_s": rows,
        "plain_median_s": round(plain, 3),
        "model_load_extra_s": round(rows[0][1] - plain, 3),
        "switch_extra_s": {label: round(t - plain, 3) for label, t in rows
                           if not label.startswith("plain") and "load" not in label},
    }))


if __name__ == "__main__":
    main()
