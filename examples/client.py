#!/usr/bin/env python3
"""Example RunAI client (standard library only).

Frames messages the way the Krita plugin's connect.py does: the JSON text is cut into
1024-byte packets, only the last one padded with NUL bytes, followed by one packet of 1024
NUL bytes (end of message). Replies come back in the same framing.

Examples:
    python3 examples/client.py ping
    python3 examples/client.py txt2img --prompt "a lighthouse at dusk" --out shot
    python3 examples/client.py img2img --image in.png --strength 0.6 --out shot
    python3 examples/client.py inpaint --image in.png --mask mask.png --out shot
    python3 examples/client.py cancel      # sends the 'c' control packet
    RUNAI_TOKEN=... python3 examples/client.py --host 192.168.1.5 --tls --cafile cert.pem ping
The returned PNGs are saved as <out>-<n>.png. Nothing else is written.
"""
import argparse
import base64
import json
import os
import socket
import ssl
import sys

PACKET = 1024


def send_message(sock, obj):
    data = json.dumps(obj).encode("utf-8")
    for i in range(0, len(data), PACKET):
        chunk = data[i:i + PACKET]
        sock.sendall(chunk + b"\x00" * (PACKET - len(chunk)))
    sock.sendall(b"\x00" * PACKET)


def recv_packet(sock):
    buf = b""
    while len(buf) < PACKET:
        part = sock.recv(PACKET - len(buf))
        if not part:
            return None
        buf += part
    return buf


def recv_message(sock):
    data = b""
    while True:
        packet = recv_packet(sock)
        if packet is None:
            return None
        if packet == b"\x00" * PACKET:
            if data:
                return json.loads(data.rstrip(b"\x00").decode("ascii"))
            continue
        data += packet


def b64_file(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def generation_request(args):
    a = args.command
    options = {
        f"{a}_prompt": args.prompt,
        f"{a}_negative_prompt": args.negative_prompt,
        f"{a}_steps": str(args.steps),
        f"{a}_scale": str(args.scale),
        f"{a}_seed": str(args.seed),
        f"{a}_width": str(args.width),
        f"{a}_height": str(args.height),
        f"{a}_n_samples": str(args.n_samples),
        f"{a}_scheduler": args.scheduler,
        f"{a}_model": args.model,
        "do_nsfw_filter": "false",
        "pos_x": 0,
        "pos_y": 0,
    }
    if a == "img2img":
        # The plugin's key; the server's default is 0.8 when it is absent.
        options["img2img_strength"] = str(0.8 if args.strength is None else args.strength)
    elif a == "inpaint" and args.strength is not None:
        # Part 2 key: inpaint/outpaint strength (the server's default is 1.0, as diffusers').
        options["inpaint_strength"] = str(args.strength)
    if a in ("img2img", "inpaint"):
        if not args.image:
            sys.exit(f"{a} needs --image")
        options["pixels"] = b64_file(args.image)
    if a == "inpaint":
        options["mask"] = b64_file(args.mask) if args.mask else None
    return {"action": a, "options": options}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["ping", "models", "txt2img", "img2img", "inpaint", "cancel"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50006)
    p.add_argument("--prompt", default="")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scale", type=float, default=7.5)
    p.add_argument("--seed", default="42", help='seed; "" or -1 for a random one')
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--n-samples", type=int, default=1)
    p.add_argument("--scheduler", default="euler_a")
    p.add_argument("--model", default="")
    p.add_argument("--strength", type=float, default=None,
                   help="img2img (default 0.8) or inpaint (default 1.0) strength")
    p.add_argument("--image")
    p.add_argument("--mask")
    p.add_argument("--out", default="runai-out")
    p.add_argument("--token", default=os.environ.get("RUNAI_TOKEN", ""),
                   help="token of a server started with --token (default: $RUNAI_TOKEN)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cafile", help="PEM certificate (or CA) to trust for --tls; "
                   "default: the system's trusted CAs")
    p.add_argument("--tls-name", help="name to check the certificate against (default: --host)")
    args = p.parse_args()

    sock = socket.create_connection((args.host, args.port))
    if args.tls or args.cafile:
        ctx = ssl.create_default_context(cafile=args.cafile)
        sock = ctx.wrap_socket(sock, server_hostname=args.tls_name or args.host)
    hello = recv_message(sock)
    if not hello or "versions" not in hello:
        sys.exit(f"unexpected greeting: {hello!r}")
    if args.token:
        send_message(sock, {"action": "auth", "token": args.token})
        reply = recv_message(sock)
        if not reply or reply.get("event") != "auth":
            sys.exit(f"authentication failed: {json.dumps(reply)}")

    if args.command == "cancel":
        sock.sendall(b"c" * PACKET)
        return 0
    if args.command in ("ping", "models"):
        send_message(sock, {"action": args.command})
        print(json.dumps(recv_message(sock)))
        return 0

    send_message(sock, generation_request(args))
    saved = 0
    while True:
        msg = recv_message(sock)
        if msg is None:
            sys.exit("server closed the connection")
        if "image" in msg:
            name = f"{args.out}-{saved}.png"
            with open(name, "wb") as f:
                f.write(base64.b64decode(msg["image"]))
            print(f"saved {name} (seed {msg.get('seed')})")
            saved += 1
        elif msg.get("action") == 4:
            print(f"step {msg['step'] + 1}/{msg['total']}", file=sys.stderr)
        elif msg.get("event") == "done":
            return 0
        elif msg.get("event") in ("error", "cancelled", "closing"):
            print(json.dumps(msg), file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
