"""A plan made deployable: the gateway's YAML and the experts' Kubernetes objects.

``gateway_config`` gives every cluster its pool of replicas (URLs from a template), each
saturated at ``HEADROOM`` times the most requests the plan puts on it at once, and turns
spill-over on: at the planned load nothing spills, a surge beyond it goes to the
next-nearest cluster. ``write_kubernetes`` writes one StatefulSet and headless Service per
cluster (stable pod names: the gateway's pool lists every pod) and a kustomization that sets
the replica counts, optionally on top of the gateway's own base (deploy/kubernetes/base).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from expert_router.config import GatewayConfig, validate_gateway_config
from expert_router.emulator.presets import Preset
from expert_router.emulator.virtual import SimWorkload
from expert_router.errors import ConfigError
from expert_router.planner.plan import Plan
from expert_router.planner.search import Point

HEADROOM = 1.25
"""A replica counts as saturated past this many times its planned peak of requests."""
K8S_URL = "http://expert-{cluster}-{index}.expert-{cluster}:8000"
"""Each pod of the plan's StatefulSets, through its headless Service."""
CONFIG_MAP = "expert-router-config"
"""The gateway base's ConfigMap (deploy/kubernetes/base/configmap.yaml)."""
EXPERT_PORT = 8000
DEFAULT_IMAGE = "vllm/vllm-openai:latest"


def replica_url(template: str, *, cluster: int, index: int, n: int, first_port: int) -> str:
    """``template`` with ``{cluster}``, ``{index}`` (in its pool), ``{n}`` (across the fleet)
    and ``{port}`` (``first_port + n``) filled in.

    >>> replica_url("http://127.0.0.1:{port}", cluster=1, index=0, n=3, first_port=8001)
    'http://127.0.0.1:8004'
    """
    try:
        return template.format(cluster=cluster, index=index, n=n, port=first_port + n)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"--replica-url {template!r}: use {{cluster}}, {{index}}, {{n}} or {{port}} ({exc})"
        ) from exc


def engine_slots(preset: Preset, workload: SimWorkload) -> int:
    """Requests an engine runs at once on first-turn prompts: its batch limit, or fewer when
    its KV cache holds fewer prompts plus answers."""
    per_request = workload.base_tokens + workload.jitter + workload.output_tokens
    return max(1, min(preset.max_batch, preset.kv_capacity // per_request))


def max_concurrency(peak: int, preset: Preset, workload: SimWorkload) -> int:
    """Where a replica counts as saturated: ``HEADROOM`` x its planned peak, and never below
    what its engine runs at once (below that, spilling over would gain nothing)."""
    return max(math.ceil(peak * HEADROOM), engine_slots(preset, workload))


def gateway_config(
    plan: Plan,
    point: Point,
    *,
    url: str = K8S_URL,
    first_port: int = 8001,
    model_dir: str | None = None,
) -> GatewayConfig:
    """The gateway config of ``point``'s allocation (validated as ``serve --config`` does)."""
    experts: dict[str, Any] = {}
    n = 0
    for c, ((pid, count), row) in enumerate(zip(point.alloc, point.prediction.clusters,
                                                 strict=True)):  # fmt: skip
        preset = plan.presets[pid]
        cap = max_concurrency(int(row["peak_outstanding"]), preset, plan.inputs.workload)
        replicas = []
        for i in range(count):
            replicas.append({
                "url": replica_url(url, cluster=c, index=i, n=n, first_port=first_port),
                "name": f"expert-{c}-{i}",
                "model": preset.model_name,
                "max_concurrency": cap,
            })  # fmt: skip
            n += 1
        experts[str(c)] = {"replicas": replicas}
    data = {
        "classifier": {"model": model_dir},
        "experts": experts,
        "spillover": {"policy": "saturated", "max_distance": 1},
        "access_log": True,
    }
    return validate_gateway_config(data, source="the plan's gateway config")


def config_yaml(config: GatewayConfig, header: str) -> str:
    """The YAML ``serve --config`` reads: only the fields the plan sets, under a comment."""
    keep = {"classifier", "experts", "spillover", "access_log"}
    data = config.model_dump(mode="json", include=keep, exclude_none=True)
    body = yaml.safe_dump(data, sort_keys=False, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def _labels(c: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "expert-router",
        "app.kubernetes.io/component": "expert",
        "app.kubernetes.io/instance": f"expert-{c}",
    }


def expert_objects(plan: Plan, point: Point, image: str = DEFAULT_IMAGE) -> list[dict[str, Any]]:
    """A headless Service and a StatefulSet per cluster, ``spec.replicas`` as planned."""
    objs: list[dict[str, Any]] = []
    for c, (pid, count) in enumerate(point.alloc):
        preset = plan.presets[pid]
        name, labels = f"expert-{c}", _labels(c)
        selector = {"app.kubernetes.io/instance": name}
        objs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"clusterIP": "None", "selector": selector,
                     "ports": [{"name": "http", "port": EXPERT_PORT, "targetPort": "http"}]},
        })  # fmt: skip
        gpus = str(preset.tp)
        container = {
            "name": "expert",
            "image": image,
            "args": ["--model", preset.model_name, "--served-model-name", preset.model_name,
                     "--tensor-parallel-size", str(preset.tp), "--port", str(EXPERT_PORT)],
            "ports": [{"name": "http", "containerPort": EXPERT_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                               "periodSeconds": 5},
            "resources": {"requests": {"nvidia.com/gpu": gpus},
                          "limits": {"nvidia.com/gpu": gpus}},
        }  # fmt: skip
        objs.append({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {"expert-router/preset": pid}},
            "spec": {
                "serviceName": name, "replicas": count, "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [container]}},
            },
        })  # fmt: skip
    return objs


