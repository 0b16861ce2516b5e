#!/usr/bin/env python3
"""Turns bench/compare.sh's JSON-lines output into the Markdown table of BENCHMARKS.md:
median seconds of runai and diffusers, their ratio, GFLOP/s, load time and peak RSS.
Reads only the file given; prints to stdout."""
import json
import sys

# torch FlopCounterMode on the diffusers SD1.5 modules (see BENCHMARKS.md).
GFLOP = {"text_encode": 26.6, "unet_256": 360.2, "unet_512": 1606.5, "vae_decode_256": 622.2,
         "vae_decode_512": 2514.5, "txt2img_256_ddim10": 26.6 + 3602.0 + 622.2,
         "txt2img_512_ddim50": 26.6 + 50 * 1606.5 + 2514.5}


def main(path):
    rows = {}
    order = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        ph = r["phase"]
        if ph not in rows:
            rows[ph] = {}
            order.append(ph)
        # The last run of a phase wins (re-runs replace earlier ones).
        rows[ph][r["impl"]] = r
    print("| phase | runai median s | diffusers median s | runai / diffusers | runai GFLOP/s "
          "| diffusers GFLOP/s | best of N s (runai / diffusers) | load s (runai / diffusers) "
          "| peak RSS MB (runai / diffusers) | load avg before (runai / diffusers) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ph in order:
        a, b = rows[ph].get("runai"), rows[ph].get("diffusers")
        def med(x):
            return x["result"]["median_s"] if x else None
        def fmt(v, f="{:.3f}"):
            return f.format(v) if v is not None else "-"
        g = GFLOP.get(ph)
        ma, mb = med(a), med(b)
        ratio = ma / mb if ma and mb else None
        ga = g / ma if g and ma else None
        gb = g / mb if g and mb else None
        load = f"{fmt(a and a['result']['load_s'], '{:.2f}')} / {fmt(b and b['result']['load_s'], '{:.2f}')}"
        rss = f"{fmt(a and a['result']['peak_rss_mb'], '{:.0f}')} / {fmt(b and b['result']['peak_rss_mb'], '{:.0f}')}"
        best = f"{fmt(a and min(a['result']['times_s']))} / {fmt(b and min(b['result']['times_s']))}"
        la = f"{fmt(a and a['loadavg_before'], '{:.1f}')} / {fmt(b and b['loadavg_before'], '{:.1f}')}"
        print(f"| {ph} | {fmt(ma)} | {fmt(mb)} | {fmt(ratio, '{:.2f}x')} | {fmt(ga, '{:.0f}')} "
              f"| {fmt(gb, '{:.0f}')} | {best} | {load} | {rss} | {la} |")
    print()
    for ph in order:
        for impl in ("runai", "diffusers"):
            r = rows[ph].get(impl)
            if r:
                threads = r["result"].get("threads", r["result"].get("torch_threads"))
                print(f"- {ph} {impl}: runs {r['result']['times_s']} s, threads {threads}, "
                      f"finished {r.get('finished', r.get('started'))}")


if __name__ == "__main__":
    main(sys.argv[1])
