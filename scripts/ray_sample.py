#!/usr/bin/env python3
"""Sharded sampling on Ray: one `wgpu-diffusion sample` job split into slices, one Ray task each.

  python scripts/ray_sample.py --shards S [--address ADDR] [driver options] -- <sample flags>

Every image's noise is keyed by (seed, global image index), and `sample --first-image K` produces
images K .. K+N-1 of the seeded sequence, so the slices together are bit for bit one run of the
whole job. The driver

  * splits `--num-images N` (from `--first-image K0`, default 0) into S contiguous slices (sizes
    differ by at most one) and runs each as a Ray task calling the binary; a task asks for one
    GPU when the cluster has GPUs, one CPU otherwise (`--gpus-per-task` / `--cpus-per-task`);
  * retries a failed slice (`--retries`, default 2: a crashed or killed process, a lost node);
  * writes into the sample flags' `--out-dir` (required): every image (`NNNNN.png`, by global
    index, named as one run would), `manifest.json` (the job, and per image: global index, seed,
    class label, slice, sha256 of its PNG) and, when the flags ask for `--save-tensor FILE`, the
    merged tensor (`sample`, and `latents` for a latent pipeline; metadata first_image = K0);
  * resumes: run again with the same flags, it skips every slice whose files are all present and
    match the manifest's sha256, and runs the rest. An out-dir holding the manifest of another job
    (other flags, count, shards) is an error, never overwritten.

Tasks receive their outputs' bytes back through Ray's object store, so workers need no shared
file system, but each node needs the binary (`--binary`, default target/debug/wgpu-diffusion of
this checkout, else `wgpu-diffusion` on PATH) and the model directory at the same path.

Requirements: scripts/requirements-ray.txt (a pinned `ray`); Python >= 3.9.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
# Per-slice tensors kept for the merge and for resume.
SLICE_DIR = ".ray-slices"
MANIFEST_VERSION = 1


class JobError(Exception):
    """A bad request: reported as `error: ...` with exit status 2."""


# --------------------------------------------------------------------------------------------
# The sample flags the driver needs to understand


# Flags whose value the driver reads or replaces; the rest pass through unchanged.
VALUE_FLAGS = {
    "--num-images",
    "--first-image",
    "--out-dir",
    "--save-tensor",
    "--seed",
    "--model",
    "--class",
    "--class-label",
}
# Outputs that make no sense per slice.
REFUSED = {
    "-o": "a grid of the whole job (make one from the PNGs)",
    "--output": "a grid of the whole job (make one from the PNGs)",
    "--trajectory": "a trajectory strip (run one `sample` for it)",
    "--init-noise": "given noise (each slice would need its own part)",
}


def split_sample_flags(flags: list[str]) -> tuple[dict[str, str], list[str]]:
    """The values of VALUE_FLAGS (`--flag v` or `--flag=v`) and the other flags, in order."""
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(flags):
        flag = flags[i]
        name, eq, inline = flag.partition("=")
        if name in REFUSED or (flag in REFUSED):
            raise JobError(f"sample flag {name} is not supported by the driver: {REFUSED[name]}")
        if name in VALUE_FLAGS:
            if eq:
                value = inline
            else:
                if i + 1 >= len(flags):
                    raise JobError(f"sample flag {name} needs a value")
                value = flags[i + 1]
                i += 1
            if name in values:
                raise JobError(f"sample flag {name} is given twice")
            values[name] = value
        elif flag in ("-q", "--quiet"):
            pass  # the driver always runs the binary quietly
        else:
            rest.append(flag)
        i += 1
    return values, rest


def parse_count(values: dict[str, str], flag: str, default: int) -> int:
    text = values.get(flag)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise JobError(f"sample flag {flag}: {text!r} is not a whole number") from None
    if value < 0:
        raise JobError(f"sample flag {flag}: {value} is negative")
    return value


# --------------------------------------------------------------------------------------------
# Class labels (for the manifest), resolved as `sample` does


def model_dir(values: dict[str, str]) -> Path:
    return Path(values["--model"]) if "--model" in values else ROOT / "weights" / "fashion-ddpm"


def image_labels(values: dict[str, str], first: int, count: int) -> list[int | None]:
    """Each image's class label: the `--class` / `--class-label` list cycled by global index,
    the model's null label without one, None for an unconditional model."""
    directory = model_dir(values)
    classes: dict = {}
    for candidate in (directory / "classes.json", directory / "unet" / "classes.json"):
        if candidate.is_file():
            classes = json.loads(candidate.read_text())
            break
    names = {str(k).lower(): v for k, v in classes.items() if k != "null" and isinstance(v, int)}
    null = classes.get("null")
    if "--class-label" in values:
        labels = [int(v) for v in values["--class-label"].split(",")]
    elif "--class" in values:
        typed = [v.strip() for v in values["--class"].split(",")]
        if len(typed) == 1 and typed[0].lower() == "all":
            labels = sorted({v for v in names.values() if v != null})
        else:
            labels = []
            for name in typed:
                if name.isdigit():
                    labels.append(int(name))
                elif name.lower() in names:
                    labels.append(names[name.lower()])
                else:
                    raise JobError(f"sample flag --class: unknown class {name!r} in {directory}")
        if not labels:
            raise JobError(f"sample flag --class: {directory} names no classes")
    else:
        return [null] * count
    return [labels[(first + i) % len(labels)] for i in range(count)]


