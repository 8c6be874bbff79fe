#!/usr/bin/env python3
"""A tiny latent-diffusion pipeline folder and diffusers' own LDMPipeline loop on it.

Writes ``tests/fixtures/ldm_pipeline/``:

* ``pipeline/`` -- ``LDMPipeline.save_pretrained``: ``model_index.json``, ``unet/``
  (``UNet2DModel`` on 3-channel 8x8 latents), ``vqvae/`` (``VQModel``, 3 latent channels, a
  16-entry codebook, 2 blocks: 8x8 latents -> 16x16 images, ``scaling_factor`` 0.7 written
  explicitly), ``scheduler/`` (``DDIMScheduler``);
* ``io.safetensors`` -- for each case ``ddim_<steps>`` (1 and 10 steps, eta 0): the starting noise
  ``<case>.noise`` [2, 3, 8, 8], the final latents ``<case>.latents`` (before the division by
  ``scaling_factor``) and the decoded image ``<case>.sample`` [2, 3, 16, 16], both from diffusers'
  float32 loop, which is ``LDMPipeline.__call__``'s loop with the noise given instead of drawn;
* ``manifest.json`` -- versions, configs, and per case the float64 rerun's relative difference
  (how much float32 rounding alone moves the result) and the smallest nearest-codebook margin of
  the decoded latents (quantisation must not sit on a near tie).

Usage: /work/venv/bin/python scripts/make_ldm_fixtures.py [--out tests/fixtures/ldm_pipeline]
(pinned torch / diffusers of scripts/requirements.txt). Deterministic and idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

SCALING_FACTOR = 0.7


def build():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vqvae = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=3,
        sample_size=16,
        num_vq_embeddings=16,
        norm_num_groups=4,
        vq_embed_dim=3,
        scaling_factor=SCALING_FACTOR,
    )
    # Spread the codebook so nearest-entry quantisation has clear winners.
    with torch.no_grad():
        vqvae.quantize.embedding.weight.copy_(torch.randn(16, 3) * 1.5)
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    return LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)


def loop(pipe, noise, steps, dtype):
    """LDMPipeline.__call__'s loop (diffusers 0.42) from given noise."""
    unet = pipe.unet.to(dtype)
    vqvae = pipe.vqvae.to(dtype)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    latents = noise.to(dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            latent_model_input = scheduler.scale_model_input(latents, t)
            noise_prediction = unet(latent_model_input, t).sample
            latents = scheduler.step(noise_prediction, t, latents, eta=0.0).prev_sample
        final = latents
        scaled = latents / vqvae.config.scaling_factor
        image = vqvae.decode(scaled).sample
        # The quantisation margin: second-nearest minus nearest squared distance, per position.
        h = scaled  # VQModel.decode quantises its input directly (quant_conv is encode-side)
        z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).double()
        e = vqvae.quantize.embedding.weight.double()
        d = torch.cdist(z, e) ** 2
        two = d.topk(2, largest=False).values
        margin = (two[:, 1] - two[:, 0]).min().item()
    return final, image, margin


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/ldm_pipeline")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    pipe = build()
    folder = os.path.join(args.out, "pipeline")
    pipe.save_pretrained(folder, safe_serialization=True)
    # Reload what was written, so the loop runs on exactly the saved weights.
    pipe = LDMPipeline.from_pretrained(folder)
    io = {}
    cases = {}
    g = torch.Generator().manual_seed(1234)
    for steps in (1, 10):
        name = f"ddim_{steps}"
        noise = torch.randn((2, 3, 8, 8), generator=g, dtype=torch.float32)
        lat32, img32, margin = loop(pipe, noise, steps, torch.float32)
        lat64, img64, _ = loop(pipe, noise, steps, torch.float64)
        io[f"{name}.noise"] = noise.contiguous()
        io[f"{name}.latents"] = lat32.float().contiguous()
        io[f"{name}.sample"] = img32.float().contiguous()
        cases[name] = dict(
            steps=steps,
            eta=0.0,
            f64_rel_diff_latents=rel(lat32, lat64),
            f64_rel_diff_sample=rel(img32, img64),
            min_codebook_margin=margin,
            max_abs_sample=img32.abs().max().item(),
        )
        print(name, cases[name])
        assert margin > 1e-3, f"{name}: quantisation near a tie ({margin})"
    save_file(io, os.path.join(args.out, "io.safetensors"), metadata={"format": "pt"})
    manifest = dict(
        generator="scripts/make_ldm_fixtures.py",
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__),
        scaling_factor=SCALING_FACTOR,
        cases=cases,
    )
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
