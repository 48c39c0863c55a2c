# Hydra Compute — the two commands of the quick start:
#   make demo   install into .venv and run a coordinator, workers, a π and a Mandelbrot job
#   make test   install into .venv and run the checks and the whole test suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean browser

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

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_kernels.py
	$(BIN)/python bench/bench_e2e.py

clean:
	rm -rf $(VENV) build dist demo-output bench/.build src/*.egg-info
