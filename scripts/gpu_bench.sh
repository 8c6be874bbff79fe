#!/usr/bin/env bash
# The prepared GPU benchmark run (issue 15): on a machine with an NVIDIA GPU and no network, from a
# bundle made by scripts/gpu_bench_prepare.sh (a release binary, the Vulkan loader .debs, optional
# torch/diffusers wheels), it lists the adapters, benches our kernels with the per-kernel profile
# and PyTorch CUDA fp32 and fp16 on the same workloads, and writes one JSON and a markdown table.
# Meant to finish in under 8 minutes: every step has its own time limit and the whole run a budget;
# a step past either is recorded as skipped, never silently dropped.
#
#   scripts/gpu_bench.sh BUNDLE [OUT]          # OUT defaults to $OUT (the device tool's) or target/gpu-bench
#   GPU_BENCH_TINY=1 scripts/gpu_bench.sh B    # tiny sizes: checks the script end to end on a CPU box
#
# Workloads (full): cifar10-32 batch 1/8/64, celebahq-256 batch 1/4, sd15-512 and sd-turbo-512
# batch 1, then cifar10-32 again with --shader-checks off and with fixed GEMM tiles (ours only);
# GPU_BENCH_TINY=1:
# cifar10-32 batch 1/2, celebahq-256 at 32², SD presets at 64², 1 run.
# Environment: GPU_BENCH_BUDGET_S (default 450), GPU_BENCH_TORCH_DEVICE (cuda, or cpu; default:
# cuda when torch sees one), GPU_BENCH_BACKEND (default vulkan; the adapter to bench),
# GPU_BENCH_PYTHON (an interpreter with torch + diffusers; default python3), GPU_BENCH_ONLY
# (comma list of presets to run; default all).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:?usage: scripts/gpu_bench.sh BUNDLE [OUT] (BUNDLE from scripts/gpu_bench_prepare.sh)}
BUNDLE=$(cd "$BUNDLE" && pwd)
OUTDIR=${2:-${OUT:-$ROOT/target/gpu-bench}}
mkdir -p "$OUTDIR/raw"
OUTDIR=$(cd "$OUTDIR" && pwd)
RAW=$OUTDIR/raw
LOG=$OUTDIR/gpu_bench.log
BUDGET=${GPU_BENCH_BUDGET_S:-450}
BACKEND=${GPU_BENCH_BACKEND:-vulkan}
START=$(date +%s)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
# Steps record "name<TAB>status<TAB>seconds<TAB>note" here; the report reads it.
STEPS=$RAW/steps.tsv
: >"$STEPS"

log() { echo "gpu_bench: $*" | tee -a "$LOG" >&2; }
elapsed() { echo $(( $(date +%s) - START )); }

BIN=$BUNDLE/wgpu-diffusion
[ -x "$BIN" ] || { log "error: $BIN missing or not executable (run scripts/gpu_bench_prepare.sh)"; exit 2; }

