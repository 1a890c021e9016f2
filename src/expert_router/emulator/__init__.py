"""Emulated expert servers: a continuous-batching engine priced by a GPU performance model.

The same ``Engine`` runs live behind an OpenAI-compatible aiohttp server (``serve_emulator``,
``serve_fleet``) and in virtual time (``expert_router.emulator.virtual``). See docs/emulator.md.
"""

from expert_router.emulator.catalog import PRESETS
from expert_router.emulator.engine import Engine, EngineRequest
from expert_router.emulator.presets import Preset, get_preset, load_preset_file
from expert_router.emulator.server import EmulatorServer, Fleet, serve_emulator, serve_fleet

__all__ = [
    "PRESETS",
    "EmulatorServer",
    "Engine",
    "EngineRequest",
    "Fleet",
    "Preset",
    "get_preset",
    "load_preset_file",
    "serve_emulator",
    "serve_fleet",
]
