"""Tensors whose autograd graph a backward() may still run through: a point holding one
cannot resume faithfully, since snapshots store tensors, not graphs.

A graph is "pending" until a backward() frees it: PyTorch then releases the tensors its
nodes saved (reading one raises). Walking from a tensor's ``grad_fn`` to the first node
that saved a tensor tells the two apart in a few nodes. A graph whose nodes saved no tensor
(``w + 1``) cannot be told: it is taken as done (it loads without requires_grad, so a later
backward() through it raises rather than going wrong).

Only the places a training step keeps its tensors are looked at: the frames' locals, cells
and stacks, the module's globals, and one level into lists, tuples and dicts there
(``outputs.loss`` of a dict-like model output).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from typing import Any

_NODES_LIMIT = 1000  # nodes visited per graph before giving up (as "done")
_ITEMS_LIMIT = 100  # items looked at per container


def pending_graph_names(scopes: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """``"name (in scope)"`` for each variable holding a tensor of a pending graph."""
    torch = sys.modules.get("torch")
    if getattr(torch, "Tensor", None) is None:  # not imported, or halfway through its import
        return []
    found: list[str] = []
    for scope, values in scopes:
        for name, value in values.items():
            try:
                pending = any(_pending(torch, t) for t in _tensors(torch, value))
            except Exception:  # a tensor subclass that will not say: as for a graph that cannot be told
                pending = False
            if pending:
                found.append(f"`{name}` (in {scope})")
    return found


def _tensors(torch: Any, value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        items: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return []
    return [v for v in itertools.islice(items, _ITEMS_LIMIT) if isinstance(v, torch.Tensor)]


def _pending(torch: Any, tensor: Any) -> bool:
    if tensor.grad_fn is None:
        return False
    seen: set[int] = set()
    todo = [tensor.grad_fn]
    while todo and len(seen) < _NODES_LIMIT:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                saved = getattr(node, name)
            except RuntimeError:  # freed by a backward() already
                return False
            if isinstance(saved, torch.Tensor):
                return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def pending_graph_problem(point: Any, namespace: dict[str, Any]) -> str | None:
    """Why ``point`` (a ``ResumeState``) cannot resume because of pending graphs, or None."""
    if "torch" not in sys.modules:
        return None
    scopes: list[tuple[str, dict[str, Any]]] = []
    for frame in point.frames:
        values = dict(frame.locals)
        for name, cell in {**frame.cells, **frame.free}.items():
            try:
                values[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
        values.update((f"<stack {n}>", v) for n, v in enumerate(frame.stack))
        scopes.append((f"{frame.name}()" if frame.code.co_name != "<module>" else "the module", values))
    scopes.append(("the module", namespace))  # a module frame's variables are its globals
    names = pending_graph_names(scopes)
    if not names:
        return None
    return (f"{', '.join(names[:3])} {'is' if len(names) == 1 else 'are'} part of an autograd graph "
            "that backward() has not run through yet, and snapshots do not store graphs")
