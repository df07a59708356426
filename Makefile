# Quick start: `make run` (the main job on the embedded data) and `make test`.
# Both create .venv on first use. On a machine without an NVIDIA GPU the CPU
# build of torch is installed first, so pip never pulls a CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test lint bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q "torch>=2.6"; \
	else \
	  $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev,hf]"
	touch $@

run: setup
	$(BIN)/bwssl run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/bwssl bench $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
