"""Mixed fleets from YAML: which presets to run, how many of each, on which ports.

host: 127.0.0.1          # optional
port: 8001               # optional: first port; members without a port count up from it
experts:
  - preset: C            # built-in name or path of a preset YAML
    count: 4
  - preset: cpu-tiny
    port: 9000
    overrides: {max_batch: 4, model_name: tiny-expert}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from expert_router.emulator.presets import Preset, get_preset
from expert_router.errors import ConfigError, invalid


class FleetMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str
    count: int = Field(1, ge=1)
    port: int | None = Field(None, ge=1, le=65535)
    overrides: dict[str, Any] = Field(default_factory=dict)


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)
    experts: list[FleetMember] = Field(min_length=1)

    def members(self, base_dir: Path | None = None) -> list[tuple[Preset, int]]:
        """``(preset, port)`` of every expert; port 0 means any free port."""
        out: list[tuple[Preset, int]] = []
        next_port = self.port or 0
        for i, member in enumerate(self.experts):
            name = member.preset
            if base_dir is not None and name.endswith((".yaml", ".yml")):
                path = Path(name)
                name = str(path if path.is_absolute() else base_dir / path)
            try:
                preset = get_preset(name, **member.overrides)
            except ConfigError as exc:
                raise ConfigError(f"experts.{i}: {exc}") from exc
            for k in range(member.count):
                if member.port is not None:
                    port = member.port + k
                else:
                    port = next_port
                    next_port = next_port + 1 if next_port else 0
                out.append((preset, port))
        return out


def load_fleet_config(path: Path) -> FleetConfig:
    """Read and validate a fleet YAML; errors name the file and the field."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"fleet config {path}: cannot read: {exc}") from exc
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, f"fleet config {path}") from exc
