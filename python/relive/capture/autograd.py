"""Tensors whose autograd graph a backward() may still run through: a point holding one
cannot resume faithfully, since snapshots store tensors, not graphs.

Only the places a training step keeps its tensors are looked at: the frames' locals, cells
and stacks, the module's globals, and one level into lists, tuples and dicts there
(``outputs.loss`` of a dict-like model output). How a graph is told pending is PyTorch
knowledge: ``relive.state.torch.pending_graph_names``.
"""

from __future__ import annotations

from typing import Any

from relive.state import torch as torch_state


def pending_graph_problem(point: Any, namespace: dict[str, Any]) -> str | None:
    """Why ``point`` (a ``ResumeState``) cannot resume because of pending graphs, or None."""
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
    names = torch_state.pending_graph_names(scopes)
    if not names:
        return None
    return (f"{', '.join(names[:3])} {'is' if len(names) == 1 else 'are'} part of an autograd graph "
            "that backward() has not run through yet, and snapshots do not store graphs")