# --------------------------------------------------------------------------------------------
# safetensors (f32 only), without numpy


def read_safetensors(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """The header (tensor name -> dtype, shape, offsets; `__metadata__`) and each tensor's bytes."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise JobError(f"tensor {name!r} has dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = body[start:end]
    return header, tensors


def write_safetensors(tensors: list[tuple[str, list[int], bytes]], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, shape, raw in tensors:
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, raw in tensors)


def merge_tensors(parts: list[bytes], first_image: int) -> bytes:
    """Slice tensors (in image order) concatenated along the image axis."""
    merged: dict[str, tuple[list[int], list[bytes]]] = {}
    order: list[str] = []
    for part in parts:
        header, tensors = read_safetensors(part)
        for name, raw in tensors.items():
            shape = header[name]["shape"]
            if name not in merged:
                merged[name] = ([0] + shape[1:], [])
                order.append(name)
            total, chunks = merged[name]
            if total[1:] != shape[1:]:
                raise JobError(f"slice tensors disagree on the shape of {name!r}: {total} vs {shape}")
            total[0] += shape[0]
            chunks.append(raw)
    return write_safetensors(
        [(name, merged[name][0], b"".join(merged[name][1])) for name in order],
        {"first_image": str(first_image)},
    )


# --------------------------------------------------------------------------------------------
# Files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def file_matches(path: Path, digest: str | None) -> bool:
    return digest is not None and path.is_file() and sha256(path.read_bytes()) == digest


# --------------------------------------------------------------------------------------------
# The task


def run_slice(binary: str, flags: list[str], first: int, count: int, want_tensor: bool) -> dict:
    """Runs `sample` for images first .. first+count-1 in a scratch directory and returns the
    PNGs' and the tensor's bytes (so the worker needs no shared file system)."""
    with tempfile.TemporaryDirectory(prefix="ray-sample-") as scratch:
        out_dir = Path(scratch) / "images"
        command = [binary, "sample", "-q", *flags, "--first-image", str(first),
                   "--num-images", str(count), "--out-dir", str(out_dir)]
        tensor = Path(scratch) / "slice.safetensors"
        if want_tensor:
            command += ["--save-tensor", str(tensor)]
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", "/tmp")
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(
                f"slice {first}..{first + count - 1}: `{' '.join(command)}` exited with "
                f"{done.returncode}:\n{done.stderr.strip()}"
            )
        images = {p.name: p.read_bytes() for p in sorted(out_dir.glob("*.png"))}
        if len(images) != count:
            raise RuntimeError(f"slice {first}..{first + count - 1}: {len(images)} PNGs, expected {count}")
        return {"images": images, "tensor": tensor.read_bytes() if want_tensor else None}


# --------------------------------------------------------------------------------------------
# The driver


def slices(first: int, total: int, shards: int) -> list[tuple[int, int]]:
    """(first image, count) of each slice: contiguous, sizes differing by at most one."""
    base, extra = divmod(total, shards)
    out, start = [], first
    for s in range(shards):
        count = base + (1 if s < extra else 0)
        out.append((start, count))
        start += count
    return out


def default_binary() -> str:
    local = ROOT / "target" / "debug" / "wgpu-diffusion"
    if local.is_file():
        return str(local)
    found = shutil.which("wgpu-diffusion")
    return found or str(local)


def main(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        own, sample_flags = argv[:split], argv[split + 1 :]
    else:
        own, sample_flags = argv, []
    parser = argparse.ArgumentParser(
        description="Run one `wgpu-diffusion sample` job as S slices of Ray tasks.",
        usage="%(prog)s --shards S [--address ADDR] [options] -- <sample flags>",
    )
    parser.add_argument("--shards", type=int, required=True, help="slices (Ray tasks), 1..N")
    parser.add_argument("--address", help="an existing Ray cluster (ray://host:10001, auto, ...); "
                        "default: start a local Ray")
    parser.add_argument("--binary", default=None, help="the wgpu-diffusion binary on every node")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed slice (default 2)")
    parser.add_argument("--gpus-per-task", type=float, default=None,
                        help="GPUs a task asks for (default: 1 when the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-task", type=float, default=1, help="CPUs a task asks for (default 1)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    args = parser.parse_args(own)

    values, passthrough = split_sample_flags(sample_flags)
    if "--out-dir" not in values:
        raise JobError("the sample flags need --out-dir DIR (where images and manifest.json go)")
    total = parse_count(values, "--num-images", 16)
    first = parse_count(values, "--first-image", 0)
    seed = parse_count(values, "--seed", 0)
    if total < 1:
        raise JobError("sample flag --num-images must be at least 1")
    if args.shards < 1:
        raise JobError(f"--shards must be at least 1, got {args.shards}")
    if args.shards > total:
        raise JobError(f"--shards {args.shards} exceeds --num-images {total}: every slice needs at least one image")
    if args.retries < 0:
        raise JobError(f"--retries must be at least 0, got {args.retries}")
    out_dir = Path(values["--out-dir"])
    save_tensor = Path(values["--save-tensor"]) if "--save-tensor" in values else None
    binary = args.binary or default_binary()

    # Flags every slice runs with (besides its --first-image, --num-images and outputs).
    flags = list(passthrough)
    for flag in ("--seed", "--model", "--class", "--class-label"):
        if flag in values:
            flags += [flag, values[flag]]
    job = {
        "version": MANIFEST_VERSION,
        "sample_flags": flags,
        "first_image": first,
        "num_images": total,
        "shards": args.shards,
        "seed": seed,
        "tensor": save_tensor is not None,
    }
    plan = slices(first, total, args.shards)
    labels = image_labels(values, first, total)

    manifest_path = out_dir / MANIFEST
    manifest = None
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise JobError(f"{manifest_path}: unreadable manifest ({e}); move it away or pick another --out-dir") from None
        if manifest.get("job") != job:
            raise JobError(
                f"{manifest_path} belongs to a different job ({json.dumps(manifest.get('job'))}); "
                f"this job is {json.dumps(job)}: pick another --out-dir or remove the old one"
            )
    if manifest is None:
        manifest = {"job": job, "slices": [None] * len(plan), "images": []}

    def slice_done(s: int) -> bool:
        entry = manifest["slices"][s]
        if not entry or entry.get("first_image") != plan[s][0] or entry.get("num_images") != plan[s][1]:
            return False
        if any(not file_matches(out_dir / image["file"], image["sha256"]) for image in entry["images"]):
            return False
        return not job["tensor"] or file_matches(out_dir / SLICE_DIR / entry["tensor"], entry["tensor_sha256"])

    todo = [s for s in range(len(plan)) if not slice_done(s)]
    skipped = len(plan) - len(todo)
    print(f"{len(plan)} slices of {total} images; {skipped} already complete, {len(todo)} to run",
          file=sys.stderr)

    if todo:
        import ray  # imported here so that argument errors need no Ray

        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus)
        gpus = args.gpus_per_task
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(run_slice).options(
            num_gpus=gpus,
            num_cpus=args.cpus_per_task,
            max_retries=args.retries,
            retry_exceptions=True,
        )
        pending = {
            task.remote(binary, flags, plan[s][0], plan[s][1], job["tensor"]): s for s in todo
        }
        failures = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(ready[0])
            start, count = plan[s]
            try:
                result = ray.get(ready[0])
            except Exception as e:  # a slice that failed every retry
                failures.append(f"slice {s} (images {start}..{start + count - 1}): {e}")
                continue
            entry = {"slice": s, "first_image": start, "num_images": count, "images": []}
            for name, data in result["images"].items():
                write_atomic(out_dir / name, data)
                entry["images"].append({"file": name, "sha256": sha256(data)})
            entry["images"].sort(key=lambda image: int(Path(image["file"]).stem))
            if job["tensor"]:
                entry["tensor"] = f"slice-{s:05}.safetensors"
                write_atomic(out_dir / SLICE_DIR / entry["tensor"], result["tensor"])
                entry["tensor_sha256"] = sha256(result["tensor"])
            manifest["slices"][s] = entry
            write_manifest(manifest_path, manifest, plan, labels, seed)
            print(f"slice {s}: images {start}..{start + count - 1} done", file=sys.stderr)
        if failures:
            write_manifest(manifest_path, manifest, plan, labels, seed)
            print("error: " + "\n".join(failures), file=sys.stderr)
            print("run the same command again to resume the failed slices", file=sys.stderr)
            return 1
    write_manifest(manifest_path, manifest, plan, labels, seed)

    if save_tensor is not None:
        parts = [(out_dir / SLICE_DIR / manifest["slices"][s]["tensor"]).read_bytes() for s in range(len(plan))]
        write_atomic(save_tensor, merge_tensors(parts, first))
    print(f"wrote {total} images to {out_dir}/, {manifest_path}"
          + (f", {save_tensor}" if save_tensor else ""), file=sys.stderr)
    return 0


def write_manifest(path: Path, manifest: dict, plan, labels, seed: int) -> None:
    """The manifest with its per-image list rebuilt from the completed slices."""
    first = plan[0][0]
    images = []
    for s, entry in enumerate(manifest["slices"]):
        if not entry:
            continue
        for image in entry["images"]:
            # `sample --out-dir` names each PNG by its global index.
            index = int(Path(image["file"]).stem)
            images.append({
                "index": index,
                "file": image["file"],
                "seed": seed,
                "class_label": labels[index - first],
                "slice": s,
                "sha256": image["sha256"],
            })
    manifest["images"] = images
    manifest["complete"] = all(manifest["slices"])
    write_atomic(path, (json.dumps(manifest, indent=1) + "\n").encode())


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
