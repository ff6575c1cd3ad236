"""cloudpickle's search for the submodules a pickled function uses, made cheap for relive.

cloudpickle stores with each function stored by value the imported submodules of the
packages it reads (``np.linalg`` for a function that reads ``np``), so that loading imports
them: for each package among the function's globals it goes through every name in
``sys.modules``, in Python (``_find_imported_submodules``). With PyTorch imported that is
2,500 names per package, and every snapshot pickles the script's functions again: 4 ms of
each pause of PyTorch's MNIST example (of 18), 12 ms of a forked child's work.

Here the names are indexed once by each package they lie under, and the index is kept
while ``sys.modules`` holds the same names in the same order (a C-level comparison of the
list of names). The answer is the same list, in the same order, as cloudpickle's own. It is
used only while relive pickles (``searching``): the program's own use of cloudpickle runs
cloudpickle's code untouched.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle


class _Pickling(threading.local):
    on = False


_pickling = _Pickling()
# The names of every imported module under each package prefix it has ("a." and "a.b." for
# "a.b.c"), by the first name after that prefix, each with its place in sys.modules and the
# names after the prefix; kept with the list of sys.modules' names it was made from.
_Under = dict[str, dict[str, list[tuple[int, str, frozenset[str]]]]]
_index: tuple[list[Any], _Under] = ([], {})


def _modules_under() -> _Under:
    """The index of ``sys.modules``' names, made again where they changed."""
    global _index
    names = list(sys.modules)
    if names != _index[0]:
        index: _Under = {}
        for place, name in enumerate(names):
            if not isinstance(name, str):
                continue  # cloudpickle skips None (old pytest); no other key starts with a prefix
            at = name.find(".")
            while at != -1:
                rest = name[at + 1:].split(".")
                index.setdefault(name[:at + 1], {}).setdefault(rest[0], []).append(
                    (place, name, frozenset(rest)))
                at = name.find(".", at + 1)
        _index = (names, index)
    return _index[1]


def find(code: types.CodeType, top_level_dependencies: Iterable[Any]) -> list[types.ModuleType]:
    """``_find_imported_submodules``' answer (the submodules of the given packages whose
    every name after the package's is one the code reads), from the index."""
    found: list[types.ModuleType] = []
    under: _Under | None = None
    co_names = set(code.co_names)
    for x in top_level_dependencies:
        if isinstance(x, types.ModuleType) and hasattr(x, "__package__") and x.__package__:
            under = _modules_under() if under is None else under
            by_first = under.get(x.__name__ + ".", {})
            used = sorted((place, name) for first in co_names
                          for place, name, rest in by_first.get(first, ()) if rest <= co_names)
            found += [sys.modules[name] for _, name in used]  # cloudpickle's order
    return found


def _patched(original: Callable[..., Any]) -> Callable[..., Any]:
    def find_imported_submodules(code: Any, top_level_dependencies: Any) -> Any:
        if _pickling.on:
            return find(code, top_level_dependencies)
        return original(code, top_level_dependencies)
    find_imported_submodules.__wrapped__ = original  # type: ignore[attr-defined]
    return find_imported_submodules


def _install() -> None:
    """Routes cloudpickle's search through ``find`` while relive pickles; nothing where this
    cloudpickle has no such function (relive's pickling is then cloudpickle's own)."""
    internals = getattr(cloudpickle, "cloudpickle", None)
    original = getattr(internals, "_find_imported_submodules", None)
    if original is not None and getattr(original, "__wrapped__", None) is None:
        internals._find_imported_submodules = _patched(original)  # type: ignore[union-attr]


_install()


@contextmanager
def searching() -> Iterator[None]:
    """While relive pickles in this thread: the indexed search."""
    was, _pickling.on = _pickling.on, True
    try:
        yield
    finally:
        _pickling.on = was
