"""Structural checks run by ``make check``: the gateway package has no import cycle, and it
knows backends only through their contract (``expert_router.backends``: the ``Backend``
protocol and the registry), never a concrete adapter or a branch on an adapter's type.

    python scripts/check_structure.py        # prints each violation; exit status 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "expert_router.gateway"
CONTRACT = "expert_router.backends"  # the package itself: its __init__ re-exports the contract


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module, here: str) -> list[tuple[str, int]]:
    """Modules imported when the module is imported (module level, outside
    ``if TYPE_CHECKING:``), with their line numbers."""
    out: list[tuple[str, int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.extend((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(here.split(".")[: -node.level] + ([base] if base else []))
                out.append((base, node.lineno))
                out.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return out


def all_imports(tree: ast.Module) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node.lineno))
    return out


def backend_type_branches(tree: ast.Module) -> list[int]:
    """Lines that test an object against a backend adapter's type."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("isinstance", "type"):
            subject = ast.unparse(node.args[0]) if node.args else ""
            kinds = [ast.unparse(a) for a in node.args[1:]]
            if "backend" in subject.lower() or any(k.endswith("Backend") for k in kinds):
                lines.append(node.lineno)
    return lines


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def main() -> int:
    problems: list[str] = []
    files = sorted((SRC / PACKAGE.replace(".", "/")).glob("*.py"))
    modules = {module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(SRC.parent)
        graph[name] = {m for m, _ in runtime_imports(tree, name) if m in modules and m != name}
        for imported, line in all_imports(tree):
            if imported.startswith(CONTRACT + "."):
                problems.append(
                    f"{rel}:{line}: imports the adapter module {imported}; the gateway knows "
                    f"backends through {CONTRACT} only"
                )
        for line in backend_type_branches(tree):
            problems.append(f"{rel}:{line}: branches on a backend's type")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle in the gateway package: " + " -> ".join(cycle))
    for p in problems:
        print(p)
    if not problems:
        print(f"structure ok: {len(modules)} gateway modules, no import cycle, no backend types")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
