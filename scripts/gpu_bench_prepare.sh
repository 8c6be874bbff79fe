#!/usr/bin/env bash
# Builds what scripts/gpu_bench.sh needs on a GPU machine without network, into one folder:
#   BUNDLE/wgpu-diffusion   the release binary (built here: same OS as the GPU machine's image)
#   BUNDLE/debs/*.deb       the Vulkan loader (libvulkan1), via apt-get download (NVIDIA's driver
#                           brings its own ICD; gpu_bench.sh writes the json if it is missing)
#   BUNDLE/wheels/*.whl     torch (CUDA) + diffusers and their dependencies, via pip download
#                           (several GB; GPU_BENCH_WHEELS=0 leaves them out when the GPU machine
#                           has its own torch)
#
#   scripts/gpu_bench_prepare.sh [BUNDLE]      # default target/gpu-bench-bundle
#   GPU_BENCH_PROFILE=dev GPU_BENCH_WHEELS=0 scripts/gpu_bench_prepare.sh B   # the dev binary
#       (already built by `make test`): what the CPU-path check of gpu_bench.sh uses
# Then carry BUNDLE (and this checkout's scripts/) to the GPU machine and run
#   scripts/gpu_bench.sh BUNDLE [OUT]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-$ROOT/target/gpu-bench-bundle}
mkdir -p "$BUNDLE/debs"
BUNDLE=$(cd "$BUNDLE" && pwd)
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

PROFILE=${GPU_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "gpu_bench_prepare: GPU_BENCH_PROFILE must be release or dev, got '$PROFILE'" >&2; exit 2 ;;
esac
echo "gpu_bench_prepare: building the $PROFILE binary" >&2
(cd "$ROOT" && $CARGO build --profile "$PROFILE" --bin wgpu-diffusion)
cp "$TARGET/$DIR/wgpu-diffusion" "$BUNDLE/wgpu-diffusion"
# Debug info off: the binary travels (a dev build is ~200 MB with it).
strip "$BUNDLE/wgpu-diffusion" 2>/dev/null || true

echo "gpu_bench_prepare: downloading the Vulkan loader .deb" >&2
# apt-get download writes into the current directory and needs no root; `apt-get update` first
# when the package lists are missing.
(cd "$BUNDLE/debs" && apt-get download libvulkan1)

if [ "${GPU_BENCH_WHEELS:-1}" = "1" ]; then
  echo "gpu_bench_prepare: downloading torch + diffusers wheels (large)" >&2
  mkdir -p "$BUNDLE/wheels"
  python3 -m pip download -q --dest "$BUNDLE/wheels" torch diffusers
fi
du -sh "$BUNDLE" >&2
echo "gpu_bench_prepare: bundle ready: $BUNDLE" >&2
