#!/usr/bin/env bash
# Judge a model through our GPU sampler: sample N images in resumable chunks of 100 with the
# wgpu-diffusion binary, merge them and run scripts/eval_quality.py on the result.
#
#   scripts/eval_model.sh MODEL_DIR OUT_DIR N SEED0 cond|uncond [extra `sample` flags...]
#
# cond   : `--class all`, labels cycle 0..9 (N/10 per class)
# uncond : no class (the null label), judged for class coverage
# Chunk i uses seed SEED0 + i and is skipped when OUT_DIR/chunk_i.safetensors exists, so a
# killed run picks up where it stopped. BIN overrides the binary (default target/debug, which
# `make test` builds); PYTHON the interpreter with torch + numpy + safetensors.
# The model cards' figures came from, e.g.:
#   scripts/eval_model.sh weights/fashion-ddpm OUT_DIR 1000 1000 cond
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
MODEL=$1 OUT=$2 N=$3 SEED0=$4 MODE=$5
shift 5
case $MODE in
  cond) CLASS=(--class all) ;;
  uncond) CLASS=() ;;
  *) echo "mode must be cond or uncond, not '$MODE'" >&2; exit 2 ;;
esac
if [ $((N % 100)) -ne 0 ] || [ "$N" -le 0 ]; then
  echo "N must be a positive multiple of 100, not '$N'" >&2
  exit 2
fi
BIN=${BIN:-target/debug/wgpu-diffusion}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
for i in $(seq 0 $((N / 100 - 1))); do
  f=$OUT/chunk_$i.safetensors
  [ -f "$f" ] && continue
  start=$(date +%s)
  "$BIN" sample --model "$MODEL" --num-images 100 --batch-size 100 --seed $((SEED0 + i)) \
    "${CLASS[@]}" --save-tensor "$f" -o "$OUT/chunk_$i.png" -q "$@"
  echo "chunk $i seed $((SEED0 + i)): $(($(date +%s) - start)) s" | tee -a "$OUT/chunks.log"
done
"$PYTHON" - "$OUT" "$N" "$MODE" <<'EOF'
import json, sys
import numpy as np
from safetensors.numpy import load_file, save_file
out, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
x = np.concatenate([load_file(f"{out}/chunk_{i}.safetensors")["sample"] for i in range(n // 100)])
save_file({"sample": x}, f"{out}/all.safetensors")
labels = [i % 10 for i in range(n)] if mode == "cond" else [10] * n
json.dump(labels, open(f"{out}/labels.json", "w"))
EOF
"$PYTHON" "$HERE/eval_quality.py" "$OUT/all.safetensors" --labels "$OUT/labels.json" \
  --json "$OUT/report.json" | tee "$OUT/report.txt"
