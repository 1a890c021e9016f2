"""The Kubernetes manifests under deploy/: every object is schema-valid (offline, strict), every
kustomization renders to valid objects, and the pieces agree with each other and with the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    DEPLOY,
    K8S,
    K8S_VERSIONS,
    KUSTOMIZATION,
    Obj,
    find,
    gateway_container,
    kustomization_dirs,
    kustomize_inputs,
    load_docs,
    render,
    validate,
)

from expert_router.classify import default_model_dir, load
from expert_router.cli.main import build_parser
from expert_router.config import GatewayConfig, validate_gateway_config
from expert_router.errors import ConfigError

MANIFESTS = sorted(
    p for ext in ("yaml", "yml") for p in DEPLOY.rglob(f"*.{ext}") if p.name != KUSTOMIZATION
)
KDIRS = kustomization_dirs()
BASE = K8S / "base"
CONFIG_PATH = "/etc/expert-router/gateway.yaml"


def _rel(p: Path) -> str:
    return str(p.relative_to(DEPLOY))


def _patch_files() -> set[Path]:
    return {p for kdir in KDIRS for p in kustomize_inputs(kdir)[1]}


def test_the_layout_is_what_the_docs_describe() -> None:
    assert BASE in KDIRS and K8S / "overlays" / "with-model" in KDIRS
    kinds = {o["kind"] for o in render(BASE)}
    expected = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert kinds == expected | {"PodDisruptionBudget"}


def test_every_manifest_is_used_by_a_kustomization() -> None:
    used: set[Path] = set()
    for kdir in KDIRS:
        resources, patches = kustomize_inputs(kdir)
        used |= set(resources) | set(patches)
    missing = [p for p in used if not p.is_file()]
    assert not missing, f"kustomizations name missing files: {missing}"
    orphans = [_rel(p) for p in MANIFESTS if p.resolve() not in used]
    assert not orphans, f"manifests no kustomization uses: {orphans}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "path", [p for p in MANIFESTS if p.resolve() not in _patch_files()], ids=_rel
)
def test_manifest_is_schema_valid(path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kdir", KDIRS, ids=_rel)
def test_rendered_kustomization_is_schema_valid(kdir: Path, version: str) -> None:
    for obj in render(kdir):
        validate(obj, version)


BROKEN = {
    "misspelled field": ("spec.template.spec.containers.0", "readinesProbe", {"tcpSocket": {}}),
    "wrong type": ("spec", "replicas", "two"),
    "missing required": ("spec", "selector", None),
    "bad enum-like port": ("spec.template.spec.containers.0.ports.0", "containerPort", "http"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_fails_validation(case: str, tmp_path: Path) -> None:
    where, key, value = BROKEN[case]
    doc = load_docs(BASE / "deployment.yaml")[0]
    node: Any = doc
    for part in where.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[key]
    else:
        node[key] = value
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ValueError, match="invalid for"):
        validate(load_docs(broken)[0], K8S_VERSIONS[-1])


def test_an_unknown_kind_fails_validation() -> None:
    with pytest.raises(ValueError, match="schema"):
        validate({"apiVersion": "v1", "kind": "Deploymnet", "metadata": {"name": "x"}}, "1.30")


def test_a_patch_that_matches_nothing_fails_to_render(tmp_path: Path) -> None:
    (tmp_path / KUSTOMIZATION).write_text(
        f"resources: [{BASE}]\npatches: [{{path: p.yaml}}]\n", encoding="utf-8"
    )
    (tmp_path / "p.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="matches 0 objects"):
        render(tmp_path)


@pytest.mark.parametrize("kdir", KDIRS, ids=_rel)
def test_objects_refer_to_each_other_consistently(kdir: Path) -> None:
    objs = render(kdir)
    dep, svc = find(objs, "Deployment"), find(objs, "Service")
    hpa, pdb, cm = (
        find(objs, "HorizontalPodAutoscaler"),
        find(objs, "PodDisruptionBudget"),
        find(objs, "ConfigMap"),
    )
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert (
        hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )

    gw = gateway_container(dep)
    ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    assert gw["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gw["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert gw[probe]["httpGet"]["port"] in ports
    # The pod is given its preStop pause plus the gateway's drain (its config's drain_timeout)
    # and a few seconds to end what is left, before Kubernetes kills it.
    pre_stop = gw["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = _gateway_config(kdir).server.drain_timeout
    assert drain >= 60 and grace >= int(pre_stop[1]) + drain + 5
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"

    # The config file the gateway is told to read is the ConfigMap key, mounted read-only.
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in gw["volumeMounts"]}
    config_dir, _, key = CONFIG_PATH.rpartition("/")
    mount = mounts[config_dir]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert key in cm["data"]
    for c in dep["spec"]["template"]["spec"].get("initContainers", []) + [gw]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']} mounts unknown volume {m['name']}"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def _quantity(q: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    s = str(q)
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


@pytest.mark.parametrize("kdir", KDIRS, ids=_rel)
def test_every_container_requests_no_more_than_its_limits(kdir: Path) -> None:
    spec = find(render(kdir), "Deployment")["spec"]["template"]["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        res = c["resources"]
        assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}, c["name"]
        for name, req in res["requests"].items():
            assert _quantity(req) <= _quantity(res["limits"][name]), (c["name"], name)


def _serve_args(dep: Obj) -> list[str]:
    gw = gateway_container(dep)
    assert "command" not in gw, "the image's ENTRYPOINT (expert-router) must stay in charge"
    return [str(a) for a in gw["args"]]


def test_the_deployment_args_are_a_valid_serve_command() -> None:
    dep = find(render(BASE), "Deployment")
    args = build_parser().parse_args(_serve_args(dep))
    assert args.command == "serve"
    assert args.config is not None and str(args.config) == CONFIG_PATH
    assert args.port == gateway_container(dep)["ports"][0]["containerPort"]
    assert args.host == "0.0.0.0"
    assert args.workers >= 1
    # Limits must leave each worker process at least half a core.
    cpu = _quantity(gateway_container(dep)["resources"]["limits"]["cpu"])
    assert cpu >= 0.5 * args.workers


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("kdir", KDIRS, ids=_rel)
def test_kubectl_kustomize_agrees_with_the_offline_render(kdir: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(kdir)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    real = [d for d in yaml.safe_load_all(out) if d]
    for obj in real:
        validate(obj, K8S_VERSIONS[-1])

    def key(o: Obj) -> tuple[str, str]:
        return (o["kind"], o["metadata"]["name"])

    ours = {key(o): o for o in render(kdir)}
    assert {key(o) for o in real} == set(ours)
    for obj in real:
        assert _canonical(obj) == _canonical(ours[key(obj)]), key(obj)


def _canonical(obj: object) -> object:
    """Order-free form: kustomize reorders merged lists of named objects."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [_canonical(v) for v in obj]
        if all(isinstance(i, dict) and "name" in i for i in obj):
            return sorted(items, key=lambda i: str(i["name"]))  # type: ignore[index]
        return items
    return obj


