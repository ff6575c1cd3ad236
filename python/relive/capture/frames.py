"""The program's stack and its variables: which frames are the program's, which names are roots."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from relive.state.records import Root, is_excluded
from relive.interp.frame_state import origin_of

RELIVE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclass
class FrameView:
    """One frame of the program as a snapshot sees it: where it stands and what it holds."""

    frame: types.FrameType
    lineno: int
    lasti: int

    @property
    def code(self) -> types.CodeType:
        """The program's code: for a frame of a resumed program, the code it was resumed from
        (resume code holds one-shot values that neither marshal nor mean anything later)."""
        origin = origin_of(self.frame.f_code)
        return self.frame.f_code if origin is None else origin.code

    @property
    def has_own_locals(self) -> bool:
        # A module body (and an exec'd string) runs in its globals: nothing more to store.
        return self.frame.f_locals is not self.frame.f_globals


def is_relive_code(code: types.CodeType) -> bool:
    return code.co_filename.startswith(RELIVE_DIR)


def live_stack(frame: types.FrameType | None, boundary: types.CodeType | None) -> list[FrameView]:
    """The program's frames from ``frame`` outwards, outermost first.

    The walk stops at ``boundary`` (the runner's frame that runs the program) and leaves
    out relive's own frames.
    """
    frames: list[FrameView] = []
    while frame is not None and frame.f_code is not boundary:
        if not is_relive_code(frame.f_code):
            frames.append(FrameView(frame, frame.f_lineno, _lasti(frame)))
        frame = frame.f_back
    frames.reverse()
    return frames


def _lasti(frame: types.FrameType) -> int:
    origin = origin_of(frame.f_code)
    return frame.f_lasti if origin is None else origin.offsets.get(frame.f_lasti, frame.f_lasti)


def traceback_stack(tb: types.TracebackType | None) -> list[FrameView]:
    """The frames an exception passed through, outermost first: the state at the raise."""
    frames = []
    while tb is not None:
        if not is_relive_code(tb.tb_frame.f_code):
            frames.append(FrameView(tb.tb_frame, tb.tb_lineno, tb.tb_lasti))
        tb = tb.tb_next
    return frames


def _is_program_value(value: Any) -> bool:
    if isinstance(value, types.ModuleType):
        return False
    module = getattr(type(value), "__module__", None) or ""
    return not (module == "relive" or module.startswith("relive."))


def _names(items: Iterable[tuple[str, Any]], exclude: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    for name, value in items:
        if name.startswith("__") and name.endswith("__"):
            continue
        if is_excluded(name, exclude) or not _is_program_value(value):
            continue
        yield name, value


def global_roots(main_dict: dict[str, Any], exclude: tuple[str, ...]) -> list[Root]:
    return [Root(f"g:{name}", "globals", name, value) for name, value in _names(list(main_dict.items()), exclude)]


def local_roots(index: int, view: FrameView, exclude: tuple[str, ...]) -> list[Root]:
    if not view.has_own_locals:
        return []
    scope = f"frame {index} ({view.code.co_qualname})"
    items = list(view.frame.f_locals.items())
    return [Root(f"f{index}:{name}", scope, name, value) for name, value in _names(items, exclude)]


def modules_of(main_dict: dict[str, Any]) -> dict[str, str]:
    """Names bound to modules (``np`` -> ``numpy``): stored by name, imported again on load."""
    return {name: value.__name__ for name, value in list(main_dict.items())
            if isinstance(value, types.ModuleType) and not name.startswith("__")}


def main_thread_frame(main_ident: int) -> types.FrameType | None:
    return sys._current_frames().get(main_ident)
