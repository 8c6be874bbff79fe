#!/usr/bin/env python3
"""Merges scripts/gpu_bench.sh's raw outputs into one JSON and a markdown table.

    python3 scripts/gpu_bench_report.py RAW_DIR OUT.json OUT.md [--elapsed S] [--tiny 0|1]

RAW_DIR holds `ours-PRESET.json` (`wgpu-diffusion bench --json`, schema wgpu-diffusion-bench/1),
`torch-PRESET.json` (scripts/bench_pytorch.py --json, schema wgpu-diffusion-bench-pytorch/2),
`steps.tsv` (name, status, seconds, note), `adapters.out` and `nvidia-smi.txt`. Standard library
only, so it runs wherever the bench ran. The JSON (schema "wgpu-diffusion-gpu-bench/1") keeps
every input report whole under "ours" / "pytorch" and adds "rows": one per (workload, batch) with
our median, PyTorch's per dtype, and speed = PyTorch ms / our ms (≥ 1: we are as fast or faster).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"gpu_bench_report: {path}: {e}", file=sys.stderr)
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def steps(raw):
    out = []
    for line in read_text(os.path.join(raw, "steps.tsv")).splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out.append(dict(name=parts[0], status=parts[1], seconds=int(parts[2] or 0),
                            note=parts[3] if len(parts) > 3 else ""))
    return out


def by_preset(raw, prefix):
    found = {}
    for path in sorted(glob.glob(os.path.join(raw, f"{prefix}-*.json"))):
        preset = os.path.basename(path)[len(prefix) + 1:-len(".json")]
        doc = read_json(path)
        if doc is not None:
            found[preset] = doc
    return found


def top_family(result):
    kernels = result.get("kernels") or {}
    families = kernels.get("families") or []
    if not families:
        return None
    best = max(families, key=lambda f: f.get("share", 0))
    return dict(family=best.get("family"), share=best.get("share"),
                gflops_per_s=best.get("gflops_per_s"))


def rows(ours, pytorch):
    table = []
    for preset, report in ours.items():
        workload = report.get("workload", {})
        torch_doc = pytorch.get(preset, {})
        for adapter in report.get("adapters", []):
            for r in adapter.get("results", []):
                fwd = r.get("forward_ms") or {}
                row = dict(workload=preset, height=workload.get("height"),
                           width=workload.get("width"), batch=r.get("batch"),
                           adapter=f"{adapter.get('name')} ({adapter.get('backend')}"
                           + (", shader checks off" if adapter.get("shader_checks") is False
                              else "")
                           + (", fixed tiles" if adapter.get("tiles") == "fixed" else "") + ")",
                           driver=adapter.get("driver_info"), status=adapter.get("status"),
                           error=r.get("error") or adapter.get("error"),
                           ours_ms=fwd.get("median"), ours_images_per_s=r.get("images_per_s"),
                           ours_gflops_per_s=r.get("gflops_per_s"), top_kernel=top_family(r),
                           decode_ms=((r.get("decode") or {}).get("decode_ms") or {}).get("median"),
                           text_encode_ms=((r.get("text_encode") or {}).get("encode_ms") or {})
                           .get("median"),
                           pytorch={})
                for t in torch_doc.get("results", []):
                    if t.get("batch") == r.get("batch"):
                        ms = t["forward_ms"]["median"]
                        speed = (ms / row["ours_ms"]) if row["ours_ms"] else None
                        row["pytorch"][t.get("dtype", "fp32")] = dict(ms=ms, speed=speed)
                table.append(row)
    return table


def fmt(x, spec=".1f", unit=""):
    return "—" if x is None else format(x, spec) + unit


def markdown(doc):
    lines = []
    gpu = doc["nvidia_smi"].strip() or "no nvidia-smi"
    torch_device = next(iter(doc["pytorch"].values()), {}).get("device", "no PyTorch run")
    lines.append(f"GPU: {gpu}. PyTorch: {torch_device}. Run took {doc['elapsed_s']} s"
                 + (" (GPU_BENCH_TINY=1: reduced sizes, not comparable)" if doc["tiny"] else "")
                 + ".")
    lines.append("")
    lines.append("Speed = PyTorch ms / our ms (≥ 1: we are as fast or faster); sizes are the "
                 "model's input (latents for SD).")
    lines.append("")
    lines.append("| workload | batch | adapter | ours ms | img/s | GFLOP/s | top kernel (share) "
                 "| torch fp32 ms | speed vs fp32 | torch fp16 ms | speed vs fp16 |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        top = r["top_kernel"]
        top_s = f"{top['family']} ({top['share'] * 100:.0f} %)" if top else "—"
        p32 = r["pytorch"].get("fp32", {})
        p16 = r["pytorch"].get("fp16", {})
        size = f"{r['workload']} ({r['height']}×{r['width']} in)"
        ours = fmt(r["ours_ms"]) if r["ours_ms"] is not None else f"error: {r['error']}"
        lines.append(f"| {size} | {r['batch']} | {r['adapter']} | {ours} | "
                     f"{fmt(r['ours_images_per_s'], '.2f')} | {fmt(r['ours_gflops_per_s'])} | "
                     f"{top_s} | {fmt(p32.get('ms'))} | {fmt(p32.get('speed'), '.2f', '×')} | "
                     f"{fmt(p16.get('ms'))} | {fmt(p16.get('speed'), '.2f', '×')} |")
    extra = [r for r in doc["rows"] if r["decode_ms"] is not None or r["text_encode_ms"] is not None]
    if extra:
        lines.append("")
        lines.append("| workload | batch | text encode ms | decode ms |")
        lines.append("|---|---|---|---|")
        for r in extra:
            lines.append(f"| {r['workload']} | {r['batch']} | {fmt(r['text_encode_ms'])} | "
                         f"{fmt(r['decode_ms'])} |")
    bad = [s for s in doc["steps"] if s["status"] != "ok"]
    if bad:
        lines.append("")
        lines.append("Steps not completed: " + "; ".join(
            f"{s['name']} {s['status']} ({s['note']})" for s in bad))
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpu-bench-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw")
    p.add_argument("json_out")
    p.add_argument("md_out")
    p.add_argument("--elapsed", type=int, default=0)
    p.add_argument("--tiny", default="0")
    args = p.parse_args(argv)
    ours = by_preset(args.raw, "ours")
    pytorch = by_preset(args.raw, "torch")
    doc = dict(schema="wgpu-diffusion-gpu-bench/1", created_unix_s=int(time.time()),
               tiny=args.tiny == "1", elapsed_s=args.elapsed,
               nvidia_smi=read_text(os.path.join(args.raw, "nvidia-smi.txt")),
               adapters=read_text(os.path.join(args.raw, "adapters.out")),
               steps=steps(args.raw), rows=rows(ours, pytorch), ours=ours, pytorch=pytorch)
    write_atomic(args.json_out, json.dumps(doc, indent=2) + "\n")
    table = markdown(doc)
    write_atomic(args.md_out, table)
    print(table)
    if not doc["rows"]:
        print("gpu_bench_report: no benchmark produced a result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