def _gateway_config(kdir: Path) -> GatewayConfig:
    cm = find(render(kdir), "ConfigMap")
    return validate_gateway_config(yaml.safe_load(cm["data"]["gateway.yaml"]), source=str(kdir))


@pytest.mark.parametrize("kdir", KDIRS, ids=_rel)
def test_the_shipped_gateway_config_is_valid_and_covers_every_cluster(kdir: Path) -> None:
    config = _gateway_config(kdir)
    clusters = {str(k) for k in range(load().n_clusters)}
    assert clusters <= set(config.experts) or "*" in config.experts
    for pool in config.experts.values():
        for replica in pool.replicas:
            assert replica.protocol == "http" and replica.max_concurrency


def test_the_base_uses_the_bundled_model_and_the_overlay_only_adds_model() -> None:
    assert _gateway_config(BASE).classifier.model is None
    overlay_dir = K8S / "overlays" / "with-model"
    assert find(render(overlay_dir), "ConfigMap") == find(render(BASE), "ConfigMap")
    dep = find(render(overlay_dir), "Deployment")
    args = _serve_args(dep)
    base_args = _serve_args(find(render(BASE), "Deployment"))
    assert args[: len(base_args)] == base_args and args[len(base_args) :][0] == "--model"
    model = build_parser().parse_args(args).model
    # --model names the read-only mount the initContainer filled from the model image.
    mounts = {m["mountPath"]: m for m in gateway_container(dep)["volumeMounts"]}
    assert mounts[model]["readOnly"] is True
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["volumeMounts"] == [{"name": mounts[model]["name"], "mountPath": model}]
    assert init["command"][-1].endswith(f" {model}/")


def test_a_bad_gateway_config_in_the_configmap_is_caught() -> None:
    cm = find(render(BASE), "ConfigMap")
    data = yaml.safe_load(cm["data"]["gateway.yaml"])
    data["experts"]["0"]["replicas"][0]["max_concurency"] = 8
    with pytest.raises(ConfigError, match=r"experts\.0\.replicas\[0\]\.max_concurency"):
        validate_gateway_config(data)


def test_the_model_is_too_big_for_a_configmap() -> None:
    """Why the overlay ships the model in an image: a ConfigMap holds at most 1 MiB."""
    size = sum(p.stat().st_size for p in default_model_dir().iterdir())
    assert size > 2**20
