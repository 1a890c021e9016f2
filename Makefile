# The two set-up commands are `make demo` and `make test`; both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test check lint typecheck bench clean model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: $(STAMP)
	$(BIN)/expert-router demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python benchmarks/classify_latency.py
	$(BIN)/python benchmarks/routing_quality.py

# Rebuild the bundled default router from the C4 sample (see docs/classifier.md).
model: $(STAMP)
	$(BIN)/expert-router train ../shared/data/c4_sample.train.jsonl.gz --clusters 8 --seed 0 \
		--out src/expert_router/data/default_model

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
