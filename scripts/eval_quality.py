#!/usr/bin/env python3
"""Judge generated Fashion-MNIST samples with a small CNN classifier.

  python scripts/eval_quality.py SAMPLES [--labels labels.json] [--json out.json]

SAMPLES is either
  * a directory of 28x28 PNGs (grayscale or RGB; 0..255 maps to [-1, 1]); files are taken
    in natural sort order (img2 before img10). Labels come from, in this order:
      --labels FILE / DIR/labels.json : a JSON list aligned with that order, or a JSON
                                        object {file name: label}
      file names  class{k}_*.png       : label k (k = 10 means unconditional)
      otherwise                        : unconditional
  * a .safetensors file with tensor `sample` [N,1,28,28] (or [N,28,28]) in [-1, 1]; labels
    from --labels, from labels.json next to it, or from a tensor `labels` / `class_labels`
    in the same file.
Label 10 (the null label), null, or -1 mean "unconditional".

Reports (text on stdout, JSON with --json):
  * classifier test accuracy (sanity of the judge itself)
  * class-conditional samples: overall and per-class accuracy (does the classifier see the
    intended class), mean confidence of the prediction, mean probability of the intended class
  * unconditional samples: histogram of predicted classes, coverage (classes with >= 1 %
    of samples), normalised entropy of the histogram, mean confidence
  * Fréchet distance (FD) in the classifier's 128-d penultimate feature space between the
    samples and the real test split, next to baselines: a random subset of the real train
    split of the same size vs the test split (FD depends on N, compare to this one), and the
    full train split vs the test split.
  * pixel statistics (mean / std / min / max) of samples vs real data, to catch scale or
    sign mistakes.

The classifier trains once (≈ 2-4 min on 1 thread) and is cached in
/work/runs/classifier.pt (override with --classifier). Use --threads 2 only when the
machine is otherwise idle.

  --selftest  runs the judge on real test images (expect accuracy ≈ the classifier's,
              FD ≈ baseline) and on Gaussian noise (expect low accuracy, huge FD).
"""
import argparse
import gzip
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_CLASSIFIER = "/work/runs/classifier.pt"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NULL_LABEL = 10


# ----------------------------------------------------------------------------- data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


# ----------------------------------------------------------------------------- classifier
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),                                    # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),                                    # 7x7
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(128, 10)

    def forward(self, x, return_features=False):
        f = self.features(x)
        logits = self.head(self.drop(f))
        return (logits, f) if return_features else logits


@torch.no_grad()
def run_classifier(clf, x, bs=500):
    clf.eval()
    probs, feats = [], []
    for i in range(0, x.shape[0], bs):
        logits, f = clf(x[i:i + bs], return_features=True)
        probs.append(F.softmax(logits, -1))
        feats.append(f)
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(feats).numpy().astype(np.float64)


def train_classifier(path, epochs, max_minutes, seed=0):
    torch.manual_seed(seed)
    xtr, ytr = load_fashion("train")
    xte, yte = load_fashion("test")
    clf = Classifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    bs = 128
    steps_per_epoch = xtr.shape[0] // bs
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    step = 0
    for ep in range(epochs):
        clf.train()
        perm = torch.randperm(xtr.shape[0], generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x = xtr[idx]
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(clf(x), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"  classifier epoch {ep + 1} step {step}/{total} loss {loss.item():.3f} "
                      f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)
            if max_minutes and time.time() - t0 > max_minutes * 60:
                break
        if max_minutes and time.time() - t0 > max_minutes * 60:
            print("  classifier: time budget reached", file=sys.stderr)
            break
    probs, _ = run_classifier(clf, xte)
    acc = float((probs.argmax(1) == yte.numpy()).mean())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"state_dict": clf.state_dict(), "test_accuracy": acc, "epochs": epochs,
                "train_seconds": time.time() - t0, "steps": step}, tmp)
    os.replace(tmp, path)
    print(f"  classifier trained in {time.time() - t0:.0f}s, test accuracy {acc:.4f}, "
          f"saved {path}", file=sys.stderr)
    return clf, acc


def get_classifier(path, epochs, max_minutes):
    if os.path.exists(path):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        clf = Classifier()
        clf.load_state_dict(ck["state_dict"])
        clf.eval()
        return clf, ck["test_accuracy"]
    print(f"training classifier (cache {path} not found)", file=sys.stderr)
    return train_classifier(path, epochs, max_minutes)


# ----------------------------------------------------------------------------- FD
def stats(f):
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(f1, f2):
    """FD between Gaussians fitted to two feature sets (trace of sqrt via symmetric eigendecomp)."""
    m1, s1 = stats(f1)
    m2, s2 = stats(f2)
    r1 = _sqrtm_psd(s1)
    w = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


# ----------------------------------------------------------------------------- inputs
def natural_key(s):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _norm_label(v):
    if v is None:
        return NULL_LABEL
    v = int(v)
    return NULL_LABEL if v < 0 or v >= NULL_LABEL else v


