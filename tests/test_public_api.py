"""relive's public API, as httpx tests its own: what ``relive`` and ``relive.errors`` export
is exactly what they list, every exported name is documented, every exception relive raises
is a ReliveError, and ``import relive`` stays light."""

from __future__ import annotations

import __future__

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import relive
import relive.errors

# The documented API (README.md): a change here is a change of relive's promise to its users.
DOCUMENTED = ["ReliveError", "Frame", "Snapshot", "checkpoint", "load", "trace", "__version__"]
# The names IPython looks up for `%load_ext relive`: its protocol, not relive's API.
IPYTHON_HOOKS = {"load_ipython_extension", "unload_ipython_extension"}


def _public(module: types.ModuleType) -> list[str]:
    """The module's public names: not private, not submodules, not ``from __future__`` imports
    (``dir``: relive imports some names when first asked for)."""
    return [name for name in dir(module)
            if not name.startswith("_") and name not in IPYTHON_HOOKS
            and not isinstance(getattr(module, name), (types.ModuleType, __future__._Feature))]


def test_all_is_exactly_the_documented_api() -> None:
    assert relive.__all__ == DOCUMENTED


@pytest.mark.parametrize("module", [relive, relive.errors], ids=lambda m: m.__name__)
def test_every_public_name_is_in_all(module: types.ModuleType) -> None:
    assert sorted(_public(module)) == sorted(n for n in module.__all__ if not n.startswith("_"))


@pytest.mark.parametrize("module", [relive, relive.errors], ids=lambda m: m.__name__)
def test_every_name_in_all_imports_and_is_documented(module: types.ModuleType) -> None:
    for name in module.__all__:
        namespace: dict[str, Any] = {}
        exec(f"from {module.__name__} import {name}", namespace)
        value = namespace[name]
        if name == "__version__":
            assert isinstance(value, str) and value
        else:
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_relive_errors_are_one_hierarchy() -> None:
    for name in relive.errors.__all__:
        assert issubclass(getattr(relive.errors, name), relive.ReliveError), name


# Exceptions that must not be ReliveErrors (see the comment in each class).
_ON_PURPOSE = {
    "relive.capture.time_limit.SnapshotTimedOut",  # raised asynchronously into any code: a BaseException
    "relive.script_errors._Compiled",  # a private signal from an audit hook, never leaves its module
    "relive.state.pickler.ProgramHook",  # must pass the record writer's `except Exception`; caught by capture
    "relive.capture.copying.TooMuchToCopy",  # the same, for a copy that would copy too much: it forks
}


def _relive_modules() -> list[types.ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(relive.__path__, "relive.")
             if info.name != "relive.__main__"]  # importing it runs the command line
    return [importlib.import_module(name) for name in names]


def test_every_exception_relive_defines_is_a_relive_error() -> None:
    others = set()
    for module in _relive_modules():
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) \
                    and value.__module__ == module.__name__ and not issubclass(value, relive.ReliveError):
                others.add(f"{module.__name__}.{value.__qualname__}")
    assert others == _ON_PURPOSE


def test_import_relive_stays_light() -> None:
    """``import relive`` (in every program that calls relive.load or checkpoint) imports none of
    the heavy or optional libraries, and none of relive's capture or command-line machinery."""
    code = "import json, sys; import relive; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported = set(json.loads(out))
    for name in ("torch", "numpy", "rich", "click", "bytecode", "IPython",
                 "relive.capture", "relive.cli", "relive.runner"):
        assert name not in imported, f"`import relive` imports {name}"


def test_the_native_stub_names_what_the_native_module_exports() -> None:
    """_native.pyi is written by hand: its ``__all__`` must follow lib.rs's registrations."""
    from relive import _native

    stub = ast.parse((Path(relive.__file__).parent / "_native.pyi").read_text())
    declared = next(ast.literal_eval(node.value) for node in stub.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    assert sorted(declared) == sorted(_native.__all__)
