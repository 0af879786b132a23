"""The house stays easy to read: no import cycles between pgpulse's modules,
no module past ~400 lines, the folders named in docs/architecture.md exist."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "pgpulse"
MAX_LINES = 450  # "~400": a little slack, never two jobs


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """pgpulse modules imported at module level (not inside functions or
    ``if TYPE_CHECKING``): those are the ones that can form a cycle.
    ``from package import module`` is an edge to the module."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("pgpulse"):
                names = [f"{node.module}.{a.name}" for a in node.names]
                submodules = [n for n in names if n in modules]
                found.update(submodules)
                if len(submodules) < len(names):
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pgpulse"))
    return found


def test_no_import_cycles():
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {
        name: {m for m in _imports(path, set(modules)) if m in modules and m != name}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], seen: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*stack, nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles[:5])


def test_no_module_grows_past_about_four_hundred_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these (one concern each): {long}"


def test_the_flow_is_visible_in_the_folders():
    for folder in ("capture", "log", "routing", "server", "auth", "query", "clients"):
        assert (SRC / folder / "__init__.py").exists(), folder
    architecture = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for path in SRC.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py") or path.parent.name in (
            "cli",
            "demo",
        ):
            continue
        relative = path.relative_to(SRC)
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        named = str(relative) in architecture or (
            folder and f"`{folder}/`" in architecture
        )
        assert named, f"docs/architecture.md's module table does not name {relative}"
