#!/usr/bin/env python3
"""PyTorch/diffusers twin of `wgpu-diffusion bench`: the same U-Net architectures and batches,
timed by the same rules, so the two can be put side by side.

Timing rules (as src/bench/mod.rs): a forward pass is `UNet2DModel(sample, t)` under
`torch.inference_mode()`, eager, in each `--dtype` (fp32 by default; fp16 for CUDA); on CUDA the
clock stops after `torch.cuda.synchronize()`. The Stable Diffusion presets (sd15-512,
sd-turbo-512) run `UNet2DConditionModel` as our bench does: 2 rows per image (guidance) against
77-token random text embeddings; `--height/--width` are the image's (latents are ÷ 8).
`--warmup` passes are excluded; the median of `--runs` passes is reported with min and max.
The input is fixed noise in [-1, 1) and timestep 500 (labels i % classes for class-conditional
models). Weights are PyTorch's default initialisation (values do not change the work done).

    python scripts/bench_pytorch.py --preset cifar10-32 --batch 1,8 --runs 5
    python scripts/bench_pytorch.py --model weights/fashion-ddpm --batch 16
    python scripts/bench_pytorch.py --preset cifar10-32 --batch 1,8 --ours bench.json   # ratio
    python scripts/bench_pytorch.py --preset sd15-512 --batch 1 --device cuda --dtype fp32,fp16

CPU threads: 2 by default (`--threads`), matching the machine the README numbers come from.
`--json FILE` writes {"schema": "wgpu-diffusion-bench-pytorch/2", "device", "torch", "diffusers",
"threads", "workload", "height", "width", "results": [{"batch", "dtype", "forward_ms":
{"median","min","max","runs"}, "images_per_s", "parameters"}]}. `--ours FILE` reads a `wgpu-diffusion bench --json` report
and prints our median and the ratio (ours / PyTorch latency; > 1 means we are slower) per
adapter and batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
from diffusers import UNet2DConditionModel, UNet2DModel

# google/ddpm-cifar10-32 and google/ddpm-celebahq-256 (keys their config.json sets); the same
# text as src/bench/preset.rs.
PRESETS = {
    "cifar10-32": dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        norm_eps=1e-6,
        norm_num_groups=32,
        attention_head_dim=None,
        mid_block_scale_factor=1,
        act_fn="silu",
        center_input_sample=False,
        time_embedding_type="positional",
    ),
    "celebahq-256": dict(
        sample_size=256,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        norm_eps=1e-6,
        norm_num_groups=32,
        attention_head_dim=None,
        mid_block_scale_factor=1,
        act_fn="silu",
        center_input_sample=False,
        time_embedding_type="positional",
    ),
}

# Stable Diffusion 1.5 and SD-Turbo (SD 2.1) U-Nets: src/bench/preset.rs's SD15_UNET_CONFIG and
# SD_TURBO_UNET_CONFIG. Run with guidance: 2 rows per image, 77 text tokens.
SD_PRESETS = {
    "sd15-512": dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8,
        cross_attention_dim=768,
        downsample_padding=1,
        flip_sin_to_cos=True,
        freq_shift=0,
        norm_eps=1e-5,
        norm_num_groups=32,
        act_fn="silu",
    ),
    "sd-turbo-512": dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        downsample_padding=1,
        flip_sin_to_cos=True,
        freq_shift=0,
        norm_eps=1e-5,
        norm_num_groups=32,
        act_fn="silu",
    ),
}
TEXT_TOKENS = 77
LATENT_FACTOR = 8
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS) + sorted(SD_PRESETS) + ["bundled"],
                     default="cifar10-32")
    src.add_argument("--model", help="diffusers UNet2DModel directory (config.json + weights)")
    p.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default="fp32",
                   help="comma-separated: fp32, fp16, bf16 (each timed in turn; default fp32)")
    p.add_argument("--height", type=int, help="image height (default: the workload's)")
    p.add_argument("--width", type=int, help="image width (default: the workload's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results as JSON to this file (atomically)")
    p.add_argument("--ours", help="a `wgpu-diffusion bench --json` report to compare against")
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch must be comma-separated integers, got {args.batch!r}")
    if not args.batches or min(args.batches) < 1:
        p.error("--batch sizes must be at least 1")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad or not args.dtypes:
        p.error(f"--dtype must be a comma list of {', '.join(DTYPES)}, got {args.dtype!r}")
    for flag in ("height", "width"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            p.error(f"--{flag} must be at least 1")
    return args


def build_model(args):
    """Returns (workload name, model) — random init for presets, the checkpoint for --model."""
    if args.model or args.preset == "bundled":
        path = args.model or os.path.join(os.path.dirname(__file__), "..", "weights", "fashion-ddpm")
        if not os.path.isfile(os.path.join(path, "diffusion_pytorch_model.safetensors")):
            sys.exit(f"error: {path}: no diffusion_pytorch_model.safetensors "
                     "(use --preset cifar10-32 or another --model)")
        return (args.model or "bundled"), UNet2DModel.from_pretrained(path)
    torch.manual_seed(args.seed)
    if args.preset in SD_PRESETS:
        return args.preset, UNet2DConditionModel(**SD_PRESETS[args.preset])
    return args.preset, UNet2DModel(**PRESETS[args.preset])


def sample_size(model, args):
    """(h, w) of the model's input: --height/--width (the image's; ÷ 8 for latent U-Nets)."""
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    latent = getattr(model.config, "cross_attention_dim", None) is not None
    factor = LATENT_FACTOR if latent else 1
    if args.height is not None:
        h = max(1, args.height // factor)
    if args.width is not None:
        w = max(1, args.width // factor)
    return h, w


def time_forward(model, batch, args, device, dtype):
    cfg = model.config
    h, w = sample_size(model, args)
    gen = torch.Generator().manual_seed(args.seed)
    conditional = getattr(cfg, "cross_attention_dim", None) is not None
    rows = 2 * batch if conditional else batch  # guidance: conditional + unconditional rows
    sample = (torch.rand(rows, cfg.in_channels, h, w, generator=gen) * 2 - 1).to(device, dtype)
    t = torch.full((rows,), 500.0, device=device)
    kwargs = {}
    if conditional:
        kwargs["encoder_hidden_states"] = torch.randn(
            rows, TEXT_TOKENS, cfg.cross_attention_dim, generator=gen).to(device, dtype)
    elif cfg.num_class_embeds:
        kwargs["class_labels"] = (torch.arange(batch) % cfg.num_class_embeds).to(device)

    def once():
        start = time.perf_counter()
        model(sample, t, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    with torch.inference_mode():
        for _ in range(args.warmup):
            once()
        runs = [once() for _ in range(args.runs)]
    return runs


def ours_by_batch(path, workload):
    """{(adapter label, batch): median ms} from our JSON report, for the same workload."""
    with open(path) as f:
        report = json.load(f)
    if report.get("workload", {}).get("name") != workload:
        print(f"note: {path} is workload {report.get('workload', {}).get('name')!r}, "
              f"not {workload!r}; no ratios", file=sys.stderr)
        return {}
    out = {}
    for a in report.get("adapters", []):
        label = f"{a['name']} ({a['backend']})"
        if a.get("status") != "ok":
            label += f" [{a.get('status')}]"
        for r in a.get("results", []):
            if r.get("forward_ms"):
                out[(label, r["batch"])] = r["forward_ms"]["median"]
    return out


def write_json_atomic(path, doc):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench-pytorch-", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(args.threads)
    name, model = build_model(args)
    model = model.to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU {platform.processor() or platform.machine()}, {args.threads} threads")
    h, w = sample_size(model, args)
    print(f"workload {name} ({h}x{w} input) — {params / 1e6:.2f} M parameters; PyTorch "
          f"{torch.__version__}, diffusers {__import__('diffusers').__version__}, {dev_name}, "
          f"eager; {args.warmup} warm-up + {args.runs} timed passes (median)")
    print(f"{'dtype':>5} {'batch':>5} {'median ms':>11} {'min ms':>10} {'max ms':>10} {'images/s':>9}")
    results = []
    for dtype in args.dtypes:
        model = model.to(DTYPES[dtype])
        for batch in args.batches:
            runs = time_forward(model, batch, args, device, DTYPES[dtype])
            med = statistics.median(runs)
            results.append(dict(batch=batch, dtype=dtype, parameters=params,
                                forward_ms=dict(median=med, min=min(runs), max=max(runs),
                                                runs=runs),
                                images_per_s=batch / (med / 1e3)))
            print(f"{dtype:>5} {batch:>5} {med:>11.2f} {min(runs):>10.2f} {max(runs):>10.2f} "
                  f"{batch / (med / 1e3):>9.2f}", flush=True)
    if args.ours:
        ours = ours_by_batch(args.ours, name)
        if ours:
            print("\nours vs PyTorch (ratio = our latency / PyTorch latency; > 1: we are slower)")
            print(f"{'adapter':<45} {'batch':>5} {'ours ms':>10} {'torch':>5} {'torch ms':>10} "
                  f"{'ratio':>7}")
            for r in results:
                for (label, batch), ms in sorted(ours.items()):
                    if batch == r["batch"]:
                        torch_ms = r["forward_ms"]["median"]
                        print(f"{label:<45} {batch:>5} {ms:>10.2f} {r['dtype']:>5} "
                              f"{torch_ms:>10.2f} {ms / torch_ms:>7.2f}")
    if args.json:
        write_json_atomic(args.json, dict(
            schema="wgpu-diffusion-bench-pytorch/2", device=dev_name, torch=torch.__version__,
            diffusers=__import__("diffusers").__version__, threads=args.threads,
            workload=name, height=h, width=w, warmup=args.warmup, runs=args.runs,
            results=results))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
