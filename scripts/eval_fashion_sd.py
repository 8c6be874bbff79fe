#!/usr/bin/env python3
"""Judge weights/fashion-sd through OUR binary (not diffusers): for each class, N images from its
prompt (scripts/train_sd.py EVAL_PROMPTS, e.g. "a pair of sneakers") at the folder's default
sampler, steps and guidance; then N images from the empty prompt (class coverage). The 32x32
outputs are cropped to the 28x28 data area (training padded 28 -> 32 with the background) and
judged by scripts/eval_quality.py (classifier accuracy, FD vs the real test split).

  python scripts/eval_fashion_sd.py --model weights/fashion-sd --out /work/runs/t2i/eval --n 100

Each prompt's run is saved (OUT/prompt_<k>.safetensors, seed SEED0 + k; k = 10 the empty prompt)
and skipped when present, so a killed evaluation resumes. BIN overrides the binary.
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
    ap.add_argument("--n", type=int, default=100, help="images per prompt")
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--bin", default=os.environ.get("BIN", str(HERE.parent / "target/debug/wgpu-diffusion")))
    ap.add_argument("extra", nargs="*", help="more `sample` flags (after --)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = EVAL_PROMPTS + [""]
    xs, labels, log = [], [], []
    for k, prompt in enumerate(prompts):
        f = out / f"prompt_{k}.safetensors"
        if not f.exists():
            t0 = time.time()
            subprocess.run([args.bin, "sample", "--model", args.model, "--prompt", prompt,
                            "--num-images", str(args.n), "--seed", str(args.seed0 + k),
                            "--save-tensor", str(f), "-o", str(out / f"prompt_{k}.png"), "-q",
                            *args.extra], check=True)
            line = f"prompt {k} {prompt!r}: {args.n} images in {time.time() - t0:.1f} s"
            print(line, flush=True)
            log.append(line)
        x = load_file(str(f))["sample"]
        assert x.shape[1:] == (1, 32, 32), f"{f}: shape {x.shape}, expected [N, 1, 32, 32]"
        xs.append(x[:, :, 2:30, 2:30])
        labels += [k] * x.shape[0]  # 10 = unconditional for the judge
    with open(out / "timings.log", "a") as fh:
        fh.writelines(line + "\n" for line in log)
    save_file({"sample": np.ascontiguousarray(np.concatenate(xs))}, str(out / "all.safetensors"))
    (out / "labels.json").write_text(json.dumps(labels))
    subprocess.run([sys.executable, str(HERE / "eval_quality.py"), str(out / "all.safetensors"),
                    "--labels", str(out / "labels.json"), "--json", str(out / "report.json")],
                   check=True)


if __name__ == "__main__":
    main()
