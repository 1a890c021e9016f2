"""The Grafana dashboard: valid JSON with a sane layout, and every PromQL query names only
metrics (and labels) that the gateway's metrics module really exports."""

from __future__ import annotations

import re

import pytest
from deploy_helpers import DEPLOY, TARGET_LABELS, dashboard, parse, queries
from prometheus_client.metrics import MetricWrapperBase

from expert_router.gateway.metrics import GatewayMetrics


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, for every series the gateway can export."""
    metrics = GatewayMetrics()
    labels = {
        w._name: set(w._labelnames)  # noqa: SLF001 - prometheus_client keeps them here
        for w in vars(metrics).values()
        if isinstance(w, MetricWrapperBase)
    }
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        names = labels.get(family.name, set())
        if family.type == "counter":
            out[f"{family.name}_total"] = names
        elif family.type == "histogram":
            out[f"{family.name}_bucket"] = names | {"le"}
            out[f"{family.name}_sum"] = names
            out[f"{family.name}_count"] = names
        else:
            out[family.name] = names
    return out


def test_the_parser_finds_names_and_labels() -> None:
    names, matched, grouped = parse(
        'histogram_quantile(0.99, sum by (le, replica) (rate(a_bucket{x=~"$y", z!="}"}[5m])))'
        " / clamp_min(sum(b_total), 1e-9) + label_values(c, instance)"
    )
    assert names == {"a_bucket", "b_total", "c", "instance"}
    assert matched == {"x", "z"} and grouped == {"le", "replica"}


def test_the_metrics_module_exports_what_the_dashboard_is_built_on() -> None:
    names = exported()
    core = ["requests_total", "overhead_seconds_bucket", "classify_seconds_bucket"]
    core += ["upstream_ttft_seconds_bucket", "in_flight", "replica_healthy", "spillovers_total"]
    for name in core:
        assert f"expert_router_{name}" in names
    assert {"cluster", "replica", "status"} <= names["expert_router_requests_total"]


@pytest.mark.parametrize("expr", queries())
def test_every_query_uses_only_exported_metrics_and_labels(expr: str) -> None:
    known = exported()
    names, matched, grouped = parse(expr)
    if expr.startswith("label_values("):
        names -= TARGET_LABELS
    assert names, f"no metric in {expr!r}"
    unknown = names - set(known)
    assert not unknown, f"{sorted(unknown)} are not exported by the gateway"
    allowed = set.intersection(*(known[n] for n in names)) | TARGET_LABELS
    assert matched <= allowed, f"labels {sorted(matched - allowed)} do not exist on {names}"
    assert grouped <= allowed, f"labels {sorted(grouped - allowed)} do not exist on {names}"


def test_an_unknown_metric_is_caught() -> None:
    names, _, _ = parse('sum(rate(expert_router_request_total{instance=~"$instance"}[1m]))')
    assert names - set(exported()) == {"expert_router_request_total"}


def test_layout_ids_and_variables() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{p['title']}: undefined variables {used - variables}"


def test_the_metrics_table_in_the_deployment_docs_matches_the_gateway() -> None:
    doc = (DEPLOY.parent / "docs" / "deployment.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(expert_router_\w+)` \| (\w+) \|([^|]*)\|", doc, re.MULTILINE)
    assert len(rows) == len(set(rows)) >= 10
    known = exported()
    for name, kind, labels in rows:
        sample = {"counter": name, "gauge": name, "histogram": f"{name}_bucket"}[kind]
        assert sample in known, f"docs list {name} ({kind}), the gateway does not export it"
        want = set(re.findall(r"`(\w+)`", labels)) | ({"le"} if kind == "histogram" else set())
        assert known[sample] == want, f"{name}: docs say {sorted(want)}"
