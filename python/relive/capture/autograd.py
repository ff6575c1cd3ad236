"""Tensors whose autograd graph a backward() may still run through: a point holding one
cannot resume faithfully, since snapshots store tensors, not graphs.

Only the places a training step keeps its tensors are looked at: the frames' locals, cells
and stacks, the module's globals, and one level into lists, tuples and dicts there
(``outputs.loss`` of a dict-like model output). How a graph is told pending is PyTorch
knowledge: ``relive.state.torch.pending_graph_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relive.state import torch as torch_state


@dataclass
class PendingGraph:
    """Why a point cannot resume, and the outermost frame that holds such a tensor (its
    index in the point; 0 for the module's globals): once that frame has returned, a
    forward pass run by ``nn.Module.__call__`` for instance, the graph may be gone."""

    problem: str
    frame: int


def pending_graph(point: Any, namespace: dict[str, Any]) -> PendingGraph | None:
    """The pending graphs that ``point`` (a ``ResumeState``) holds, or None."""
    if not torch_state.in_use():
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
    names: list[str] = []
    holders: list[int] = []
    for index, scope in enumerate(scopes):
        found = torch_state.pending_graph_names([scope])
        names.extend(found)
        if found:
            holders.append(index if index < len(point.frames) else 0)
    if not holders:
        return None
    return PendingGraph(f"{', '.join(names[:3])} {'is' if len(names) == 1 else 'are'} part of an autograd graph "
                        "that backward() has not run through yet, and snapshots do not store graphs", min(holders))
