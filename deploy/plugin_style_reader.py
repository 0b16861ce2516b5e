#!/usr/bin/env python3
"""Reads replies exactly like the Krita plugin's connect.py, for deploy/test-scale-out.sh.

  plugin_style_reader.py PORT [--jobs N] [--size PX] [--samples N] [--rcvbuf BYTES]

recv(1024) chunks are appended; a message ends only when one recv returns exactly 1024 zero
bytes; trailing NULs are stripped and the text decoded as JSON, as the plugin does. Any
partial recv or undecodable message is what kills the plugin's receive thread, so either
fails this script. Prints one `SUMMARY {json}` line; exit 0 only if every job came back whole.
"""
import argparse
import json
import socket
import sys

PACKET = 1024


def send(sock, value):
    data = json.dumps(value).encode()
    for i in range(0, len(data), PACKET):
        sock.sendall(data[i:i + PACKET].ljust(PACKET, b"\0"))
    sock.sendall(b"\0" * PACKET)


class PluginReader:
    def __init__(self, sock):
        self.sock = sock
        self.short = 0

    def recv(self):
        data = b""
        while True:
            chunk = self.sock.recv(PACKET)
            if not chunk:
                raise ConnectionError("connection closed")
            if len(chunk) != PACKET:
                self.short += 1
            if chunk == b"\0" * PACKET:
                break
            data += chunk
        return json.loads(data.rstrip(b"\0").decode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--rcvbuf", type=int, default=0)
    a = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    sock.settimeout(300)
    sock.connect(("127.0.0.1", a.port))
    r = PluginReader(sock)
    images, errors = 0, []
    try:
        hello = r.recv()
        assert "versions" in hello, hello
        for job in range(a.jobs):
            send(sock, {"action": "txt2img", "options": {
                "txt2img_prompt": f"plugin job {job}", "txt2img_steps": "2",
                "txt2img_width": str(a.size), "txt2img_height": str(a.size),
                "txt2img_n_samples": str(a.samples), "txt2img_seed": str(job),
                "txt2img_scheduler": "ddim"}})
            while True:
                m = r.recv()
                if "image" in m:
                    images += 1
                elif m.get("event") == "done":
                    break
                elif m.get("event") in ("error", "cancelled"):
                    errors.append(m)
                    break
    except (ValueError, ConnectionError, OSError, AssertionError) as e:
        errors.append(repr(e))
    ok = not errors and r.short == 0 and images == a.jobs * a.samples
    print("SUMMARY " + json.dumps({"images": images, "short_recvs": r.short,
                                   "errors": [str(e) for e in errors], "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
