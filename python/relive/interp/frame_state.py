"""What a resumable point of a program is made of: the shapes capture fills and resume reads.

A point where a program can resume is its stack of frames, outermost first, each a
``FrameState``; together a ``ResumeState``. Everything in them pickles with relive's pickler
once the values on the stacks do (``relive.interp.read.reduce_for_resume`` covers the
values that do not pickle by themselves: generators, exceptions; files are the pickler's).

    ResumeState
      frames: [FrameState, ...]      outermost (the module) first
      handled: exception | None      the exception being handled where the program stands
      resumable / reasons            the verdict, with reasons in words when it cannot resume
      running / shells               the generators running at the point (see below)

    FrameState
      code          the original code object (never a resume code: those translate back)
      module        __name__ of the frame's globals ("__main__" for the script)
      role          "line": the innermost frame; it goes on with the instruction at `offset`
                    "call": it waits in the call instruction at `offset` for the next frame
                    "init": as "call", where the call is of a class and the next frame is
                    the `__init__` that `type.__call__` runs (from C): the call is made again
                    of `_native.InitThen`, which runs the next frame and returns its `self`
                    "iter": it waits in the FOR_ITER or SEND at `offset` for the generator
                    the next frame runs; it goes on by doing that instruction again, on the
                    generator rebuilt (the next frame's state, role "line" or "call")
                    "return": the innermost frame waits in a call of code outside the state
                    (an explicit checkpoint); it goes on as if that call returned None
                    "yield": a suspended generator, stopped at the YIELD_VALUE at `offset`
                    "start": a generator not started yet
      offset, lineno
      locals        {name: value} of bound fast locals (not cells or free variables)
      cells         {name: cell} of the frame's own cell variables: the cell objects
                    themselves, which closures made in the frame share
      free          {name: cell} of its free variables (its function's closure)
      stack         value-stack slots below the point (in a caller, below the call's
                    operands), bottom first; an empty slot is ``relive._native.NULL``
      stack_kinds   per slot: "value", "lasti" (an instruction index of `code`), "exc" (an
                    exception in flight), "exc_prev" (what an `except` block will restore)
      handled       per "exc_prev" slot, the exception that `except` block handles
      problems      why this frame cannot resume; empty when it can

A generator running at the point (a ``for`` loop, or ``yield from``, waits in it) is a frame
of the stack like any other, and its generator object is a value too (on its caller's stack,
maybe in a variable): it is stored as a reference to its frame (``running``), and loading
builds the generator object first, around code that will take its frame's values once they
are loaded (``shells``), so that every reference to it is the one rebuilt generator.

The module also holds the map from resume code objects back to their originals, so a
resumed program can be captured again (``relive.interp.rebuild`` fills it, ``read`` and
``relive.capture.frames`` look in it). ``FrameState`` and ``GeneratorState`` are pickled
into stores (a suspended generator on a stack is stored as its ``GeneratorState``): their
module and names are part of the format; ``relive.state.pickler.RENAMED`` maps the names
older stores used.
"""

from __future__ import annotations

import inspect
import marshal
import types
from dataclasses import dataclass, field
from typing import Any

LINE = "line"
CALL = "call"
RETURN = "return"
YIELD = "yield"
START = "start"
ITER = "iter"
INIT = "init"


@dataclass
class FrameState:
    code: types.CodeType
    module: str
    role: str
    offset: int
    lineno: int
    locals: dict[str, Any] = field(default_factory=dict)
    cells: dict[str, types.CellType] = field(default_factory=dict)
    free: dict[str, types.CellType] = field(default_factory=dict)
    stack: list[Any] = field(default_factory=list)
    stack_kinds: tuple[str, ...] = ()
    handled: list[BaseException | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.code.co_qualname

    @property
    def is_running_generator(self) -> bool:
        """Whether this frame is a generator's, running at the point (on the stack, not
        suspended in a value)."""
        return bool(self.code.co_flags & inspect.CO_GENERATOR) and self.role in (LINE, CALL, RETURN, ITER)

    def __getstate__(self) -> dict[str, Any]:
        # Marshalled: pickling a code object (cloudpickle) loses its file name.
        state = dict(self.__dict__)
        state["code"] = marshal.dumps(self.code)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["code"] = marshal.loads(state["code"])
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"<FrameState {self.name} {self.role} at {self.code.co_filename}:{self.lineno} "
                f"(offset {self.offset}, {len(self.stack)} on the stack)>")


@dataclass
class ResumeState:
    frames: list[FrameState]
    handled: BaseException | None = None
    problems: list[str] = field(default_factory=list)  # of the point as a whole
    # Capturing: id(generator) -> the index of the frame it runs, for each running generator.
    running: dict[int, int] = field(default_factory=dict)
    # Resuming: frame index -> the running generator rebuilt for it while loading
    # (a ``relive.interp.rebuild.GeneratorShell``), before its frame's values were loaded.
    shells: dict[int, Any] = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return not self.reasons

    def release(self) -> None:
        """Drop the program's values once resume code holds them: nothing of relive's may keep
        them alive, or finalizers, ``weakref`` callbacks and freed memory would come late."""
        for frame in self.frames:
            frame.locals, frame.cells, frame.free, frame.stack, frame.handled = {}, {}, {}, [], []
        self.handled = None
        self.shells = {}

    @property
    def reasons(self) -> list[str]:
        out = list(self.problems)
        for frame in self.frames:
            out.extend(f"{frame.name} ({frame.code.co_filename}:{frame.lineno}): {p}" for p in frame.problems)
        return out


@dataclass
class GeneratorState:
    """A generator object, by value: its frame (role "yield" or "start"), or None once it ended."""

    frame: FrameState | None
    name: str
    qualname: str


# -- resume code objects and the code they were made from --


@dataclass
class Origin:
    """Where a resume code object came from.

    ``offsets`` maps each instruction offset of the resume code (inline caches included) to
    the offset of the same instruction in ``code``; the prologue's instructions are absent.
    ``landings`` are the offsets where a caller's prologue re-enters its call: a line event
    there is the resume itself, not a point of the program.
    """

    code: types.CodeType
    offsets: dict[int, int]
    landings: frozenset[int] = frozenset()


_origins: dict[int, tuple[types.CodeType, Origin]] = {}


def register_origin(resume_code: types.CodeType, origin: Origin) -> None:
    # Keyed by identity, holding the resume code so that its id is never reused.
    _origins[id(resume_code)] = (resume_code, origin)


def origin_of(code: types.CodeType) -> Origin | None:
    """The origin of a resume code object, or None for any other code."""
    entry = _origins.get(id(code))
    return entry[1] if entry is not None and entry[0] is code else None

