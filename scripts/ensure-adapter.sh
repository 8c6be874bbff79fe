#!/usr/bin/env bash
# Makes sure wgpu can see a native GPU adapter (Vulkan, Metal or DX12) before tests or sampling
# run. Mesa's GL llvmpipe is preinstalled on many Linux machines, but the Vulkan path is the one
# the tests are meant to exercise: when no Vulkan/Metal/DX12 adapter exists and apt-get is usable
# (root, or passwordless sudo), this installs Mesa's software Vulkan driver (lavapipe). GL stays
# installed as a second adapter (tests/adapters.rs compares the two bit for bit); the default
# adapter (GpuContext::new) prefers a native backend over GL at equal device type.
# No adapter at all is a hard failure with instructions: tests never skip for want of an adapter.
# Under CI (CI=true) a missing native adapter is a failure too, so CI never silently tests GL only.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
$CARGO build --quiet --bin wgpu-diffusion
BIN=${CARGO_TARGET_DIR:-target}/debug/wgpu-diffusion
NATIVE=vulkan,metal,dx12

# WGPU_BACKEND narrows what the binary sees; the question here is what exists on the machine.
if env -u WGPU_BACKEND -u WGPU_ADAPTER_NAME "$BIN" adapters --check --backend "$NATIVE" >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-adapter: wgpu found no Vulkan adapter; trying to install mesa-vulkan-drivers (lavapipe)" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  if [ "$SUDO" != "none" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "ensure-adapter: not root and no passwordless sudo: cannot install it" >&2
  fi
fi
if env -u WGPU_BACKEND -u WGPU_ADAPTER_NAME "$BIN" adapters --check --backend "$NATIVE" >/dev/null 2>&1; then
  exit 0
fi
if [ "${CI:-}" = "true" ]; then
  echo "ensure-adapter: CI needs a Vulkan adapter and none exists after installing mesa-vulkan-drivers." >&2
  env -u WGPU_BACKEND -u WGPU_ADAPTER_NAME "$BIN" adapters >&2 || true
  exit 1
fi
if ! env -u WGPU_BACKEND -u WGPU_ADAPTER_NAME "$BIN" adapters --check; then
  echo "ensure-adapter: still no adapter. Install a Vulkan driver (e.g. 'apt-get install mesa-vulkan-drivers')" >&2
  echo "or point WGPU_BACKEND / WGPU_ADAPTER_NAME at one that exists." >&2
  exit 1
fi
echo "ensure-adapter: warning: no Vulkan adapter; tests will run on the adapters listed above (GL)." >&2
