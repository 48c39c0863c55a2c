# Hydra Compute — the two commands of the quick start:
#   make demo   install into .venv and run a coordinator, workers, a π and a Mandelbrot job
#   make test   install into .venv and run the checks and the whole test suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean browser wasm-toolchain

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hydracompute demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard tests drive Debian's Chromium (never a browser downloaded by a test tool);
# the worker's input-idle rule is tested on a virtual X display (Xvfb, xdotool).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/Xvfb -a -x /usr/bin/xdotool || \
		{ apt-get update -qq && apt-get install -y -qq chromium xvfb xdotool; }

# The wasm examples in C are built from source by the tests with Debian's clang, lld and
# wasi-libc (the builtins of libclang-rt for wasm32 provide 64-bit division and friends).
wasm-toolchain:
	@test -x /usr/bin/clang -a -x /usr/bin/wasm-ld -a -f /usr/lib/wasm32-wasi/libc.a \
		-a -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a || \
		{ apt-get update -qq && apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32; }

unit: $(STAMP) browser wasm-toolchain
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_kernels.py
	$(BIN)/python bench/bench_e2e.py

clean:
	rm -rf $(VENV) build dist demo-output bench/.build src/*.egg-info
