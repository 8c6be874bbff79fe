#!/usr/bin/env python3
"""Quick check of a fashion-sd folder through diffusers (NOT our binary): --per-class images from
each of scripts/train_sd.py's EVAL_PROMPTS and from the empty prompt, at the folder's defaults
(DDIM 20 steps, guidance 7.5), cropped to 28x28 and judged by scripts/eval_quality.py. For deciding
during training (a few seconds of CPU per 100 images); the reported figures come from
scripts/eval_fashion_sd.py, which samples with the wgpu-diffusion binary.

  python scripts/quick_eval_sd.py weights/fashion-sd --per-class 50 --out /work/runs/t2i/quick/shipped
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main():
    from diffusers import StableDiffusionPipeline
    from train_sd import EVAL_PROMPTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    xs, labels = [], []
    t0 = time.time()
    for k, p in enumerate(EVAL_PROMPTS + [""]):
        img = pipe([p] * args.per_class, num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=g, output_type="np", height=32, width=32).images  # [N,32,32,1] in [0,1]
        x = img.transpose(0, 3, 1, 2)[:, :, 2:30, 2:30] * 2.0 - 1.0
        xs.append(x.astype(np.float32))
        labels += [k] * args.per_class
    print(f"sampled {len(labels)} images in {time.time() - t0:.1f} s", flush=True)
    f = out / "all.safetensors"
    save_file({"sample": np.ascontiguousarray(np.concatenate(xs))}, str(f))
    (out / "labels.json").write_text(json.dumps(labels))
    subprocess.run([sys.executable, str(HERE / "eval_quality.py"), str(f), "--labels",
                    str(out / "labels.json"), "--json", str(out / "report.json")], check=True)


if __name__ == "__main__":
    main()
