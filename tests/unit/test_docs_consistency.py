"""The docs name only what the code has: every config field (and the default the docs give
it) and every metric, read from the code, so the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from expert_router.config import GatewayConfig, ReplicaConfig
from expert_router.gateway.metrics import NS, GatewayMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _field(model: type[BaseModel], dotted: str) -> Any:
    """The pydantic field at ``dotted`` (``limits.max_body_bytes``), or an AssertionError."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        assert part in model.model_fields, f"docs name {dotted!r}: no field {part!r}"
        info = model.model_fields[part]
        if i == len(parts) - 1:
            return info
        sub = info.annotation
        assert isinstance(sub, type) and issubclass(sub, BaseModel), f"{dotted}: not a section"
        model = sub
    raise AssertionError(dotted)


def _example() -> dict[str, Any]:
    text = (DOCS / "configuration.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "configuration.md has no YAML example"
    data = yaml.safe_load(block.group(1))
    assert isinstance(data, dict)
    return data


def _compare(model: type[BaseModel], data: dict[str, Any], where: str) -> int:
    """Check every key of ``data`` against ``model``'s fields and defaults; keys checked."""
    checked = 0
    for key, value in data.items():
        info = model.model_fields.get(key)
        assert info is not None, f"configuration.md's example: {where}{key} is not a field"
        sub = info.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            checked += _compare(sub, value, f"{where}{key}.")
            continue
        if info.is_required():
            continue
        assert value == info.default, f"{where}{key}: docs say {value!r}, code {info.default!r}"
        checked += 1
    return checked


def test_the_config_example_names_every_field_with_its_default() -> None:
    data = _example()
    experts = data.pop("experts")
    checked = _compare(GatewayConfig, data, "")
    for pool in experts.values():
        for replica in pool["replicas"]:
            for key, value in replica.items():
                info = ReplicaConfig.model_fields[key]
                if not info.is_required():
                    assert value == info.default, f"replicas[].{key}: {value!r}"
    sections = {k for k, v in GatewayConfig.model_fields.items() if k != "experts"}
    assert sections <= set(data), f"the example lacks {sorted(sections - set(data))}"
    assert checked > 30


def test_every_field_in_the_fields_table_exists() -> None:
    text = (DOCS / "configuration.md").read_text()
    table = text.split("## Fields", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `([^`]+)`", table, re.M)
    assert len(names) > 20
    for name in names:
        if name.startswith("…replicas[]."):
            _field(ReplicaConfig, name.removeprefix("…replicas[]."))
        elif name.endswith(".*"):
            _field(GatewayConfig, name[:-2])
        elif name.startswith("experts"):
            _field(GatewayConfig, "experts")
        else:
            _field(GatewayConfig, name)
    # "`timeouts.connect` / `first_byte` / `read`": the names after a slash share the prefix
    for prefix, rest in re.findall(r"^\| `(\w+)\.\w+` /((?: `\w+` /?)+)", table, re.M):
        for name in re.findall(r"`(\w+)`", rest):
            _field(GatewayConfig, f"{prefix}.{name}")


def _registered() -> set[str]:
    """The metric names GatewayMetrics registers, without the namespace (as the docs list)."""
    out = set()
    for family in GatewayMetrics().registry.collect():
        name = family.name.removeprefix(NS + "_")
        out.add(name + "_total" if family.type == "counter" else name)
    return out


def test_the_metrics_table_is_the_registry() -> None:
    text = (DOCS / "operations.md").read_text()
    table = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert documented == _registered()