# --- Vulkan loader: unpacked from the bundle's .debs into a private root (no dpkg, no root). ---
# GPU_BENCH_BUNDLED_LOADER=1 uses the bundle's loader even where one is installed (to test it).
if [ "${GPU_BENCH_BUNDLED_LOADER:-0}" = "1" ] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  if compgen -G "$BUNDLE/debs/*.deb" >/dev/null; then
    VKROOT=$OUTDIR/vkroot
    mkdir -p "$VKROOT"
    for deb in "$BUNDLE"/debs/*.deb; do dpkg-deb -x "$deb" "$VKROOT"; done
    export LD_LIBRARY_PATH="$VKROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "Vulkan loader from the bundle's .debs ($VKROOT)"
  else
    log "warning: no libvulkan.so.1 on the machine and no .debs in $BUNDLE/debs"
  fi
fi
# NVIDIA's Vulkan ICD: containers given only the compute capability have the driver's
# libGLX_nvidia but no nvidia_icd.json; write one so the loader finds the driver.
if [ -z "${VK_ICD_FILENAMES:-}" ] && ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  NV=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
  if [ -n "$NV" ]; then
    ICD=$OUTDIR/nvidia_icd.json
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$NV" >"$ICD"
    # Keep whatever other ICDs exist (lavapipe) beside it.
    OTHERS=$(ls /usr/share/vulkan/icd.d/*.json 2>/dev/null | tr '\n' ':')
    export VK_ICD_FILENAMES="$ICD${OTHERS:+:${OTHERS%:}}"
    log "wrote $ICD for $NV"
  fi
fi

# --- A step: runs "$@" with a time limit, inside the overall budget. ---
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t0\tbudget of %ss spent\n' "$name" "$BUDGET" >>"$STEPS"
    log "$name: skipped (budget spent)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name (limit ${limit}s, ${left}s of the budget left)"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$RAW/$name.out" 2>"$RAW/$name.err"
  rc=$?
  local took=$(( $(date +%s) - t0 ))
  local status=ok note=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; note="killed after ${limit}s"
  elif [ "$rc" -ne 0 ]; then status=failed; note="exit $rc: $(tail -n 1 "$RAW/$name.err" | tr '\t' ' ')"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$note" >>"$STEPS"
  log "$name: $status in ${took}s $note"
}

# --- Workloads. ---
if [ "${GPU_BENCH_TINY:-0}" = "1" ]; then
  OURS_RUNS=(--runs 1 --warmup 0)
  TORCH_RUNS=(--runs 1 --warmup 0)
  W_CIFAR=(cifar10-32 "1,2" "")
  W_CELEBA=(celebahq-256 "1" "32")
  W_SD15=(sd15-512 "1" "64")
  W_TURBO=(sd-turbo-512 "1" "64")
  LIMIT_SMALL=300; LIMIT_BIG=400
else
  OURS_RUNS=(--runs 5 --warmup 2)
  TORCH_RUNS=(--runs 10 --warmup 3)
  W_CIFAR=(cifar10-32 "1,8,64" "")
  W_CELEBA=(celebahq-256 "1,4" "")
  W_SD15=(sd15-512 "1" "")
  W_TURBO=(sd-turbo-512 "1" "")
  LIMIT_SMALL=60; LIMIT_BIG=90
fi

step adapters 60 "$BIN" adapters

# --- PyTorch: GPU_BENCH_PYTHON's or the machine's torch, else the bundle's wheels in a venv. ---
PY=${GPU_BENCH_PYTHON:-python3}
if ! $PY -c 'import torch, diffusers' >/dev/null 2>&1; then
  if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
    log "installing torch + diffusers from $BUNDLE/wheels (offline)"
    $PY -m venv "$OUTDIR/venv" && "$OUTDIR/venv/bin/pip" install -q --no-index \
      --find-links "$BUNDLE/wheels" torch diffusers >>"$LOG" 2>&1 && PY=$OUTDIR/venv/bin/python
  fi
fi
TORCH=0
if $PY -c 'import torch, diffusers' >/dev/null 2>&1; then
  TORCH=1
  TORCH_DEVICE=${GPU_BENCH_TORCH_DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
  DTYPES=fp32
  [ "$TORCH_DEVICE" = "cuda" ] && DTYPES=fp32,fp16
else
  printf 'torch\tskipped\t0\tno importable torch + diffusers and no wheels in %s/wheels\n' "$BUNDLE" >>"$STEPS"
  log "PyTorch skipped: no torch + diffusers here and no wheels in the bundle"
fi

# Ours then PyTorch per workload, so a budget that runs out drops whole workloads (the last,
# largest ones), never one side of a comparison.
workload() {  # preset batches size limit
  local preset=$1 batches=$2 size=$3 limit=$4
  if [ -n "${GPU_BENCH_ONLY:-}" ] && [[ ",$GPU_BENCH_ONLY," != *",$preset,"* ]]; then
    return 0
  fi
  local extra=()
  [ -n "$size" ] && extra=(--height "$size" --width "$size")
  step "ours-$preset" "$limit" "$BIN" --backend "$BACKEND" bench --preset "$preset" \
    --batch "$batches" "${OURS_RUNS[@]}" --profile "${extra[@]}" --json "$RAW/ours-$preset.json"
  if [ "$TORCH" = 1 ]; then
    step "torch-$preset" "$limit" "$PY" "$ROOT/scripts/bench_pytorch.py" --preset "$preset" \
      --batch "$batches" "${TORCH_RUNS[@]}" --device "$TORCH_DEVICE" --dtype "$DTYPES" \
      --threads "$(nproc)" "${extra[@]}" --json "$RAW/torch-$preset.json"
  fi
}
workload "${W_CIFAR[@]}" "$LIMIT_SMALL"
workload "${W_CELEBA[@]}" "$LIMIT_BIG"
workload "${W_SD15[@]}" "$LIMIT_BIG"
workload "${W_TURBO[@]}" "$LIMIT_BIG"
# Shader runtime checks off (README, "Shader runtime checks"): cifar10-32 again, ours only, last
# so a tight budget drops it before any comparison; the report lists it as its own workload.
if [ -z "${GPU_BENCH_ONLY:-}" ] || [[ ",$GPU_BENCH_ONLY," == *",cifar10-32,"* ]]; then
  step "ours-cifar10-32-checks-off" "$LIMIT_SMALL" "$BIN" --backend "$BACKEND" --shader-checks off \
    bench --preset cifar10-32 --batch "${W_CIFAR[1]}" "${OURS_RUNS[@]}" --profile \
    --json "$RAW/ours-cifar10-32-checks-off.json"
  # The fixed 128 × 128 tiles GPUs got before the adaptive policy (README, "GEMM tiles").
  step "ours-cifar10-32-fixed-tiles" "$LIMIT_SMALL" env WGPU_DIFFUSION_TILES=fixed "$BIN" \
    --backend "$BACKEND" bench --preset cifar10-32 --batch "${W_CIFAR[1]}" "${OURS_RUNS[@]}" \
    --profile --json "$RAW/ours-cifar10-32-fixed-tiles.json"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
  >"$RAW/nvidia-smi.txt" 2>/dev/null || true
python3 "$ROOT/scripts/gpu_bench_report.py" "$RAW" "$OUTDIR/gpu_bench.json" "$OUTDIR/gpu_bench.md" \
  --elapsed "$(elapsed)" --tiny "${GPU_BENCH_TINY:-0}"
log "done in $(elapsed)s: $OUTDIR/gpu_bench.json, $OUTDIR/gpu_bench.md"
