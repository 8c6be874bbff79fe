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

# The external crate (examples/external): depends on the library with default-features = false.
EXTERNAL := examples/external
EXTERNAL_PNG := target/external/sample.png
# Its run: 4 images of 28x28 (the bundled model), 10 DDIM steps, laid out in one row.
EXTERNAL_IMAGES := 4
EXTERNAL_STEPS := 10

.PHONY: all test sample sample-text adapter build lint fixtures external ray-test

all: test

build:
	$(CARGO) build --bin wgpu-diffusion

adapter:
	@scripts/ensure-adapter.sh

# The op and U-Net tests run a second time with naga's shader runtime checks off
# (WGPU_DIFFUSION_SHADER_CHECKS=off; README, "Shader runtime checks"): every kernel must give the
# same results without the clamps naga would inject (24-27 s warm on 2 shared vCPU, lavapipe).
SHADER_CHECKS_OFF_TESTS := --test ops_gemm --test ops_misc --test ops_attention --test ops_text \
	--test ops_non_finite --test unet

test: adapter
	$(BIN) adapters
	$(CARGO) test --no-fail-fast
	WGPU_DIFFUSION_SHADER_CHECKS=off $(CARGO) test --no-fail-fast $(SHADER_CHECKS_OFF_TESTS)
	@$(MAKE) --no-print-directory external
	@$(MAKE) --no-print-directory ray-test

# scripts/ray_sample.py on a local Ray: 3 slices of 6 images equal one run bit for bit, a killed
# worker is retried, resume skips verified slices (scripts/test_ray_sample.py). Its virtual
# environment holds the pinned ray of scripts/requirements-ray.txt (installed once, from PyPI).
RAY_VENV := target/ray-venv
$(RAY_VENV)/.installed: scripts/requirements-ray.txt
	python3 -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/pip install -q -r scripts/requirements-ray.txt
	touch $@

ray-test: $(RAY_VENV)/.installed
	$(CARGO) build --bin wgpu-diffusion
	$(RAY_VENV)/bin/python scripts/test_ray_sample.py $(BIN)

# A crate outside this workspace builds against the library without the `cli` feature and
# samples: examples/sample.rs, built as that crate's `external-sample`, writes a PNG that
# `external-check-png` checks (size, not constant). It runs after `cargo test` and shares its
# target/ (CARGO_TARGET_DIR), so the dependencies compiled there are reused; its Cargo.lock is
# seeded from ours so it resolves the same versions. Never run from inside a test: a nested
# cargo on the same target directory waits for the outer one's lock.
external:
	@if $(CARGO) tree --no-default-features -e normal --prefix none | grep -E '^(clap|indicatif|anyhow) '; then \
		echo "error: the library without the cli feature depends on the crates above" >&2; exit 1; fi
	cp Cargo.lock $(EXTERNAL)/Cargo.lock
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --manifest-path $(EXTERNAL)/Cargo.toml --bins
	@mkdir -p $(dir $(EXTERNAL_PNG))
	target/debug/external-sample weights/fashion-ddpm $(EXTERNAL_PNG) $(EXTERNAL_IMAGES) $(EXTERNAL_STEPS)
	target/debug/external-check-png $(EXTERNAL_PNG) $$(( 28 * $(EXTERNAL_IMAGES) )) 28

# The main job: 16 images of the bundled class-conditional Fashion-MNIST model (one per class,
# cycling), DDIM 20 steps, entirely on the GPU; writes samples.png.
sample: adapter
	$(BIN) sample -o samples.png $(SAMPLE_ARGS)

# Text-to-image with our own small Stable Diffusion folder (weights/fashion-sd, issue 17): one grid
# row per prompt, TEXT_COLS images each (different seeds' noise), the folder's defaults (DDIM 20
# steps, guidance 7.5); writes samples-text.png. Prompts are '|'-separated; "" is unconditional.
TEXT_MODEL ?= weights/fashion-sd
TEXT_PROMPTS ?= a photo of a t-shirt|a pair of trousers|a photo of a dress|a photo of a coat|a pair of sandals|a pair of sneakers|a photo of a bag|a pair of ankle boots
TEXT_COLS ?= 6
TEXT_ARGS ?= --seed 0
sample-text: adapter
	@prompts='$(TEXT_PROMPTS)'; set --; IFS='|'; for p in $$prompts; do i=0; \
		while [ $$i -lt $(TEXT_COLS) ]; do set -- "$$@" --prompt "$$p"; i=$$((i + 1)); done; \
	done; unset IFS; \
	$(BIN) sample --model $(TEXT_MODEL) --num-images $$(($$# / 2)) --cols $(TEXT_COLS) \
		-o samples-text.png $(TEXT_ARGS) "$$@"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --lib --no-default-features -- -D warnings

# Regenerates tests/fixtures (needs the pinned torch + diffusers of scripts/requirements.txt;
# never needed by `make test`).
fixtures:
	python3 scripts/make_fixtures.py --out tests/fixtures
	python3 scripts/make_schedule_fixtures.py --out tests/fixtures/schedules
	python3 scripts/make_sampler_fixtures.py
