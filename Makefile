# The two set-up commands are `make demo` and `make test`; both create .venv when missing.
# `demo` installs the package alone; `test`, `check` and `bench` add the dev extras (pytest,
# ruff, mypy, llama-cpp-python: its first build compiles llama.cpp, about 5 minutes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(HASH)
DEV := $(VENV)/.dev-$(HASH)

.PHONY: demo test check lint typecheck bench clean model

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	rm -f $(VENV)/.runtime-*; touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.runtime-* $(VENV)/.dev-*; touch $(RUNTIME) $@

demo: $(RUNTIME)
	$(BIN)/expert-router demo

test: $(DEV)
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(DEV)
	$(BIN)/mypy

check: lint typecheck test

bench: $(DEV)
	$(BIN)/python benchmarks/classify_latency.py
	$(BIN)/python benchmarks/routing_quality.py

# Rebuild the bundled default router from the C4 sample (see docs/classifier.md).
model: $(DEV)
	$(BIN)/expert-router train ../shared/data/c4_sample.train.jsonl.gz --clusters 8 --seed 0 \
		--out src/expert_router/data/default_model

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
