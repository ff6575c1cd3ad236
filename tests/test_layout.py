"""The package's layout rules, read from its imports with ``ast`` (nothing is imported).

- ``relive.interp`` (what depends on CPython's version) imports neither ``relive.capture``
  nor ``relive.restore``: both build on it;
- ``relive.restore`` (reading snapshots back) does not import ``relive.capture`` (writing
  them), and ``relive.capture`` does not import ``relive.restore``;
- no import cycle among relive's modules, counting imports inside functions too: a cycle
  hidden in a function is still a tangle, and breaks the day someone hoists the import.
  Imports of the package itself (``from relive import __version__``) are not counted: it
  is the public face, and modules read its version, not its code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "relive"

# (importer's package, imported package): the importer may not import it, anywhere.
FORBIDDEN = [
    ("relive.interp", "relive.capture"),
    ("relive.interp", "relive.restore"),
    ("relive.restore", "relive.capture"),
    ("relive.capture", "relive.restore"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()
# Compiled modules (``relive._native``): imported, but with no imports of their own to read.
COMPILED = {"relive." + path.name.split(".")[0] for path in PACKAGE.glob("*.so")} | {"relive._native"}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports(name: str, path: Path) -> set[str]:
    """The relive modules ``name`` imports, at module level or in a function."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from relive.x import y`: the module relive.x.y if there is one, else relive.x
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES.keys() | COMPILED else base
                       for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t not in (name, "relive"))
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("importer, imported", FORBIDDEN)
def test_forbidden_imports(importer: str, imported: str) -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() if _within(name, importer)
                   for target in targets if _within(target, imported))
    assert not wrong, f"{importer} must not import {imported}: " + "; ".join(wrong)


def _cycle() -> list[str] | None:
    # Depth-first search; a module's package __init__ is not an edge of its own (Python
    # imports the package first, but that is not the module depending on it).
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_rules_see_imports() -> None:
    """The walk finds imports at all (an empty graph would pass every rule)."""
    assert "relive.store" in GRAPH["relive.runner"] or "relive.store" in GRAPH["relive.cli"]
    assert any(GRAPH[name] for name in GRAPH if _within(name, "relive.capture"))