def load_png(path):
    from PIL import Image
    im = Image.open(path)
    if im.mode not in ("L", "I;16", "I"):
        im = im.convert("RGB")
        a = np.asarray(im, dtype=np.float64).mean(-1)
    elif im.mode == "L":
        a = np.asarray(im, dtype=np.float64)
    else:  # 16-bit
        a = np.asarray(im, dtype=np.float64) / 257.0
    h, w = a.shape
    if (h, w) != (28, 28):
        if h % 28 == 0 and w % 28 == 0 and h // 28 == w // 28:  # integer upscale: average-pool
            k = h // 28
            a = a.reshape(28, k, 28, k).mean((1, 3))
        else:
            raise SystemExit(f"{path}: {w}x{h}, expected 28x28 (or an integer multiple)")
    return a / 127.5 - 1.0


def load_samples(src, labels_path=None):
    labels = None
    if os.path.isdir(src):
        files = sorted([f for f in os.listdir(src) if f.lower().endswith(".png")], key=natural_key)
        if not files:
            raise SystemExit(f"no PNGs in {src}")
        x = np.stack([load_png(os.path.join(src, f)) for f in files])[:, None]
        names = files
        lp = labels_path or os.path.join(src, "labels.json")
    else:
        from safetensors.numpy import load_file
        t = load_file(src)
        if "sample" not in t:
            raise SystemExit(f"{src}: no tensor 'sample' (has {list(t)})")
        x = t["sample"].astype(np.float64)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise SystemExit(f"{src}: sample has shape {x.shape}, expected [N,1,28,28]")
        names = [f"#{i}" for i in range(x.shape[0])]
        lp = labels_path or os.path.join(os.path.dirname(os.path.abspath(src)), "labels.json")
        for k in ("labels", "class_labels"):
            if k in t and not labels_path:
                labels = [_norm_label(v) for v in t[k].reshape(-1).tolist()]
                lp = None
    if labels is None and lp and os.path.exists(lp):
        with open(lp) as f:
            j = json.load(f)
        if isinstance(j, dict) and "labels" in j and isinstance(j["labels"], list):
            j = j["labels"]
        if isinstance(j, list):
            if len(j) != len(names):
                raise SystemExit(f"{lp}: {len(j)} labels for {len(names)} samples")
            labels = [_norm_label(v) for v in j]
        else:
            labels = [_norm_label(j.get(n)) for n in names]
    if labels is None:
        labels = []
        for n in names:
            m = re.match(r"class(\d+)_", n)
            labels.append(_norm_label(int(m.group(1))) if m else NULL_LABEL)
    return torch.from_numpy(x.astype(np.float32)), np.array(labels, dtype=np.int64), names


# ----------------------------------------------------------------------------- evaluation
class RealRef:
    def __init__(self, clf):
        self.xtr, self.ytr = load_fashion("train")
        self.xte, self.yte = load_fashion("test")
        _, self.f_te = run_classifier(clf, self.xte)
        self._f_tr = None
        self.clf = clf

    @property
    def f_tr(self):
        if self._f_tr is None:
            _, self._f_tr = run_classifier(self.clf, self.xtr)
        return self._f_tr


def evaluate(clf, clf_acc, x, labels, ref, seed=0):
    x = x.clamp(-1, 1)  # what a PNG would hold anyway
    probs, feats = run_classifier(clf, x)
    pred = probs.argmax(1)
    conf = probs.max(1)
    n = x.shape[0]
    out = {"n_samples": int(n), "classifier_test_accuracy": round(clf_acc, 4)}
    xr = ref.xte
    out["pixels"] = {
        "samples": {"mean": float(x.mean()), "std": float(x.std()),
                    "min": float(x.min()), "max": float(x.max())},
        "real_test": {"mean": float(xr.mean()), "std": float(xr.std())},
    }
    cond = labels != NULL_LABEL
    if cond.any():
        lc, pc = labels[cond], pred[cond]
        per = {}
        for k in range(10):
            m = lc == k
            if m.any():
                per[CLASS_NAMES[k]] = {"label": k, "n": int(m.sum()),
                                       "accuracy": round(float((pc[m] == k).mean()), 4),
                                       "most_confused_with": CLASS_NAMES[int(np.bincount(
                                           pc[m][pc[m] != k], minlength=10).argmax())]
                                       if (pc[m] != k).any() else None}
        out["conditional"] = {
            "n": int(cond.sum()),
            "accuracy": round(float((pc == lc).mean()), 4),
            "mean_class_accuracy": round(float(np.mean([v["accuracy"] for v in per.values()])), 4),
            "mean_confidence": round(float(conf[cond].mean()), 4),
            "mean_prob_of_intended_class": round(float(probs[cond][np.arange(cond.sum()), lc].mean()), 4),
            "per_class": per,
        }
    unc = ~cond
    if unc.any():
        hist = np.bincount(pred[unc], minlength=10)
        p = hist / hist.sum()
        ent = -(p[p > 0] * np.log(p[p > 0])).sum() / math.log(10)
        out["unconditional"] = {
            "n": int(unc.sum()),
            "histogram": {CLASS_NAMES[k]: int(hist[k]) for k in range(10)},
            "coverage_classes_ge_1pct": int((p >= 0.01).sum()),
            "coverage_classes_any": int((hist > 0).sum()),
            "normalised_entropy": round(float(ent), 4),
            "mean_confidence": round(float(conf[unc].mean()), 4),
        }
    # FD vs the real test split, with same-N and full-train baselines
    rng = np.random.default_rng(seed)
    fd = {"samples_vs_test": round(frechet(feats, ref.f_te), 3)}
    sub = rng.choice(ref.f_tr.shape[0], size=min(n, ref.f_tr.shape[0]), replace=False)
    fd["baseline_train_subset_same_n_vs_test"] = round(frechet(ref.f_tr[sub], ref.f_te), 3)
    fd["baseline_full_train_vs_test"] = round(frechet(ref.f_tr, ref.f_te), 3)
    if cond.any() and unc.any():
        fd["conditional_samples_vs_test"] = round(frechet(feats[cond], ref.f_te), 3)
        fd["unconditional_samples_vs_test"] = round(frechet(feats[unc], ref.f_te), 3)
    if n < 500:
        fd["note"] = "few samples: FD is biased upward at small N; compare to the same-N baseline"
    out["frechet_distance"] = fd
    return out


