# `make test` runs every test; `make sample` runs the main job. Both work on a fresh machine:
# scripts/ensure-adapter.sh installs Mesa's lavapipe when wgpu finds no adapter.
# One build profile (dev, with dependencies at opt-level 3) serves the tests and the CLI, so
# wgpu compiles once.
CARGO ?= cargo
BIN := target/debug/wgpu-diffusion

.PHONY: all test sample adapter build lint fixtures

all: test

build:
	$(CARGO) build --bin wgpu-diffusion

adapter:
	@scripts/ensure-adapter.sh

test: adapter
	$(BIN) adapters
	$(CARGO) test --no-fail-fast

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Regenerates tests/fixtures (needs the pinned torch + diffusers of scripts/requirements.txt;
# never needed by `make test`).
fixtures:
	python3 scripts/make_fixtures.py --out tests/fixtures
