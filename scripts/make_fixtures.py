#!/usr/bin/env python3
"""Generate small reference fixtures for the Rust/wgpu port of diffusers' UNet2DModel.

Each fixture is a directory ``<out>/<name>/`` holding

* ``config.json``                        -- written by ``UNet2DModel.save_pretrained``
* ``diffusion_pytorch_model.safetensors`` -- the weights (f32, f16 or bf16; legacy key names
                                            for the ``legacy_attention_names`` fixture)
* ``io.safetensors``                     -- float32 inputs / reference outputs / activations,
                                            computed in float64 (``model.double()``)

plus ``<out>/MANIFEST.json`` and ``<out>/README.md``.

Usage (from the repository root):

    /tmp/venv/bin/python scripts/make_fixtures.py [--out tests/fixtures]

The script is deterministic (fixed seeds, single-threaded torch) and idempotent: it deletes
and rewrites each fixture directory it produces.
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
from diffusers import UNet2DModel

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
IO_NAME = "io.safetensors"

GOOGLE_FLAGS = dict(flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, norm_eps=1e-6)

# name -> spec. "kwargs" are passed verbatim to UNet2DModel(...).
FIXTURES: "OrderedDict[str, dict]" = OrderedDict()

FIXTURES["google_flags"] = dict(
    description=(
        "Google/DDPM-style flags: flip_sin_to_cos=False, freq_shift=1, downsample_padding=0 "
        "(asymmetric pad before the stride-2 conv), norm_eps=1e-6, attention_head_dim=None "
        "(one head, head dim = C). layers_per_block=2. Channels (8, 16), 4 groups (narrower than "
        "the (16, 32) first planned, to keep the f32 fixture well under 1 MB)."
    ),
    kwargs=dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=4,
        attention_head_dim=None,
        **GOOGLE_FLAGS,
    ),
    hw=(16, 16),
    timesteps=[17.5, 999.0],
    seed=1001,
)

FIXTURES["default_flags_multihead"] = dict(
    description=(
        "diffusers default flags (flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, "
        "norm_eps=1e-5), attention_head_dim=8 (multi-head, C/8 heads), 1 channel, "
        "odd spatial sizes 28 -> 14 -> 7, three resolution levels, channels (8, 16, 16) with 4 "
        "groups (2 heads of dim 8 in the attention blocks)."
    ),
    kwargs=dict(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
    ),
    hw=(28, 28),
    timesteps=[0.0, 421.25],
    seed=1002,
)

FIXTURES["legacy_attention_names"] = dict(
    description=(
        "Same flags as google_flags with layers_per_block=1; the weights file uses the legacy "
        "attention key names (query/key/value/proj_attn instead of to_q/to_k/to_v/to_out.0). "
        "The reference output comes from the original (non-renamed) model."
    ),
    kwargs=dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=None,
        **GOOGLE_FLAGS,
    ),
    hw=(16, 16),
    timesteps=[3.75, 640.5],
    seed=1003,
    legacy_names=True,
)

FIXTURES["f16_weights"] = dict(
    description=(
        "Like default_flags_multihead but 3 channels / 16x16 and the wider (16, 32, 32) channels "
        "with 8 groups (4 heads of dim 8); weights stored as float16. "
        "The reference is computed from the f16-rounded weights (exact for an f16->f32 loader)."
    ),
    kwargs=dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    ),
    hw=(16, 16),
    timesteps=[250.125, 1.5],
    seed=1004,
    weight_dtype="float16",
)

FIXTURES["class_conditional"] = dict(
    description=(
        "Class-conditional (num_class_embeds=11 -> nn.Embedding added to the time embedding), "
        "google-style flags, layers_per_block=1, channels (8, 16). io.safetensors has int64 "
        "class_labels."
    ),
    kwargs=dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=None,
        num_class_embeds=11,
        **GOOGLE_FLAGS,
    ),
    hw=(16, 16),
    timesteps=[77.0, 512.75],
    class_labels=[3, 10],
    seed=1005,
)

FIXTURES["no_mid_attention_bf16"] = dict(
    description=(
        "Mid block without attention (add_attention=False), center_input_sample=True "
        "(sample -> 2*sample-1), non-square 12x20 input (sample_size=(12, 20)), "
        "attention_head_dim=4, weights stored as bfloat16 (reference from bf16-rounded weights)."
    ),
    kwargs=dict(
        sample_size=(12, 20),
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        add_attention=False,
        center_input_sample=True,
    ),
    hw=(12, 20),
    timesteps=[999.5, 33.25],
    seed=1006,
    weight_dtype="bfloat16",
)

LEGACY_RENAMES = [
    (".to_q.", ".query."),
    (".to_k.", ".key."),
    (".to_v.", ".value."),
    (".to_out.0.", ".proj_attn."),
]

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------------


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter so that no weight is at a trivial value (1/0 norm affine, ...)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.ndim == 1:
                # norm weights / biases, conv & linear biases
                p.add_(noise * 0.1)
            elif name.startswith("class_embedding"):
                # nn.Embedding is N(0, 1) by default; keep it comparable to the time embedding
                p.mul_(0.5).add_(noise * 0.5)
            else:
                # conv / linear weights: add noise with the std of the existing weight
                std = p.std().item()
                p.add_(noise * std)


def check_perturbed(model: torch.nn.Module) -> None:
    """No parameter tensor may be constant (e.g. GroupNorm weight all 1 / bias all 0)."""
    for name, p in model.named_parameters():
        if p.numel() > 1:
            assert p.detach().std().item() > 0.01, f"{name} looks unperturbed"


def round_params_(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dtype).to(p.dtype)


def build_model(spec: dict) -> UNet2DModel:
    torch.manual_seed(spec["seed"])
    model = UNet2DModel(**spec["kwargs"])
    model.eval()
    perturb_(model, spec["seed"] + 50_000)
    check_perturbed(model)
    wdt = spec.get("weight_dtype", "float32")
    if wdt != "float32":
        round_params_(model, TORCH_DTYPES[wdt])
    return model


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------


def register_hooks(model: UNet2DModel, store: "OrderedDict[str, torch.Tensor]"):
    handles = []

    def hook_for(key):
        def hook(_module, _inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            assert key not in store, f"{key} fired twice"
            store[key] = t.detach().clone()

        return hook

    def add(key, module):
        handles.append(module.register_forward_hook(hook_for(key)))

    add("act.time_proj", model.time_proj)
    add("act.time_embedding", model.time_embedding)
    if model.class_embedding is not None:
        add("act.class_embedding", model.class_embedding)
    add("act.conv_in", model.conv_in)
    for i, b in enumerate(model.down_blocks):
        add(f"act.down_blocks.{i}", b)
    if model.mid_block is not None:
        add("act.mid_block", model.mid_block)
    for i, b in enumerate(model.up_blocks):
        add(f"act.up_blocks.{i}", b)
    add("act.conv_norm_out", model.conv_norm_out)
    add("act.conv_act", model.conv_act)
    return handles


# --------------------------------------------------------------------------------------------
# fixture writing
# --------------------------------------------------------------------------------------------


def convert_weights_file(path: str, dtype: str, legacy: bool) -> list[str]:
    sd = load_file(path)
    out = OrderedDict()
    renamed = []
    for k in sd:
        v = sd[k]
        nk = k
        if legacy and (".attentions." in k):
            for a, b in LEGACY_RENAMES:
                if a in nk:
                    nk = nk.replace(a, b)
            if nk != k:
                renamed.append(f"{k} -> {nk}")
        if dtype != "float32":
            v = v.to(TORCH_DTYPES[dtype])
        out[nk] = v.contiguous()
    os.remove(path)
    save_file(out, path, metadata={"format": "pt"})
    return renamed


def make_fixture(name: str, spec: dict, out_root: str) -> dict:
    print(f"\n=== {name} ===")
    fdir = os.path.join(out_root, name)
    if os.path.isdir(fdir):
        shutil.rmtree(fdir)
    os.makedirs(fdir)

    model = build_model(spec)
    wdt = spec.get("weight_dtype", "float32")
    legacy = spec.get("legacy_names", False)
    n_params = sum(p.numel() for p in model.parameters())

    # weights: save_pretrained (f32), then post-process dtype / key names
    model.save_pretrained(fdir, safe_serialization=True)
    produced = sorted(os.listdir(fdir))
    assert produced == ["config.json", WEIGHTS_NAME], produced
    wpath = os.path.join(fdir, WEIGHTS_NAME)
    renamed = convert_weights_file(wpath, wdt, legacy) if (wdt != "float32" or legacy) else []

    # inputs
    g = torch.Generator().manual_seed(spec["seed"] + 100_000)
    n = 2
    cin = spec["kwargs"]["in_channels"]
    h, w = spec["hw"]
    sample = torch.randn((n, cin, h, w), generator=g, dtype=torch.float32)
    timesteps = torch.tensor(spec["timesteps"], dtype=torch.float32)
    assert timesteps.shape == (n,)
    class_labels = None
    if "class_labels" in spec:
        class_labels = torch.tensor(spec["class_labels"], dtype=torch.int64)

    # reference forward in float64
    model64 = model.double()
    acts: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    handles = register_hooks(model64, acts)
    with torch.no_grad():
        out = model64(sample.double(), timesteps, class_labels=class_labels).sample
    for hd in handles:
        hd.remove()
    assert out.dtype == torch.float64, out.dtype

    io = OrderedDict()
    io["sample"] = sample
    io["timesteps"] = timesteps
    if class_labels is not None:
        io["class_labels"] = class_labels
    io["output"] = out.float().contiguous()
    for k, v in acts.items():
        io[k] = v.float().contiguous()
    save_file(io, os.path.join(fdir, IO_NAME), metadata={"format": "pt"})

    # report
    print(f"params: {n_params}, weight dtype: {wdt}")
    for k, v in io.items():
        if v.is_floating_point():
            print(f"  {k:24s} {str(tuple(v.shape)):20s} max|x|={v.abs().max().item():9.4f} "
                  f"std={v.std().item():8.4f}")
        else:
            print(f"  {k:24s} {str(tuple(v.shape)):20s} {v.tolist()}")
        assert torch.isfinite(v.double()).all(), k
    if renamed:
        print(f"  renamed {len(renamed)} keys, e.g.:")
        for r in renamed[:8]:
            print(f"    {r}")

    # verification: files load back, and diffusers reloads the saved weights into the same output
    wsd = load_file(wpath)
    dtypes = sorted({str(v.dtype) for v in wsd.values()})
    print(f"  weights file: {len(wsd)} tensors, dtypes {dtypes}")
    legacy_keys = sorted(k for k in wsd if any(b in k for _, b in LEGACY_RENAMES))
    new_keys = sorted(k for k in wsd if any(a in k for a, _ in LEGACY_RENAMES))
    if legacy:
        assert legacy_keys and not new_keys
        print(f"  legacy keys in file: {legacy_keys}")
    iod = load_file(os.path.join(fdir, IO_NAME))
    assert list(iod.keys()) == list(io.keys()) or set(iod.keys()) == set(io.keys())

    reloaded = UNet2DModel.from_pretrained(fdir, torch_dtype=torch.float32, low_cpu_mem_usage=False).double().eval()
    ref_sd = model64.state_dict()
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), f"reloaded param differs: {k}"
    with torch.no_grad():
        out2 = reloaded(sample.double(), timesteps, class_labels=class_labels).sample
    reload_diff = (out2 - out).abs().max().item()
    print(f"  diffusers from_pretrained reload: params identical, max|d output| = {reload_diff:.3e}")
    assert reload_diff == 0.0

    # f32 forward for comparison (how far a plain f32 implementation is expected to be)
    model32 = UNet2DModel.from_pretrained(fdir, torch_dtype=torch.float32, low_cpu_mem_usage=False).float().eval()
    with torch.no_grad():
        out32 = model32(sample, timesteps, class_labels=class_labels).sample
    f32_diff = (out32.double() - out).abs().max().item()
    print(f"  torch f32 forward vs f64 reference: max|d output| = {f32_diff:.3e}")

    size = sum(os.path.getsize(os.path.join(fdir, f)) for f in os.listdir(fdir))
    kw = dict(spec["kwargs"])
    kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    return OrderedDict(
        name=name,
        description=spec["description"],
        unet_kwargs=kw,
        weight_dtype=wdt,
        legacy_attention_names=legacy,
        parameter_count=n_params,
        weight_tensor_count=len(wsd),
        sample_shape=list(sample.shape),
        output_shape=list(out.shape),
        timesteps=spec["timesteps"],
        class_labels=spec.get("class_labels"),
        io_keys=list(io.keys()),
        activation_keys=[k for k in io if k.startswith("act.")],
        activation_shapes={k: list(v.shape) for k, v in io.items() if k.startswith("act.")},
        max_abs_output=round(io["output"].abs().max().item(), 6),
        bytes=size,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", nargs="*", help="generate only these fixtures (MANIFEST still lists all)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    manifest = []
    for name, spec in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        manifest.append(make_fixture(name, spec, args.out))

    if not args.only:
        doc = OrderedDict(
            generator="scripts/make_fixtures.py",
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
