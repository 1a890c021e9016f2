"""The files a plan writes: ``gateway.yaml``, ``plan.json``, ``kubernetes/`` and the report.

``write_outputs`` writes them all under one directory and returns their paths; the gateway
config is validated on the way (the same loader as ``serve --config``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from expert_router.planner.deploy import (
    DEFAULT_IMAGE,
    K8S_URL,
    config_yaml,
    gateway_config,
    write_kubernetes,
)
from expert_router.planner.document import plan_document
from expert_router.planner.plan import Plan
from expert_router.planner.report import write_report

GATEWAY_FILE = "gateway.yaml"
PLAN_FILE = "plan.json"
K8S_DIR = "kubernetes"


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_outputs(
    out: Path,
    plan: Plan,
    *,
    replica_url: str | None = None,
    first_port: int = 8001,
    model_dir: str | None = None,
    k8s_base: Path | None = None,
    k8s_image: str | None = None,
) -> list[Path]:
    """Every file of ``plan`` under ``out``; ``replica_url`` defaults to the Kubernetes pods."""
    out.mkdir(parents=True, exist_ok=True)
    best = plan.best
    header = (
        f"expert-router plan: {best.gpus} GPUs, {plan.inputs.workload.users} users, "
        f"mix {plan.inputs.mix}\nserve it: expert-router serve --config gateway.yaml"
    )
    text = config_yaml(
        gateway_config(
            plan, best, url=replica_url or K8S_URL, first_port=first_port, model_dir=model_dir
        ),
        header,
    )
    gateway = out / GATEWAY_FILE
    gateway.write_text(text, encoding="utf-8")
    k8s_text = config_yaml(gateway_config(plan, best, url=K8S_URL), header)
    k8s = write_kubernetes(
        out / K8S_DIR, plan, best, k8s_text, base=k8s_base, image=k8s_image or DEFAULT_IMAGE
    )
    doc = out / PLAN_FILE
    doc.write_text(
        json.dumps(
            jsonable(plan_document(plan, gateway_file=GATEWAY_FILE)), indent=2, allow_nan=False
        )
        + "\n",
        encoding="utf-8",
    )
    report = write_report(
        out,
        plan,
        [
            (GATEWAY_FILE, "the gateway config (expert-router serve --config)"),
            (PLAN_FILE, "the plan, its predictions, the baselines and the frontier"),
            (f"{K8S_DIR}/kustomization.yaml", "the experts on Kubernetes (kubectl apply -k)"),
        ],
    )
    return [gateway, doc, k8s[0].parent, report]