def report_text(r, title):
    L = [f"== {title} ==", f"samples: {r['n_samples']}   (classifier test accuracy "
                           f"{r['classifier_test_accuracy']:.2%})"]
    px = r["pixels"]
    L.append(f"pixels: mean {px['samples']['mean']:+.3f} std {px['samples']['std']:.3f} "
             f"range [{px['samples']['min']:+.2f}, {px['samples']['max']:+.2f}]   "
             f"(real: mean {px['real_test']['mean']:+.3f} std {px['real_test']['std']:.3f})")
    if "conditional" in r:
        c = r["conditional"]
        L.append(f"class-conditional ({c['n']}): accuracy {c['accuracy']:.2%}, mean class accuracy "
                 f"{c['mean_class_accuracy']:.2%}, confidence {c['mean_confidence']:.3f}, "
                 f"p(intended) {c['mean_prob_of_intended_class']:.3f}")
        for name, v in c["per_class"].items():
            conf = f"  (else mostly {v['most_confused_with']})" if v["most_confused_with"] else ""
            L.append(f"   {v['label']} {name:<12} n={v['n']:<5} acc {v['accuracy']:.2%}{conf}")
    if "unconditional" in r:
        u = r["unconditional"]
        L.append(f"unconditional ({u['n']}): coverage {u['coverage_classes_ge_1pct']}/10 classes "
                 f"(>=1%), entropy {u['normalised_entropy']:.3f} (1 = uniform), confidence "
                 f"{u['mean_confidence']:.3f}")
        L.append("   " + ", ".join(f"{k}: {v}" for k, v in u["histogram"].items()))
    fd = r["frechet_distance"]
    L.append(f"FD vs real test: {fd['samples_vs_test']:.3f}   baseline (real train, same N): "
             f"{fd['baseline_train_subset_same_n_vs_test']:.3f}   (full train: "
             f"{fd['baseline_full_train_vs_test']:.3f})")
    for k in ("conditional_samples_vs_test", "unconditional_samples_vs_test"):
        if k in fd:
            L.append(f"   {k}: {fd[k]:.3f}")
    if "note" in fd:
        L.append("   note: " + fd["note"])
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="?", help="PNG directory or .safetensors file")
    ap.add_argument("--labels", help="labels JSON (list aligned with sample order, or {file: label})")
    ap.add_argument("--json", help="write the JSON report here")
    ap.add_argument("--classifier", default=DEFAULT_CLASSIFIER)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3, help="classifier epochs if it must be trained")
    ap.add_argument("--max-train-minutes", type=float, default=5.0)
    ap.add_argument("--selftest", action="store_true",
                    help="evaluate real test images and noise instead of SAMPLES")
    ap.add_argument("--selftest-n", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.samples and not args.selftest:
        ap.error("give SAMPLES or --selftest")

    clf, acc = get_classifier(args.classifier, args.epochs, args.max_train_minutes)
    ref = RealRef(clf)
    results = {}
    if args.selftest:
        g = torch.Generator().manual_seed(1)
        n = args.selftest_n
        idx = torch.randperm(ref.xte.shape[0], generator=g)[:n]
        x, y = ref.xte[idx], ref.yte[idx].numpy()
        y_mixed = y.copy()
        y_mixed[n // 2:] = NULL_LABEL  # half labelled, half "unconditional"
        results["real_test"] = evaluate(clf, acc, x, y_mixed, ref)
        noise = torch.randn(n, 1, 28, 28, generator=g).clamp(-1, 1)
        results["noise"] = evaluate(clf, acc, noise, y_mixed, ref)
        for k, r in results.items():
            print(report_text(r, k))
    else:
        x, labels, _ = load_samples(args.samples, args.labels)
        results = evaluate(clf, acc, x, labels, ref)
        print(report_text(results, args.samples))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"JSON report: {args.json}")


if __name__ == "__main__":
    main()