def config_map(config_text: str) -> dict[str, Any]:
    """The gateway base's ConfigMap with the plan's gateway config."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": {"app.kubernetes.io/name": "expert-router",
                                                     "app.kubernetes.io/component": "gateway"}},
        "data": {"gateway.yaml": config_text},
    }  # fmt: skip


class _Dumper(yaml.SafeDumper):
    """Every mapping written out in full: no ``&anchor`` / ``*alias`` for shared labels."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(objs: Sequence[dict[str, Any]], header: str) -> str:
    text = "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=100) for o in objs)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def write_kubernetes(
    out: Path, plan: Plan, point: Point, gateway_text: str, *, base: Path | None = None,
    image: str = DEFAULT_IMAGE,
) -> list[Path]:  # fmt: skip
    """``out/{kustomization,experts,gateway-config}.yaml``; with ``base`` (the gateway's
    kustomization directory) the kustomization includes it and patches its ConfigMap."""
    out.mkdir(parents=True, exist_ok=True)
    experts = out / "experts.yaml"
    experts.write_text(_dump(expert_objects(plan, point, image), "The plan's experts: one "
                       "StatefulSet and headless Service per cluster.\nSet each container's "
                       "image and --model to your checkpoint."), encoding="utf-8")  # fmt: skip
    gateway = out / "gateway-config.yaml"
    gateway.write_text(_dump([config_map(gateway_text)], "The gateway's config for this plan "
                       "(replaces the base's ConfigMap)."), encoding="utf-8")  # fmt: skip
    resources = ["experts.yaml"]
    kust: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                            "kind": "Kustomization"}  # fmt: skip
    if base is not None:
        if not (base / "kustomization.yaml").is_file():
            raise ConfigError(f"--k8s-base {base}: no kustomization.yaml there")
        resources.insert(0, Path(os.path.relpath(base.resolve(), out.resolve())).as_posix())
        kust["patches"] = [{"path": gateway.name}]
    else:
        resources.append(gateway.name)
    kust["resources"] = resources
    kust["replicas"] = [{"name": f"expert-{c}", "count": n} for c, (_, n) in enumerate(point.alloc)]
    kpath = out / "kustomization.yaml"
    kpath.write_text(_dump([kust], "kubectl apply -k this directory (docs/planning.md)."),
                     encoding="utf-8")  # fmt: skip
    return [kpath, experts, gateway]
