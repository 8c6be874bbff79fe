#!/usr/bin/env python3
"""Generate small reference fixtures for the Rust/wgpu port of diffusers' AutoencoderKL and
VQModel (the sibling of make_fixtures.py, same pinned versions: scripts/requirements.txt).

Each fixture is a directory ``<out>/<name>/`` holding

* ``config.json``                        -- written by ``save_pretrained`` (edited where the
                                            fixture says so, e.g. ``scaling_factor`` removed)
* ``diffusion_pytorch_model.safetensors`` -- f32 weights (legacy attention key names where the
                                            fixture says so)
* ``io.safetensors``                     -- float32 inputs / reference outputs / activations,
                                            computed in float64 (``model.double()``)

plus ``<out>/MANIFEST.json``. Usage (from the repository root):

    /work/venv/bin/python scripts/make_vae_fixtures.py [--out tests/fixtures/vae]

Deterministic (fixed seeds, one torch thread) and idempotent (rewrites every fixture directory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import OrderedDict

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import AutoencoderKL, VQModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import LEGACY_RENAMES, check_perturbed, perturb_  # noqa: E402

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
IO_NAME = "io.safetensors"

FIXTURES: "OrderedDict[str, dict]" = OrderedDict()

FIXTURES["kl_rgb"] = dict(
    description=(
        "AutoencoderKL 3->3 channels, latent_channels 4, block_out_channels (8, 16), "
        "layers_per_block 1, norm_num_groups 4, quant_conv and post_quant_conv. Decoder from "
        "[2, 4, 5, 7] latents (odd sizes) to [2, 3, 10, 14]; encoder from an odd 11x13 image "
        "(the asymmetric (0,1,0,1) pad of Downsample2D: 11 -> 5, 13 -> 6)."
    ),
    cls="AutoencoderKL",
    kwargs=dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    ),
    latent_hw=(5, 7),
    image_hw=(11, 13),
    seed=2001,
)

FIXTURES["kl_gray_legacy"] = dict(
    description=(
        "AutoencoderKL 1->1 channel, latent_channels 3, block_out_channels (8, 16), "
        "layers_per_block 2, norm_num_groups 8, no quant_conv / post_quant_conv "
        "(use_quant_conv=False, use_post_quant_conv=False), scaling_factor 0.5; the weights "
        "file uses the legacy attention names query/key/value/proj_attn."
    ),
    cls="AutoencoderKL",
    kwargs=dict(
        in_channels=1,
        out_channels=1,
        latent_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=2,
        norm_num_groups=8,
        sample_size=12,
        scaling_factor=0.5,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ),
    latent_hw=(6, 3),
    image_hw=(12, 6),
    seed=2002,
    legacy_names=True,
)

FIXTURES["vq_rgb"] = dict(
    description=(
        "VQModel 3->3 channels, latent_channels 3, vq_embed_dim 4 (quant_conv 3->4, "
        "post_quant_conv 4->3), 13 codebook vectors, block_out_channels (8, 16), "
        "layers_per_block 1, norm_num_groups 4; scaling_factor removed from config.json (as in "
        "CompVis/ldm-celebahq-256, which means 1.0 for us). The decode input is a codebook "
        "vector plus noise of at most a third of the nearest other vector's distance, so the "
        "quantisation has no near ties. act.quantize is the quantised latent; "
        "sample_not_quantized decodes the same input with force_not_quantize."
    ),
    cls="VQModel",
    kwargs=dict(
        in_channels=3,
        out_channels=3,
        latent_channels=3,
        vq_embed_dim=4,
        num_vq_embeddings=13,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    ),
    latent_hw=(5, 7),
    image_hw=(9, 14),
    seed=2003,
    drop_config_keys=["scaling_factor"],
)


def build_model(spec: dict):
    torch.manual_seed(spec["seed"])
    cls = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}[spec["cls"]]
    model = cls(**spec["kwargs"])
    model.eval()
    perturb_(model, spec["seed"] + 50_000)
    if spec["cls"] == "VQModel":
        # An explicit codebook of well separated vectors (N(0, 1) entries).
        g = torch.Generator().manual_seed(spec["seed"] + 70_000)
        with torch.no_grad():
            w = model.quantize.embedding.weight
            w.copy_(torch.randn(w.shape, generator=g))
    check_perturbed(model)
    return model


def register_hooks(model, store):
    handles = []

    def hook_for(key):
        def hook(_module, _inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            assert key not in store, f"{key} fired twice"
            store[key] = t.detach().clone()

        return hook

    def add(key, module):
        if module is not None:
            handles.append(module.register_forward_hook(hook_for(key)))

    enc, dec = model.encoder, model.decoder
    add("act.encoder.conv_in", enc.conv_in)
    for i, b in enumerate(enc.down_blocks):
        add(f"act.encoder.down_blocks.{i}", b)
    add("act.encoder.mid_block", enc.mid_block)
    add("act.encoder.conv_act", enc.conv_act)
    add("act.encoder.conv_out", enc.conv_out)
    add("act.quant_conv", model.quant_conv)
    if hasattr(model, "quantize"):
        add("act.quantize", model.quantize)
    add("act.post_quant_conv", model.post_quant_conv)
    add("act.decoder.conv_in", dec.conv_in)
    add("act.decoder.mid_block", dec.mid_block)
    for i, b in enumerate(dec.up_blocks):
        add(f"act.decoder.up_blocks.{i}", b)
    add("act.decoder.conv_act", dec.conv_act)
    return handles


def vq_latents(model, n, hw, seed):
    """Codebook vectors plus noise well inside their Voronoi cells (no near ties)."""
    e = model.quantize.embedding.weight.detach().double()
    k, d = e.shape
    dist = torch.cdist(e, e) + torch.eye(k, dtype=e.dtype) * 1e9
    half_gap = dist.min(dim=1).values / 2  # per vector: half the distance to its nearest other
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, k, (n, hw[0], hw[1]), generator=g)
    direction = torch.randn((n, hw[0], hw[1], d), generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    radius = torch.rand((n, hw[0], hw[1], 1), generator=g, dtype=torch.float64) * 2 / 3
    z = e[idx] + direction * radius * half_gap[idx].unsqueeze(-1)
    z = z.float().permute(0, 3, 1, 2).contiguous()
    # Margin check on the f32 values: best vs second-best squared distance.
    flat = z.double().permute(0, 2, 3, 1).reshape(-1, d)
    d2 = ((flat[:, None, :] - e[None]) ** 2).sum(-1)
    top2 = d2.topk(2, largest=False).values
    margin = (top2[:, 1] - top2[:, 0]).min().item()
    assert (d2.argmin(dim=1) == idx.reshape(-1)).all()
    return z, idx, margin


def make_fixture(name, spec, out_root):
    print(f"\n=== {name} ===")
    fdir = os.path.join(out_root, name)
    if os.path.isdir(fdir):
        shutil.rmtree(fdir)
    os.makedirs(fdir)
    model = build_model(spec)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(fdir, safe_serialization=True)
    wpath = os.path.join(fdir, WEIGHTS_NAME)
    cpath = os.path.join(fdir, "config.json")
    if spec.get("drop_config_keys"):
        with open(cpath) as f:
            cfg = json.load(f)
        for k in spec["drop_config_keys"]:
            cfg.pop(k, None)
        with open(cpath, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    if spec.get("legacy_names"):
        sd = load_file(wpath)
        out = OrderedDict()
        for k, v in sd.items():
            nk = k
            if ".attentions." in k:
                for a, b in LEGACY_RENAMES:
                    nk = nk.replace(a, b)
            out[nk] = v.contiguous()
        os.remove(wpath)
        save_file(out, wpath, metadata={"format": "pt"})

    n = 2
    g = torch.Generator().manual_seed(spec["seed"] + 100_000)
    kw = spec["kwargs"]
    image = torch.randn((n, kw["in_channels"], *spec["image_hw"]), generator=g)
    io = OrderedDict()
    io["image"] = image
    model64 = model.double()
    acts = OrderedDict()
    handles = register_hooks(model64, acts)
    margin = None
    with torch.no_grad():
        if spec["cls"] == "AutoencoderKL":
            latents = torch.randn((n, kw["latent_channels"], *spec["latent_hw"]), generator=g)
            mean = model64.encode(image.double()).latent_dist.mean
            io["latent_mean"] = mean.float().contiguous()
            sample = model64.decode(latents.double()).sample
        else:
            latents, _idx, margin = vq_latents(
                model64, n, spec["latent_hw"], spec["seed"] + 200_000
            )
            encoded = model64.encode(image.double()).latents
            io["encoded"] = encoded.float().contiguous()
            sample = model64.decode(latents.double()).sample
    for hd in handles:
        hd.remove()
    if spec["cls"] == "VQModel":
        with torch.no_grad():
            raw = model64.decode(latents.double(), force_not_quantize=True).sample
        io["sample_not_quantized"] = raw.float().contiguous()
    io["latents"] = latents
    io["sample"] = sample.float().contiguous()
    for k, v in acts.items():
        io[k] = v.float().contiguous()
    save_file(io, os.path.join(fdir, IO_NAME), metadata={"format": "pt"})

    print(f"params: {n_params}" + (f", quantisation margin {margin:.3e}" if margin else ""))
    for k, v in io.items():
        print(f"  {k:32s} {str(tuple(v.shape)):18s} max|x|={v.abs().max().item():9.4f}")
        assert torch.isfinite(v.double()).all(), k

    # diffusers reloads the saved folder (legacy names included) into the same decode.
    cls = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}[spec["cls"]]
    reloaded = cls.from_pretrained(fdir, low_cpu_mem_usage=False).double().eval()
    ref = model64.state_dict()
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, ref[k]), f"reloaded param differs: {k}"
    with torch.no_grad():
        again = reloaded.decode(latents.double()).sample
    assert (again - sample).abs().max().item() == 0.0
    if spec.get("drop_config_keys"):
        # What diffusers does with the key absent: its own default (0.18215).
        print(f"  diffusers' scaling_factor with the key absent: {reloaded.config.scaling_factor}")

    size = sum(os.path.getsize(os.path.join(fdir, f)) for f in os.listdir(fdir))
    assert size < 1_000_000, size
    return OrderedDict(
        name=name,
        cls=spec["cls"],
        description=spec["description"],
        kwargs={k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
        legacy_attention_names=spec.get("legacy_names", False),
        dropped_config_keys=spec.get("drop_config_keys", []),
        parameter_count=n_params,
        io_shapes={k: list(v.shape) for k, v in io.items()},
        quantisation_margin=margin,
        bytes=size,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/vae")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    manifest = [make_fixture(name, spec, args.out) for name, spec in FIXTURES.items()]
    doc = OrderedDict(
        generator="scripts/make_vae_fixtures.py",
        versions=OrderedDict(
            torch=torch.__version__.split("+")[0],
            diffusers=diffusers.__version__,
            safetensors=__import__("safetensors").__version__,
            numpy=np.__version__,
        ),
        fixtures=manifest,
    )
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("\ndone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
