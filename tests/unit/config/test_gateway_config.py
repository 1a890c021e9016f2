"""Gateway config: defaults, YAML loading, errors that name the field, --expert flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from expert_router.config import (
    GatewayConfig,
    gateway_config_from_experts,
    load_gateway_config,
    parse_expert_flags,
    validate_gateway_config,
)
from expert_router.errors import ConfigError

FULL = """
classifier: {model: null, text: all_user}
experts:
  "0":
    replicas:
      - {url: "http://10.0.0.1:8000/", model: llama-code, max_concurrency: 32, weight: 2}
      - {url: "http://10.0.0.2:8000", name: code-b}
  "*":
    replicas: [{url: "https://general.example:443"}]
api_keys: [sk-one, sk-two]
timeouts: {connect: 1, first_byte: 30, read: 30}
limits: {max_body_bytes: 1000, queue_size: 5, queue_timeout: 2.5, retries: 1}
spillover: {policy: unhealthy, max_distance: 2}
health: {interval: 1, timeout: 0.5, path: /healthz, eject_after: 2}
access_log: true
"""


def test_defaults() -> None:
    cfg = validate_gateway_config({"experts": {"*": {"replicas": [{"url": "http://h:1"}]}}})
    assert cfg.classifier.model is None and cfg.classifier.text == "last_user"
    assert cfg.limits.max_body_bytes == 8 * 1024 * 1024
    assert cfg.spillover.policy == "saturated" and cfg.spillover.max_distance == 1
    assert cfg.api_keys == [] and cfg.access_log is False
    r = cfg.experts["*"].replicas[0]
    assert (r.protocol, r.label, r.max_concurrency, r.weight, r.model) == (
        "http",
        "h:1",
        None,
        1.0,
        None,
    )


def test_full_yaml(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(FULL)
    cfg = load_gateway_config(path)
    assert isinstance(cfg, GatewayConfig)
    a, b = cfg.experts["0"].replicas
    assert a.url == "http://10.0.0.1:8000" and a.label == "10.0.0.1:8000" and a.weight == 2
    assert b.label == "code-b"
    assert cfg.experts["*"].replicas[0].protocol == "https"
    assert cfg.spillover.policy == "unhealthy" and cfg.health.eject_after == 2
    assert cfg.classifier.text == "all_user" and cfg.limits.queue_timeout == 2.5


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"experts": {}}, "experts"),
        ({"experts": {"zero": {"replicas": [{"url": "http://h:1"}]}}}, "experts"),
        ({"experts": {"0": {"replicas": []}}}, "experts.0.replicas"),
        ({"experts": {"0": {"replicas": [{"url": "nohost"}]}}}, "experts.0.replicas[0].url"),
        (
            {"experts": {"0": {"replicas": [{"url": "http://h:1", "max_concurrency": 0}]}}},
            "experts.0.replicas[0].max_concurrency",
        ),
        ({"spillover": {"policy": "always"}}, "spillover.policy"),
        ({"classifier": {"text": "everything"}}, "classifier.text"),
        ({"limits": {"max_body_bytes": 0}}, "limits.max_body_bytes"),
        ({"timeouts": {"read": -1}}, "timeouts.read"),
        ({"colour": "blue"}, "colour"),
        ({"api_keys": [""]}, "api_keys"),
    ],
)
def test_errors_name_the_field(patch: dict[str, object], field: str) -> None:
    data: dict[str, object] = {"experts": {"*": {"replicas": [{"url": "http://h:1"}]}}}
    data.update(patch)
    with pytest.raises(ConfigError) as info:
        validate_gateway_config(data, source="g.yaml")
    assert f"g.yaml: {field}:" in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_gateway_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_gateway_config(bad)


def test_expert_flags() -> None:
    flags = ["0=http://a:1", "*=http://b:2", " 0 = http://c:3"]
    assert parse_expert_flags(flags) == {"0": ["http://a:1", "http://c:3"], "*": ["http://b:2"]}
    cfg = gateway_config_from_experts(parse_expert_flags(flags), model="dir")
    assert cfg.classifier.model == "dir"
    assert [r.url for r in cfg.experts["0"].replicas] == ["http://a:1", "http://c:3"]
    for bad in ["http://a:1", "0=", "=http://a:1"]:
        with pytest.raises(ConfigError, match="CLUSTER=URL"):
            parse_expert_flags([bad])
    with pytest.raises(ConfigError, match="--expert: experts: .*got .x."):
        gateway_config_from_experts({"x": ["http://a:1"]})


def test_a_replica_url_with_credentials_is_refused_without_quoting_them() -> None:
    """Credentials in a URL would travel in the upstream's Host header and in error messages;
    the refusal names the field, not the secret."""
    url = "http://admin:s3cret@10.0.0.5:8000"
    with pytest.raises(ConfigError) as info:
        validate_gateway_config({"experts": {"*": {"replicas": [{"url": url}]}}})
    assert "s3cret" not in str(info.value) and "api_key" in str(info.value)
