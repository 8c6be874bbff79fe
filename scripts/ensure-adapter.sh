#!/usr/bin/env bash
# Makes sure wgpu can see a GPU adapter before tests or sampling run. When none exists and apt-get
# is usable (root, or passwordless sudo), installs Mesa's software Vulkan driver (lavapipe).
# Anything else is a hard failure with instructions: tests never skip for want of an adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
$CARGO build --quiet --bin wgpu-diffusion
BIN=target/debug/wgpu-diffusion

if "$BIN" adapters --check >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-adapter: wgpu found no GPU adapter; trying to install mesa-vulkan-drivers (lavapipe)" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  if [ "$SUDO" != "none" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  fi
fi
if ! "$BIN" adapters --check; then
  echo "ensure-adapter: still no adapter. Install a Vulkan driver (e.g. 'apt-get install mesa-vulkan-drivers')" >&2
  echo "or point WGPU_BACKEND / WGPU_ADAPTER_NAME at one that exists." >&2
  exit 1
fi
