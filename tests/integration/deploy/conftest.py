"""Imports for the deployment integration tests: the manifest helpers of tests/unit/deploy
(those of tests/integration are on the path already: ``tests/integration/conftest.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

UNIT_DEPLOY = str(Path(__file__).resolve().parents[2] / "unit" / "deploy")
if UNIT_DEPLOY not in sys.path:
    sys.path.insert(0, UNIT_DEPLOY)
