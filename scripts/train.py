#!/usr/bin/env python3
"""Train a tiny class-conditional diffusers UNet2DModel on Fashion-MNIST (CPU, 1 thread).

Two objectives share the same architecture:
  --model ddpm : DDPM epsilon-prediction, linear beta 1e-4 -> 0.02, T = 1000
  --model flow : rectified flow, x_s = (1 - s) x0 + s eps, target v = eps - x0,
                 the network sees timestep s * 1000

Training checkpoints atomically to RUN/ckpt.pt every --ckpt-every steps (and at exit)
and resumes from it when present. The resumed run continues bit-identically:
the data order, the noise and the label dropout all come from one torch.Generator whose
state is part of the checkpoint.

  python scripts/train.py --model ddpm --run /work/runs/fashion-ddpm --max-minutes 100
  python scripts/train.py --model ddpm --run /work/runs/fashion-ddpm --export weights/fashion-ddpm

Data: gzip'd idx files of Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
"""
import argparse
import copy
import csv
import gzip
import json
import math
import os
import random
import re
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
NULL_LABEL = 10
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ----------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dtype_code = (magic >> 8) & 0xFF
    assert dtype_code == 0x08, f"{path}: only ubyte idx supported, got 0x{dtype_code:02x}"
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=off)
    assert arr.size == int(np.prod(dims)), (path, arr.size, dims)
    return arr.reshape(dims)


def load_fashion(split="train", data_dir=DATA_DIR):
    """Returns (images float32 [N,1,28,28] in [-1,1], labels int64 [N])."""
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


# ----------------------------------------------------------------------------- model
def make_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1,
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=16, attention_head_dim=None,
        flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, norm_eps=1e-6,
        num_class_embeds=NUM_CLASSES + 1,
    )


def make_scheduler(kind):
    if kind == "ddpm":
        from diffusers import DDPMScheduler
        return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                             beta_schedule="linear", prediction_type="epsilon",
                             clip_sample=True, variance_type="fixed_small")
    else:
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def ddpm_alphas_cumprod():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


