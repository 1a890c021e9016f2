#!/usr/bin/env bash
# Install the package with its dev extras into a venv (make test / check / bench), saying
# before each long step what it does and about how long it takes. The slow one is
# llama-cpp-python: its first install compiles llama.cpp from source; a line every 30 s shows
# that the build goes on. Usage: scripts/install-dev.sh VENV
set -euo pipefail
venv="${1:?usage: install-dev.sh VENV}"
py="$venv/bin/python"
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Run "$@" in the background and print a line every 30 s until it ends; returns its status.
with_heartbeat() {
    local what="$1"; shift
    "$@" &
    local pid=$! start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            printf '    ... %s: still running after %d min %02d s\n' "$what" \
                $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60))
        fi
    done
    wait "$pid"
}

# llama-cpp-python's requirement, as pyproject.toml states it (one place for the version).
llama_req="$("$py" - <<'PY'
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(next(r for r in extras["test"] if r.startswith("llama-cpp-python")))
PY
)"

if "$py" -c "import llama_cpp" 2>/dev/null; then
    echo "llama-cpp-python is already installed: no llama.cpp build needed"
else
    say "building llama.cpp through $llama_req: it compiles from source, about 10-15 minutes" \
        "on two cores the first time (the tests run a real llama.cpp server)"
    with_heartbeat "compiling llama.cpp" "$py" -m pip install --progress-bar on "$llama_req"
fi

say "installing expert-router (editable) with its runtime and test dependencies: about 1-3" \
    "minutes the first time (numpy, scipy, scikit-learn, grpcio, matplotlib, pytest, ruff, mypy)"
"$py" -m pip install --progress-bar on -e '.[dev]'
