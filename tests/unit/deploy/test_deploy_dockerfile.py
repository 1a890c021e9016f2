"""The Dockerfile (which cannot be built here) agrees with the CLI, the packaging and the
Kubernetes Deployment: entry point, command line, port, non-root user, build context."""

from __future__ import annotations

import fnmatch
import tomllib

from deploy_helpers import (
    DEPLOY,
    REPO,
    dockerfile_instructions,
    exec_form,
    find,
    gateway_container,
    load_docs,
    render,
)

from expert_router.cli.main import build_parser

DOCKERFILE = REPO / "Dockerfile"
INSTRUCTIONS = dockerfile_instructions(DOCKERFILE)


def _one(word: str) -> str:
    hits = [args for w, args in INSTRUCTIONS if w == word]
    assert len(hits) == 1, f"expected one {word}, found {len(hits)}"
    return hits[0]


def _deployment() -> dict[str, object]:
    return find(render(DEPLOY / "kubernetes" / "base"), "Deployment")


def test_base_image_and_user() -> None:
    assert INSTRUCTIONS[0] == ("FROM", "python:3.11-slim")
    user = _one("USER").split(":")[0]
    assert user not in {"root", "0"}
    # The pod's runAsUser is the image's user, so both agree on file ownership.
    pod = _deployment()["spec"]["template"]["spec"]  # type: ignore[index]
    assert str(pod["securityContext"]["runAsUser"]) == user


def test_entrypoint_is_the_console_script() -> None:
    entry = exec_form(_one("ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["expert-router"] and entry[0] in scripts


def test_cmd_is_a_valid_serve_command_matching_expose_and_the_deployment() -> None:
    cmd = exec_form(_one("CMD"))
    args = build_parser().parse_args(cmd)
    assert args.command == "serve"
    assert str(args.config) == "/etc/expert-router/gateway.yaml"
    assert args.host == "0.0.0.0"
    exposed = [int(p.split("/")[0]) for p in _one("EXPOSE").split()]
    assert exposed == [args.port]
    gw = gateway_container(_deployment())
    assert [p["containerPort"] for p in gw["ports"]] == exposed
    # The Deployment overrides CMD only: same subcommand, same config file, same port.
    dep_args = build_parser().parse_args([str(a) for a in gw["args"]])
    assert (dep_args.command, dep_args.config, dep_args.port) == ("serve", args.config, args.port)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pat[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pat) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_pip_install_needs_and_nothing_else() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    copied = [s for w, args in INSTRUCTIONS if w == "COPY" for s in args.split()[:-1]]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "pyproject.toml" in copied and project["readme"] in copied and "src" in copied
    assert "setup.py" in copied  # the C extension's build (classify/_native.c)
    for src in copied:
        assert not _ignored(src, patterns), f"{src} is COPY'd but .dockerignore drops it"
    kept = [
        p for p in (REPO / "src").rglob("*.py") if not _ignored(str(p.relative_to(REPO)), patterns)
    ]
    assert (REPO / "src" / "expert_router" / "cli" / "main.py") in kept
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/unit", "src/x/__pycache__/m.pyc",
                  "src/x/_native.cpython-311-x86_64-linux-gnu.so"):  # fmt: skip
        assert _ignored(heavy, patterns), heavy


def test_the_model_image_is_data_only() -> None:
    words = dockerfile_instructions(DEPLOY / "model-image" / "Dockerfile")
    assert [w for w, _ in words] == ["FROM", "COPY"]
    patch = load_docs(DEPLOY / "kubernetes" / "overlays" / "with-model" / "deployment-patch.yaml")
    init = patch[0]["spec"]["template"]["spec"]["initContainers"][0]
    source = words[1][1].split()[-1].rstrip("/")
    assert f"{source}/." in " ".join(init["command"])
