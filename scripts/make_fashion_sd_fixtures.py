#!/usr/bin/env python3
"""Parity fixture for tests/fashion_sd.rs: diffusers' own StableDiffusionPipeline on the trained
weights/fashion-sd folder, from given latents, for our pipeline to match.

Writes ``tests/fixtures/fashion_sd/``:

* ``io.safetensors`` -- per case ``<case>.noise`` [2, 4, 8, 8] (the given latents), ``<case>.latents``
  (the final latents, output_type="latent") and ``<case>.image`` [2, 1, 32, 32]
  (``vae.decode(latents / scaling_factor)``, before any clamping).
* ``manifest.json`` -- the cases (prompts, negative prompts, sampler, steps, guidance scale), the
  package versions and a digest of each weight file the reference ran on.

The pipeline runs in float64 on the stored weights (the token embedding table is stored F16; its
values are exact in float64), so the reference carries no float32 rounding of its own.
Usage: /work/venv/bin/python scripts/make_fashion_sd_fixtures.py (pinned torch / diffusers /
transformers of scripts/requirements.txt and requirements-clip.txt). Deterministic and idempotent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "weights" / "fashion-sd"
OUT = ROOT / "tests" / "fixtures" / "fashion_sd"

CASES = [
    # case, prompts, negative prompts, scheduler class (None: the folder's own), steps, guidance
    ("default", ["a pair of sneakers", "a photo of a dress"], None, None, 20, 7.5),
    ("negative_euler", ["a photo of a bag", ""], ["a pair of trousers", "a photo of a coat"],
     "EulerDiscreteScheduler", 8, 4.0),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32)
    pipe = pipe.to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    own = pipe.scheduler
    g = torch.Generator().manual_seed(17)
    tensors, cases = {}, []
    for case, prompts, negative, sched, steps, scale in CASES:
        noise = torch.randn(2, 4, 8, 8, generator=g)
        if sched is None:
            pipe.scheduler = own
        else:
            pipe.scheduler = {"DDIMScheduler": DDIMScheduler,
                              "EulerDiscreteScheduler": EulerDiscreteScheduler}[sched].from_config(own.config)
        with torch.no_grad():
            latents = pipe(prompt=prompts, negative_prompt=negative, num_inference_steps=steps,
                           guidance_scale=scale, height=32, width=32,
                           latents=noise.clone().double(), output_type="latent").images
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        tensors[f"{case}.noise"] = noise
        tensors[f"{case}.latents"] = latents.float().contiguous()
        tensors[f"{case}.image"] = image.float().contiguous()
        cases.append({"case": case, "prompt": prompts, "negative_prompt": negative,
                      "sampler": sched or type(own).__name__, "steps": steps,
                      "guidance_scale": scale,
                      "max_abs_latents": float(latents.abs().max()),
                      "max_abs_image": float(image.abs().max())})
    save_file(tensors, str(OUT / "io.safetensors"))
    digests = {str(p.relative_to(MODEL)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(MODEL.rglob("*.safetensors"))}
    manifest = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                             "transformers": transformers.__version__},
                "model": "weights/fashion-sd", "weights_sha256": digests, "cases": cases}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
