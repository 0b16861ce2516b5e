#!/usr/bin/env python3
"""The one summary table of bench/gpu.sh, from what it left in OUT_DIR: steps.tsv (one row
per step: name, status, detail), the parity and throughput RESULT lines inside those details,
jobs.jsonl (the shared UNet call, runai bench --jobs) and phases.jsonl (bench/compare.sh's
output). Every step appears, also the failed and skipped ones. diffusers has no server: its
images/s is one pipeline serving one request at a time (1 / its txt2img median), which is what
the original single-client server delivers to any number of clients. Reads OUT_DIR only;
prints Markdown to stdout.

usage: gpu_summary.py OUT_DIR"""
import json
import os
import sys


def load_phases(path):
    """{phase: {impl: result}}, the last run of each winning (as bench/table.py reads it)."""
    rows = {}
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                rows.setdefault(r["phase"], {})[r["impl"]] = r["result"]
    return rows


def fmt(v, spec="{:.3f}"):
    return spec.format(v) if isinstance(v, (int, float)) else "-"


def shared_call(path):
    """One UNet call shared by J jobs (runai bench --jobs J): seconds per call and the cost
    per job against one job alone, for each J measured."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        return "no RESULT lines"
    alone = next((r["median_s"] for r in rows if r["jobs"] == 1), None)
    parts = []
    for r in rows:
        per_job = r["median_s"] / r["jobs"]
        rel = f", {per_job / alone:.2f}x per job of one alone" if alone else ""
        parts.append(f"{r['jobs']} job(s): {r['median_s']:.4f} s per call{rel}")
    return "; ".join(parts) + f" ({rows[0]['phase']}, {rows[0]['dtype']})"


def main(out):
    steps = []
    for line in open(os.path.join(out, "steps.tsv")):
        name, status, detail = (line.rstrip("\n").split("\t") + ["", ""])[:3]
        steps.append((name, status, detail))
    phases = load_phases(os.path.join(out, "phases.jsonl"))
    print("| step | status | runai | diffusers | runai / diffusers | detail |")
    print("|---|---|---:|---:|---:|---|")
    txt2img = next((p for p in phases if p.startswith("txt2img_")), None)
    for name, status, detail in steps:
        runai = ref = ratio = "-"
        if name.startswith("parity ") and detail.startswith("{"):
            r, end = json.JSONDecoder().raw_decode(detail)
            used = r.get("worst_of_limit", {})
            worst = ", ".join(f"{k} {v:.1e} ({used.get(k, 0):.0%} of limit)"
                              for k, v in r["worst"].items() if k != "vae_decode_out")
            detail = (f"{r['cases']} cases on {r['device']}, {r['failed_cases']} failed; worst "
                      f"{worst}, png {r['worst_png_levels']} levels" + detail[end:])
        elif name.startswith("throughput ") and detail.startswith("{"):
            r = json.loads(detail)
            runai = fmt(r["images_per_s"])
            med = (phases.get(txt2img, {}).get("diffusers") or {}).get("median_s")
            if med and r["size"] == int(txt2img.split("_")[1]):
                ref = fmt(1.0 / med)
                ratio = fmt(r["images_per_s"] * med, "{:.2f}x")
            name = f"images/s, {r['clients']} client{'s' if r['clients'] > 1 else ''}"
            detail = (f"{r['images']} images of {r['size']}x{r['size']}, {r['steps']} steps, "
                      f"median latency {fmt(r['latency_median_s'])} s"
                      + (f", errors {r['errors']}" if r["errors"] else ""))
        elif name == "shared call" and status == "ok":
            detail = shared_call(os.path.join(out, "jobs.jsonl"))
        elif name == "phases" and status == "ok":
            detail = "median seconds below"
        print(f"| {name} | {status} | {runai} | {ref} | {ratio} | {detail} |")
    for phase, impls in phases.items():
        a, b = impls.get("runai"), impls.get("diffusers")
        ma, mb = (a or {}).get("median_s"), (b or {}).get("median_s")
        ratio = fmt(ma / mb, "{:.2f}x") if ma and mb else "-"
        what = (a or b or {}).get("what", "")
        dtypes = " / ".join(x.get("dtype", "?") for x in (a, b) if x)
        print(f"| {phase} (s) | ok | {fmt(ma)} | {fmt(mb)} | {ratio} | {what}; {dtypes} |")


if __name__ == "__main__":
    main(sys.argv[1])
