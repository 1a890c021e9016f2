"""What ``expert-router plan`` writes for Kubernetes: schema-valid objects, a kustomization
that renders (alone, or on top of deploy/kubernetes/base), the planned replica counts, and a
gateway config whose every replica is a pod of the plan's StatefulSets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from deploy_helpers import K8S, K8S_VERSIONS, find, load_docs, render, validate

from expert_router.config import validate_gateway_config
from expert_router.emulator.presets import get_preset
from expert_router.emulator.virtual import SimWorkload
from expert_router.planner.outputs import write_outputs
from expert_router.planner.plan import Plan, PlanInputs, make_plan

BASE = K8S / "base"


@pytest.fixture(scope="module")
def plan() -> Plan:
    w = SimWorkload(users=24, output_tokens=20, base_tokens=50, continuation_tokens=120, jitter=5)
    tiny = get_preset("cpu-tiny", max_batch=2)
    inputs = PlanInputs(gpus=7, options=((tiny,),) * 3, weights=(0.6, 0.3, 0.1),
                        workload=dataclasses.replace(w, clusters=3), jobs=1)  # fmt: skip
    return make_plan(inputs)


def _write(tmp_path: Path, plan: Plan, base: Path | None) -> Path:
    write_outputs(tmp_path, plan, k8s_base=base, k8s_image="example.org/expert:1")
    return tmp_path / "kubernetes"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_written_is_schema_valid(tmp_path: Path, plan: Plan, version: str) -> None:
    kdir = _write(tmp_path, plan, None)
    for name in ("experts.yaml", "gateway-config.yaml"):
        for doc in load_docs(kdir / name):
            validate(doc, version)
    for obj in render(kdir):
        validate(obj, version)


def test_the_kustomization_sets_the_planned_replicas(tmp_path: Path, plan: Plan) -> None:
    objs = render(_write(tmp_path, plan, None))
    sets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "StatefulSet"}
    planned = {f"expert-{c}": n for c, (_, n) in enumerate(plan.best.alloc)}
    assert {k: s["spec"]["replicas"] for k, s in sets.items()} == planned
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for s in sets.values():
        svc = services[s["spec"]["serviceName"]]
        assert svc["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
        pod_labels = s["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert s["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (container,) = s["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "example.org/expert:1"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_on_the_gateway_base_the_configmap_is_the_plans(tmp_path: Path, plan: Plan) -> None:
    kdir = _write(tmp_path, plan, BASE)
    kust = load_docs(kdir / "kustomization.yaml")[0]
    assert (kdir / kust["resources"][0]).resolve() == BASE.resolve()
    objs = render(kdir)
    assert find(objs, "Deployment")["metadata"]["name"] == "expert-router"  # the base's gateway
    config = validate_gateway_config(
        yaml.safe_load(find(objs, "ConfigMap")["data"]["gateway.yaml"])
    )
    sets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "StatefulSet"}
    pods = {f"{name}-{i}.{name}" for name, s in sets.items() for i in range(s["spec"]["replicas"])}
    urls = {r.url for pool in config.experts.values() for r in pool.replicas}
    assert {u.split("//")[1].split(":")[0] for u in urls} == pods
    assert config.spillover.policy == "saturated" and config.spillover.max_distance == 1
