#!/usr/bin/env python3
"""Judge weights/fashion-sd through OUR binary (not diffusers): images from each class's prompt
(scripts/train_sd.py EVAL_PROMPTS, e.g. "a pair of sneakers") and from the empty prompt (class
coverage), at the folder's default sampler, steps and guidance. The 32x32 outputs are cropped to
the 28x28 data area (training padded 28 -> 32 with the background) and judged by
scripts/eval_quality.py (classifier accuracy, FD vs the real test split).

  python scripts/eval_fashion_sd.py --model weights/fashion-sd --out /work/runs/t2i/eval --chunks 10

One binary run per chunk: 11 prompts cycled over 11 x --per-chunk images (image i has prompt
i mod 11; 10 = the empty prompt), seed SEED0 + chunk, so a chunk batches all prompts together
(the GPU's fixed per-dispatch cost is shared). Chunks are saved (OUT/chunk_<c>.safetensors) and
skipped when present, so a killed evaluation resumes; --chunks 10 --per-chunk 10 is 100 images
per prompt. BIN overrides the binary.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main():
    from train_sd import EVAL_PROMPTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(HERE.parent / "weights" / "fashion-sd"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--per-chunk", type=int, default=10, help="images per prompt in a chunk")
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--bin", default=os.environ.get("BIN", str(HERE.parent / "target/debug/wgpu-diffusion")))
    ap.add_argument("extra", nargs="*", help="more `sample` flags (after --)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = EVAL_PROMPTS + [""]
    flags = [a for p in prompts for a in ("--prompt", p)]
    n = len(prompts) * args.per_chunk
    xs = []
    for c in range(args.chunks):
        f = out / f"chunk_{c}.safetensors"
        if not f.exists():
            t0 = time.time()
            subprocess.run([args.bin, "sample", "--model", args.model, *flags,
                            "--num-images", str(n), "--seed", str(args.seed0 + c),
                            "--save-tensor", str(f), "-o", str(out / f"chunk_{c}.png"), "-q",
                            *args.extra], check=True)
            line = f"chunk {c} seed {args.seed0 + c}: {n} images in {time.time() - t0:.1f} s"
            print(line, flush=True)
            with open(out / "timings.log", "a") as fh:
                fh.write(line + "\n")
        x = load_file(str(f))["sample"]
        assert x.shape == (n, 1, 32, 32), f"{f}: shape {x.shape}, expected [{n}, 1, 32, 32]"
        xs.append(x[:, :, 2:30, 2:30])
    labels = [i % len(prompts) for i in range(n)] * args.chunks  # 10 = unconditional
    save_file({"sample": np.ascontiguousarray(np.concatenate(xs))}, str(out / "all.safetensors"))
    (out / "labels.json").write_text(json.dumps(labels))
    subprocess.run([sys.executable, str(HERE / "eval_quality.py"), str(out / "all.safetensors"),
                    "--labels", str(out / "labels.json"), "--json", str(out / "report.json")],
                   check=True)


if __name__ == "__main__":
    main()
