# `make test` runs every test; `make sample` runs the main job. Both work on a fresh machine:
# scripts/ensure-adapter.sh installs Mesa's lavapipe when wgpu finds no adapter.
# One build profile (dev, with dependencies at opt-level 3) serves the tests and the CLI, so
# wgpu compiles once.
CARGO ?= cargo
BIN := target/debug/wgpu-diffusion
# Mesa warns on every start when XDG_RUNTIME_DIR is unset or invalid; give it a harmless one.
export XDG_RUNTIME_DIR ?= /tmp
# `make sample` options (override on the command line: make sample SAMPLE_ARGS="--seed 3").
SAMPLE_ARGS ?= --num-images 16 --class all --seed 0

.PHONY: all test sample adapter build lint fixtures

all: test

build:
	$(CARGO) build --bin wgpu-diffusion

adapter:
	@scripts/ensure-adapter.sh

test: adapter
	$(BIN) adapters
	$(CARGO) test --no-fail-fast

# The main job: 16 images of the bundled class-conditional Fashion-MNIST model (one per class,
# cycling), DDIM 20 steps, entirely on the GPU; writes samples.png.
sample: adapter
	$(BIN) sample -o samples.png $(SAMPLE_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Regenerates tests/fixtures (needs the pinned torch + diffusers of scripts/requirements.txt;
# never needed by `make test`).
fixtures:
	python3 scripts/make_fixtures.py --out tests/fixtures
	python3 scripts/make_schedule_fixtures.py --out tests/fixtures/schedules
	python3 scripts/make_sampler_fixtures.py