# ----------------------------------------------------------------------------- training
class Sampler:
    """Epoch-wise random permutation driven by the shared generator (state is checkpointable)."""

    def __init__(self, n, gen):
        self.n, self.gen = n, gen
        self.perm, self.pos, self.epoch = None, 0, 0

    def next(self, bs):
        if self.perm is None or self.pos + bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + bs]
        self.pos += bs
        return idx

    def state_dict(self):
        return {"perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, s):
        self.perm, self.pos, self.epoch = s["perm"], s["pos"], s["epoch"]


def loss_fn(kind, model, x0, y, gen, acp, args):
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen)
    if args.flip:
        flip = torch.rand(b, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    drop = torch.rand(b, generator=gen) < args.label_dropout
    y = torch.where(drop, torch.full_like(y, NULL_LABEL), y)
    if kind == "ddpm":
        t = torch.randint(0, 1000, (b,), generator=gen)
        a = acp[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise
        timestep = t
    else:
        if args.sigma_sampling == "logit-normal":
            s = torch.sigmoid(torch.randn(b, generator=gen))
        else:
            s = torch.rand(b, generator=gen)
        sv = s.view(b, 1, 1, 1)
        xt = (1 - sv) * x0 + sv * noise
        target = noise - x0
        timestep = s * 1000.0
    pred = model(xt, timestep, class_labels=y).sample
    return F.mse_loss(pred, target)


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ema_decay(step, max_decay):
    return min(max_decay, (1 + step) / (10 + step))


HYPER_PARAMS = ("batch", "lr", "warmup", "weight_decay", "grad_clip", "ema", "label_dropout",
                "flip", "sigma_sampling", "seed")


def hyper_params(args):
    """The arguments that change what a training step computes (not where or how long)."""
    return {k: args.get(k) for k in HYPER_PARAMS}


def run_history(ck):
    """A checkpoint's hyper-parameter history: [{from_step, **hyper_params}, ...]. Checkpoints
    written before the history existed get one entry from the arguments they were saved with."""
    return ck.get("history") or [{"from_step": 0, **hyper_params(ck.get("args", {}))}]


def train(args):
    torch.set_num_threads(1)
    os.makedirs(args.run, exist_ok=True)
    ckpt_path = os.path.join(args.run, "ckpt.pt")
    log_path = os.path.join(args.run, "log.csv")

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    model = make_unet()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)

    x_train, y_train = load_fashion("train")
    sampler = Sampler(x_train.shape[0], gen)
    step, elapsed_prev = 0, 0.0
    history = [{"from_step": 0, **hyper_params(vars(args))}]

    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["model_kind"] != args.model:
            sys.exit(f"{ckpt_path} is a {ck['model_kind']} checkpoint, not {args.model}")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng"])
        sampler.load_state_dict(ck["sampler"])
        step = ck["step"]
        elapsed_prev = ck.get("elapsed", 0.0)
        history = run_history(ck)
        changed = {k: (history[-1].get(k), v) for k, v in hyper_params(vars(args)).items()
                   if history[-1].get(k) != v}
        if changed:
            # A resumed run is bit-identical only with the same hyper-parameters; a change
            # (say a lower lr for the last stretch) is allowed but recorded and reported.
            history.append({"from_step": step, **hyper_params(vars(args))})
            print("resuming with changed hyper-parameters: " + ", ".join(
                f"{k} {a} -> {b}" for k, (a, b) in changed.items()), flush=True)
        print(f"resumed from {ckpt_path} at step {step} (epoch {sampler.epoch})", flush=True)
    else:
        print(f"fresh run in {args.run}; params {sum(p.numel() for p in model.parameters()):,}",
              flush=True)
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "loss", "seconds"])
        with open(os.path.join(args.run, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    acp = ddpm_alphas_cumprod()
    model.train()
    t0 = time.time()
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else None
    run_sum, run_n = 0.0, 0

    def checkpoint():
        atomic_save({
            "model_kind": args.model, "step": step,
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "gen_state": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "sampler": sampler.state_dict(), "elapsed": elapsed_prev + time.time() - t0,
            "args": vars(args), "history": history,
        }, ckpt_path)

    stop_reason = "max-steps"
    while step < args.max_steps:
        if deadline is not None and time.time() >= deadline:
            stop_reason = "max-minutes"
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = sampler.next(args.batch)
        loss = loss_fn(args.model, model, x_train[idx], y_train[idx], gen, acp, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        d = ema_decay(step, args.ema)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - d)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        step += 1
        lv = loss.item()
        run_sum += lv
        run_n += 1
        if args.print_every and step % args.print_every == 0:
            print(f"step {step} loss {lv:.6f}", flush=True)
        if step % args.log_every == 0:
            secs = elapsed_prev + time.time() - t0
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([step, f"{run_sum / run_n:.6f}", f"{secs:.1f}"])
            print(f"step {step} loss(mean {run_n}) {run_sum / run_n:.5f} lr {lr:.2e} "
                  f"{secs:.0f}s epoch {sampler.epoch}", flush=True)
            run_sum, run_n = 0.0, 0
        if step % args.ckpt_every == 0:
            checkpoint()
    checkpoint()
    print(f"stopped ({stop_reason}) at step {step}; checkpoint {ckpt_path}", flush=True)


# ----------------------------------------------------------------------------- export
def read_log(run):
    rows = []
    p = os.path.join(run, "log.csv")
    if os.path.exists(p):
        with open(p) as f:
            for r in csv.DictReader(f):
                rows.append((int(r["step"]), float(r["loss"]), float(r["seconds"])))
    return rows


def export(args):
    torch.set_num_threads(1)
    ckpt_path = os.path.join(args.run, "ckpt.pt")
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    kind = ck["model_kind"]
    model = make_unet()
    model.load_state_dict(ck["ema"])
    model.eval()
    out = args.export
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    make_scheduler(kind).save_config(out)

    rows = read_log(args.run)
    tail = [r[1] for r in rows[-10:]]
    n_params = sum(p.numel() for p in model.parameters())
    targs = ck.get("args", {})
    history = run_history(ck)
    summary = {
        "objective": kind,
        "steps": ck["step"],
        "batch_size": targs.get("batch"),
        "epochs_seen": round(ck["step"] * (targs.get("batch") or 0) / 60000, 2),
        "train_seconds": round(ck.get("elapsed", 0.0), 1),
        "seconds_per_step": round(ck.get("elapsed", 0.0) / max(1, ck["step"]), 3),
        "final_loss_mean_last_500_steps": round(sum(tail) / len(tail), 5) if tail else None,
        "first_logged_loss": rows[0][1] if rows else None,
        "loss_curve_every_50_steps": [[s, l] for s, l, _ in rows],
        "params": n_params,
        "weights": "EMA",
        "ema_decay": targs.get("ema"),
        "lr": targs.get("lr"),
        "hyper_parameter_history": history,
        "seed": targs.get("seed"),
        "label_dropout": targs.get("label_dropout"),
        "null_label": NULL_LABEL,
        "hflip": targs.get("flip"),
    }
    with open(os.path.join(out, "training_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    # fill the training section of the model card if present
    card = os.path.join(out, "README.md")
    if os.path.exists(card):
        text = open(card).read()
        block = (
            "<!-- TRAINING-SUMMARY-START (filled by scripts/train.py --export) -->\n"
            f"- Steps: {summary['steps']} at batch {summary['batch_size']} "
            f"(≈ {summary['epochs_seen']} epochs of the 60 000 training images)\n"
            f"- Wall time: {summary['train_seconds'] / 60:.1f} min on 1 CPU thread "
            f"({summary['seconds_per_step']} s/step)\n"
            f"- Loss (MSE, running mean per 50 steps): first {summary['first_logged_loss']}, "
            f"mean of last 500 steps {summary['final_loss_mean_last_500_steps']}\n"
            f"- Exported weights: EMA (decay {summary['ema_decay']}), lr "
            + ", then ".join(f"{h['lr']:g} from step {h['from_step']}" if h["from_step"] else f"{h['lr']:g}"
                             for h in history)
            + f", seed {summary['seed']}\n"
            "- Full loss curve: `training_summary.json`\n"
            "<!-- TRAINING-SUMMARY-END -->"
        )
        text2 = re.sub(r"<!-- TRAINING-SUMMARY-START.*?<!-- TRAINING-SUMMARY-END -->", block,
                       text, flags=re.S)
        if text2 != text:
            open(card, "w").write(text2)
    print(f"exported {kind} EMA weights at step {ck['step']} to {out} "
          f"({n_params:,} params)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["ddpm", "flow"], default="ddpm")
    ap.add_argument("--run", required=True, help="run directory (ckpt.pt, log.csv)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--export", default=None, metavar="DIR",
                    help="write the EMA model of RUN/ckpt.pt to DIR and exit (no training)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--label-dropout", type=float, default=0.1)
    ap.add_argument("--no-flip", dest="flip", action="store_false")
    ap.add_argument("--sigma-sampling", choices=["uniform", "logit-normal"], default="uniform")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--print-every", type=int, default=0, help="print every step's loss (debug)")
    args = ap.parse_args()
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
