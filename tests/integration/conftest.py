"""The integration tests' shared modules (``procs``, ``polling``, ``triton_inputs``) import by
name from every folder below: this folder goes on ``sys.path`` before any of them loads."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
