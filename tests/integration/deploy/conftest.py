"""Imports for the deployment integration tests: the process helpers of tests/integration and
the manifest helpers of tests/unit/deploy."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
for folder in (HERE.parents[1], HERE.parents[2] / "unit" / "deploy"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
