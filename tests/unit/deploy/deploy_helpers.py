"""Offline helpers for the deployment tests: load the manifests under deploy/, render a
kustomization (resources, strategic-merge patches by name, image tags, replica counts) without
kubectl, validate objects against the Kubernetes JSON schemas bundled by
`kubernetes-validate`, read Dockerfiles, and pull metric and label names out of the Grafana
dashboard's PromQL.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml
from kubernetes_validate import utils as kv

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
# The oldest and the newest Kubernetes minor versions the manifests must be valid for.
K8S_VERSIONS = ("1.29", kv.latest_version())
KUSTOMIZATION = "kustomization.yaml"
DASHBOARD = DEPLOY / "grafana" / "expert-router.json"
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"instance", "job", "pod", "namespace"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset", "inf", "nan"}
IDENT = re.compile(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")

Obj = dict[str, Any]


def load_docs(path: Path) -> list[Obj]:
    """Every non-empty YAML document in ``path``."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a document is not a mapping")
    return docs


def validate(obj: Obj, version: str) -> None:
    """Raise ``ValueError`` unless ``obj`` is valid for Kubernetes ``version`` (strict: unknown
    fields are errors, so a misspelled key fails too)."""
    kn = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise ValueError(
            f"{kn} invalid for {version} at {where or '<root>'}: {exc.message}"
        ) from exc
    except kv.SchemaNotFoundError as exc:
        raise ValueError(f"{kn}: {exc.message}") from exc


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob(KUSTOMIZATION))


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as Kubernetes applies it to the fields we patch: maps merge by key,
    lists of named objects merge by ``name`` (patch items first, like kustomize), other lists
    and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    named = isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch)
    if named and isinstance(base, list) and all(isinstance(i, dict) and "name" in i for i in base):
        by_name = {i["name"]: i for i in base}
        merged = [_merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        patched = {i["name"] for i in patch}
        return copy.deepcopy(merged) + [copy.deepcopy(i) for i in base if i["name"] not in patched]
    return copy.deepcopy(patch)


def _images(obj: Any, images: list[Obj]) -> None:
    if isinstance(obj, dict):
        image = obj.get("image")
        if isinstance(image, str):
            name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
            for rule in images:
                if rule["name"] == name:
                    tag = rule.get("newTag", image.rsplit(":", 1)[-1])
                    obj["image"] = f"{rule.get('newName', name)}:{tag}"
        for value in obj.values():
            _images(value, images)
    elif isinstance(obj, list):
        for value in obj:
            _images(value, images)


def kustomize_inputs(kdir: Path) -> tuple[list[Path], list[Path]]:
    """The resource files (recursively through bases) and patch files that ``kdir`` uses."""
    spec = load_docs(kdir / KUSTOMIZATION)[0]
    resources: list[Path] = []
    for entry in spec.get("resources", []):
        target = (kdir / entry).resolve()
        if target.is_dir():
            sub_resources, sub_patches = kustomize_inputs(target)
            resources += sub_resources
        else:
            resources.append(target)
    patches = [(kdir / p["path"]).resolve() for p in spec.get("patches", [])]
    return resources, patches


def render(kdir: Path) -> list[Obj]:
    """What ``kubectl kustomize kdir`` produces for the features our kustomizations use."""
    spec = load_docs(kdir / KUSTOMIZATION)[0]
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches", "images", "replicas"}
    if unknown:
        raise ValueError(f"{kdir}: render() does not support {sorted(unknown)}")
    objs: list[Obj] = []
    for entry in spec.get("resources", []):
        target = (kdir / entry).resolve()
        objs += render(target) if target.is_dir() else load_docs(target)
    for p in spec.get("patches", []):
        for patch in load_docs(kdir / p["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, o in enumerate(objs) if (o["kind"], o["metadata"]["name"]) == key]
            if len(hits) != 1:
                raise ValueError(f"{kdir}: patch {p['path']} matches {len(hits)} objects")
            objs[hits[0]] = _merge(objs[hits[0]], patch)
    for rule in spec.get("replicas", []):  # kustomize sets spec.replicas of objects by name
        named = [o for o in objs if o["metadata"]["name"] == rule["name"] and "replicas" in
                 o.get("spec", {})]  # fmt: skip
        if not named:
            raise ValueError(f"{kdir}: replicas for {rule['name']} match no object")
        for o in named:
            o["spec"]["replicas"] = rule["count"]
    for obj in objs:
        _images(obj, spec.get("images", []))
    return objs


def find(objs: list[Obj], kind: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind]
    assert len(hits) == 1, f"expected one {kind}, found {len(hits)}"
    return hits[0]


def gateway_container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "gateway")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    """The argv of a JSON exec-form ENTRYPOINT/CMD (shell form is refused: signals)."""
    parsed = yaml.safe_load(args)
    if not (isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)):
        raise ValueError(f"not exec form: {args}")
    return parsed


def parse(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, matcher labels, grouping labels) used in one PromQL expression."""
    selectors = SELECTOR.findall(expr)
    matched = {label for _, body in selectors for label in MATCHER.findall(body)}
    grouped = {g.strip() for body in GROUPING.findall(expr) for g in body.split(",") if g.strip()}
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = GROUPING.sub(" ", bare)
    names = {n for n in IDENT.findall(bare) if n.lower() not in KEYWORDS}
    return names, matched, grouped


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def queries() -> list[str]:
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    return exprs
