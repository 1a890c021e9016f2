# The two set-up commands are `make demo` and `make test`; both create .venv when missing.
# `demo` installs the package alone; `test`, `check` and `bench` add the dev extras (pytest,
# ruff, mypy, llama-cpp-python: its first build compiles llama.cpp, 10-15 minutes on two
# cores; scripts/install-dev.sh says so and shows that it goes on). `test` also installs
# Debian's nginx for the nginx tests when it is missing (scripts/install-nginx.sh).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(HASH)
DEV := $(VENV)/.dev-$(HASH)
# The C parts (optional: their Python twins do the same where no compiler is found); editing
# them re-runs the install, which rebuilds them in place.
EXT := setup.py src/expert_router/classify/_native.c src/expert_router/wire/_http1.c

.PHONY: demo test check lint typecheck bench clean model nginx

$(BIN)/python:
	@echo "==> creating the virtual environment $(VENV) with $$($(PY) --version) (seconds)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml $(EXT) | $(BIN)/python
	@echo "==> installing expert-router and its dependencies into $(VENV): about 1-2 minutes" \
		"the first time"
	$(BIN)/pip install --progress-bar on -e .
	rm -f $(VENV)/.runtime-*; touch $@

$(DEV): pyproject.toml $(EXT) | $(BIN)/python
	scripts/install-dev.sh $(VENV)
	rm -f $(VENV)/.runtime-* $(VENV)/.dev-*; touch $(RUNTIME) $@

demo: $(RUNTIME)
	@echo "==> the demo: an emulated fleet, the gateway, a live sweep and the paper's sweep" \
		"in virtual time (about a minute)"
	$(BIN)/expert-router demo

# nginx for the nginx integration tests; without it (no apt-get, not root) they are skipped.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		echo "==> installing Debian's nginx with apt-get for the nginx tests (about a minute;" \
			"the tests run it as a plain process, the system service is never started)"; \
		scripts/install-nginx.sh || echo "nginx could not be installed: its tests will be skipped"; }

test: $(DEV) nginx
	@echo "==> running the test suite (unit and integration: several minutes on two cores)"
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python scripts/check_structure.py

# A file in a folder on mypy_path (pyproject.toml) is a top-level module, so the conftest.py of
# each such folder would be the same module, "conftest": the plain run leaves them out and each
# conftest.py gets a run of its own.
typecheck: $(DEV)
	$(BIN)/mypy
	for f in $$(find tests -name conftest.py | sort); do $(BIN)/mypy --no-error-summary $$f || exit 1; done

check: lint typecheck test

bench: $(DEV)
	$(BIN)/python benchmarks/classify_latency.py
	$(BIN)/python benchmarks/routing_quality.py
	$(BIN)/python benchmarks/classify_truncation.py

# Rebuild the bundled default router from the C4 sample (see docs/classifier.md); needs the
# project's data folder beside the checkout (../shared/data), as `bench` does.
model: $(DEV)
	$(BIN)/expert-router train ../shared/data/c4_sample.train.jsonl.gz --clusters 8 --seed 0 \
		--out src/expert_router/data/default_model

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
