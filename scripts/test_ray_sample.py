#!/usr/bin/env python3
"""`make test`'s check of scripts/ray_sample.py on a local Ray (run with the pinned ray):

  python scripts/test_ray_sample.py BINARY

3 slices of 6 images of the unconditional fixture model: the merged tensor and the PNGs equal one
`sample --num-images 6` run bit for bit; a slice whose Ray worker is killed mid-run is retried and
the result is unchanged; a second run skips the verified slices and a run after one PNG is
damaged reruns only that slice; S > N and another job's manifest are refused.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ray_sample  # noqa: E402

MODEL = str(HERE.parent / "tests" / "fixtures" / "google_flags")
FLAGS = ["--model", MODEL, "--steps", "2", "--seed", "5", "--num-images", "6"]


def driver(binary, out_dir, tensor, shards=3, extra=()):
    command = [sys.executable, str(HERE / "ray_sample.py"), "--shards", str(shards), "--binary",
               binary, "--num-cpus", "2", *extra, "--", *FLAGS, "--out-dir", str(out_dir)]
    if tensor:
        command += ["--save-tensor", str(tensor)]
    # Scratch directories (the killed worker's too) under the test's own directory.
    env = dict(os.environ, TMPDIR=str(Path(out_dir).parent))
    return subprocess.run(command, capture_output=True, text=True, env=env)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok: {what}")


def main():
    binary = str(Path(sys.argv[1]).resolve())
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with tempfile.TemporaryDirectory(prefix="ray-sample-test-") as tmp:
        tmp = Path(tmp)
        one = subprocess.run([binary, "sample", "-q", *FLAGS, "--out-dir", str(tmp / "one"),
                              "--save-tensor", str(tmp / "one.st")], capture_output=True, text=True)
        check(one.returncode == 0, f"one run of 6 images ({one.stderr.strip()})")
        _, want = ray_sample.read_safetensors((tmp / "one.st").read_bytes())

        # A wrapper that kills the Ray worker running slice 2..3 on its first attempt, mid-run.
        mark = tmp / "killed"
        wrapper = tmp / "wrapper.sh"
        wrapper.write_text(f"""#!/bin/sh
case " $* " in *" --first-image 2 "*)
  if [ ! -e {mark} ]; then
    touch {mark}
    {binary} "$@" &
    sleep 0.5
    kill -9 $PPID
    kill -9 $!
    exit 1
  fi;;
esac
exec {binary} "$@"
""")
        wrapper.chmod(0o755)
        out = tmp / "out"
        run = driver(str(wrapper), out, tmp / "merged.st")
        check(run.returncode == 0, f"3 slices on a local Ray (stderr:\n{run.stderr[-3000:]})")
        check(mark.exists(), "the worker of slice 1 was killed on its first attempt")
        header, merged = ray_sample.read_safetensors((tmp / "merged.st").read_bytes())
        check(merged["sample"] == want["sample"], "the merged tensor equals one run bit for bit")
        check(header["sample"]["shape"] == [6, 3, 16, 16], "the merged tensor is [6, 3, 16, 16]")
        check(header["__metadata__"] == {"first_image": "0"}, "the merged tensor's metadata")
        names = sorted(p.name for p in (tmp / "one").iterdir())
        check(names == [f"{i:05}.png" for i in range(6)], "one run's file names")
        check(all((out / n).read_bytes() == (tmp / "one" / n).read_bytes() for n in names),
              "every PNG equals one run's")
        manifest = json.loads((out / "manifest.json").read_text())
        images = manifest["images"]
        check([i["index"] for i in images] == list(range(6)), "the manifest lists images 0..5")
        check([i["slice"] for i in images] == [0, 0, 1, 1, 2, 2], "the manifest's slices")
        check(all(i["seed"] == 5 and i["class_label"] is None for i in images), "seed and label")
        check(all(ray_sample.sha256((out / i["file"]).read_bytes()) == i["sha256"] for i in images),
              "the manifest's sha256 of every PNG")

        again = driver(binary, out, tmp / "merged.st")
        check(again.returncode == 0 and "3 already complete, 0 to run" in again.stderr,
              f"resume skips the 3 done slices ({again.stderr.strip()[-300:]})")
        (out / "00004.png").write_bytes(b"damaged")
        again = driver(binary, out, tmp / "merged.st")
        check(again.returncode == 0 and "2 already complete, 1 to run" in again.stderr,
              f"resume reruns only the slice of a damaged PNG ({again.stderr.strip()[-300:]})")
        check((out / "00004.png").read_bytes() == (tmp / "one" / "00004.png").read_bytes(),
              "the rerun slice's PNG equals one run's")
        _, merged = ray_sample.read_safetensors((tmp / "merged.st").read_bytes())
        check(merged["sample"] == want["sample"], "after resume the merged tensor is unchanged")

        bad = driver(binary, tmp / "many", None, shards=7)
        check(bad.returncode == 2 and "--shards 7 exceeds --num-images 6" in bad.stderr,
              f"S > N is refused ({bad.stderr.strip()})")
        other = driver(binary, out, None, extra=())
        check(other.returncode == 2 and "belongs to a different job" in other.stderr
              and str(out / "manifest.json") in other.stderr,
              f"another job's manifest is refused ({other.stderr.strip()[:200]})")
    print("ray_sample: all checks passed")


if __name__ == "__main__":
    main()
