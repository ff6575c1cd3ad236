"""Resuming a program where a ``ResumeState`` says it stood, in this (new) process.

    from relive.interp.rebuild import resume
    resume(state, namespace)     # runs the rest of the program; returns when its module ends

``namespace`` is the program's restored global namespace (``__main__``'s dict); frames of
other modules run in those modules' own globals, imported by name.

Nothing native is needed. For every frame, innermost first, a *resume code object* is built:
a copy of the frame's code with a prologue right after its ``RESUME`` that

1. stores the locals back (``STORE_FAST``; a cell variable's slot receives the very cell
   object, so closures made before the snapshot still share it),
2. pushes the saved stack: values in runs handed over by a one-shot callable (a bound
   ``list.pop``, so that no constant pins them for the frame's life), ``PUSH_NULL`` for empty
   slots, and ``PUSH_EXC_INFO`` replayed for each active ``except`` block, which makes its
   exception the handled one again; instruction indexes saved by exception handlers are
   relocated into the resume code,
3. then, in a caller, pushes the next frame's resume function with dummy arguments shaped like
   the original call and jumps back to that call (so the caller's own exception handlers
   still cover it); in the innermost frame, jumps to the instruction the point stood at;
   in a suspended generator, pushes a dummy and jumps to its ``yield`` (the generator is then
   primed with one ``next()``, which stops it where it was).

The prologue has no line numbers (no line event fires before the state is back), the
exception table keeps its depths, and the stack size is explicit. Resume functions keep
their parameters (zero-argument ``super()`` reads the first), all defaulting to None, and
take ``*args, **kwargs`` besides, so any dummy call shape binds. Each resume code is registered with
its ``Origin`` (``relive.interp.frame_state``) so that the resumed program can be captured again.

Loading calls the module too, through pickle: ``rebuild_generator`` (a suspended generator,
stored as its ``GeneratorState``) and ``rebuild_exception`` are named in stored records, so
their module and names are part of the format (``relive.state.pickler.RENAMED`` maps the
names older stores used). ``relive.runner`` calls ``entry``.
"""

from __future__ import annotations

import dis
import importlib
import sys
import types
import weakref
from dataclasses import dataclass, field
from typing import Any

from bytecode import Bytecode, Instr, Label

from relive import _native
from relive.errors import ResumeError
from relive.interp import V311, V313
from relive.interp.frame_state import (
    CALL, INIT, ITER, LINE, RETURN, START, YIELD, FrameState, GeneratorState, Origin, ResumeState, register_origin,
)
from relive.interp.stack import EXC_PREV, LASTI, StackLayout

_ARGS = ".relive_args"
_KWARGS = ".relive_kwargs"
_CO_OPTIMIZED = 0x0001
_CO_VARARGS = 0x0004
_CO_VARKEYWORDS = 0x0008


def _no_line(name: str, arg: Any = None) -> Instr:
    if arg is None and dis.opmap[name] < dis.HAVE_ARGUMENT:
        return Instr(name, lineno=None)
    return Instr(name, arg, lineno=None)


@dataclass
class _Prologue:
    """The instructions of one prologue and the values its one-shot callable hands over."""

    instrs: list[Instr] = field(default_factory=list)
    runs: list[list[Any]] = field(default_factory=list)
    lasti_slots: list[tuple[int, int]] = field(default_factory=list)  # (run, index) of LASTI values
    feed: Any = None

    def __post_init__(self) -> None:
        self._queue: list[tuple[Any, ...]] = []
        self.feed = self._queue.pop

    def hand_over(self, values: list[Any]) -> None:
        """Instructions that push ``values`` (first deepest), via one call of the feeder."""
        self.runs.append(values)
        if V313:
            self.instrs += [_no_line("LOAD_CONST", self.feed), _no_line("PUSH_NULL")]
        else:
            self.instrs += [_no_line("PUSH_NULL"), _no_line("LOAD_CONST", self.feed)]
        if V311:
            self.instrs.append(_no_line("PRECALL", 0))
        self.instrs += [_no_line("CALL", 0), _no_line("UNPACK_SEQUENCE", len(values))]

    def load(self) -> None:
        """Fill the feeder: runs are popped from the end, and unpacked first item on top."""
        self._queue[:] = [tuple(reversed(run)) for run in reversed(self.runs)]


def _relocate(original: types.CodeType, resume: types.CodeType, prologue_size: int,
              resume_index: int) -> tuple[dict[int, int], dict[int, int]]:
    """Maps between offsets (inline caches included) of ``resume`` and ``original``."""
    def spans(code: types.CodeType) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        pending: int | None = None
        raw = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
        ends = [i.offset for i in raw[1:]] + [len(code.co_code)]
        for ins, end in zip(raw, ends):
            if ins.opname == "EXTENDED_ARG":
                pending = ins.offset if pending is None else pending
                continue
            start = ins.offset if pending is None else pending
            pending = None
            out.append((start, end, ins.opname))
        return out

    old = spans(original)
    new = spans(resume)
    if len(new) != len(old) + prologue_size:
        raise ResumeError(f"resume code of {original.co_qualname} does not line up with the original")
    to_original: dict[int, int] = {}
    to_resume: dict[int, int] = {}
    for k, (start, end, name) in enumerate(old):
        r = k if k <= resume_index else k + prologue_size
        r_start, r_end, r_name = new[r]
        if r_name != name:
            raise ResumeError(f"resume code of {original.co_qualname}: {r_name} where {name} was")
        # Align from the instruction's end: its caches match, extended args may differ.
        old_units = list(range(start, end, 2))
        new_units = list(range(r_start, r_end, 2))
        for j in range(1, max(len(old_units), len(new_units)) + 1):
            a = old_units[max(len(old_units) - j, 0)]
            b = new_units[max(len(new_units) - j, 0)]
            to_original.setdefault(b, a)
            to_resume.setdefault(a, b)
    return to_original, to_resume


def _instr_ordinal(code: types.CodeType, offset: int) -> int:
    """The ordinal, among real instructions (no caches, no EXTENDED_ARG), of the one at offset."""
    layout = StackLayout.of(code)
    n = layout.index_at(offset)
    while layout.instructions[n].opname == "EXTENDED_ARG":
        n += 1
    return sum(1 for ins in layout.instructions[:n] if ins.opname != "EXTENDED_ARG")


def _resume_argnames(code: types.CodeType) -> list[str]:
    names = code.co_varnames
    n = code.co_argcount + code.co_kwonlyargcount
    out = list(names[:n])
    at = n
    if code.co_flags & _CO_VARARGS:
        out.append(names[at])
        at += 1
    else:
        out.append(_ARGS)
    out.append(names[at] if code.co_flags & _CO_VARKEYWORDS else _KWARGS)
    return out


def _position(bc: Bytecode, instr: Instr) -> int:
    # By identity: instructions compare equal by value, and code repeats itself (`finally`).
    return next(n for n, item in enumerate(bc) if item is instr)


@dataclass
class _Plan:
    """A frame's prologue and where it jumps to: all that its resume code is made of."""

    prologue: _Prologue
    target: int | None  # the ordinal of the instruction the prologue jumps to
    landing: tuple[int, int] | None  # the offsets of a re-entered call, from entry to call
    depth: int  # the stack's depth when the prologue has run


def _plan(state: FrameState, callee: Any) -> _Plan:
    original = state.code
    if state.problems:
        raise ResumeError(f"{state.name} cannot resume: {'; '.join(state.problems)}")
    layout = StackLayout.of(original)
    p = _Prologue()

    # 1. locals, and the cell objects of cell variables into their slots
    names = list(state.locals) + list(state.cells)
    if names:
        p.hand_over([*state.locals.values(), *state.cells.values()][::-1])  # the first on top
        p.instrs += [_no_line("STORE_FAST", name) for name in names]

    # 2. the stack
    run: list[Any] = []
    handled = iter(state.handled)
    for value, kind in zip(state.stack, state.stack_kinds):
        if value is _native.NULL:
            if run:
                p.hand_over(run)
                run = []
            p.instrs.append(_no_line("PUSH_NULL"))
        elif kind == EXC_PREV:
            run.append(next(handled))
            p.hand_over(run)
            run = []
            p.instrs += [_no_line("PUSH_EXC_INFO"), _no_line("POP_TOP")]
        else:
            if kind == LASTI and isinstance(value, int):
                p.lasti_slots.append((len(p.runs), len(run)))
            run.append(value)
    if run:
        p.hand_over(run)

    # 3. where to go on
    target: int | None
    landing = None
    depth = len(state.stack)
    if state.role == LINE:
        target = _instr_ordinal(original, state.offset)
    elif state.role in (CALL, INIT):
        site = layout.call_at(state.offset)
        assert site is not None
        if not V313:
            p.instrs.append(_no_line("PUSH_NULL"))
        p.hand_over([callee])
        if V313:
            p.instrs.append(_no_line("PUSH_NULL"))
        kind, n = site.shape
        if kind == "ex":
            p.instrs.append(_no_line("LOAD_CONST", ()))
            if n:
                p.instrs.append(_no_line("BUILD_MAP", 0))
        else:
            p.instrs += [_no_line("LOAD_CONST", None) for _ in range(n)]
            if kind == "call_kw":
                p.instrs.append(_no_line("LOAD_CONST", ()))
        target = _instr_ordinal(original, site.entry)
        landing = (site.entry, site.offset)
        depth += site.operands
    elif state.role == ITER:  # FOR_ITER, SEND or next() again, on the generator rebuilt (on the stack)
        if layout.instruction_at(state.offset).opname == "SEND":
            p.instrs.append(_no_line("LOAD_CONST", None))  # a rebuilt generator starts with None
            depth += 1
        target = _instr_ordinal(original, state.offset)
        # A line event there, before the generator is asked, would see it not started yet.
        site = layout.call_at(state.offset)
        landing = (state.offset, site.offset if site is not None else state.offset)
    elif state.role == RETURN:  # the call returned None: go on after it
        site = layout.call_at(state.offset)
        assert site is not None
        p.instrs.append(_no_line("LOAD_CONST", None))
        target = _instr_ordinal(original, site.offset) + 1
        depth += 1
    elif state.role == YIELD:
        p.instrs.append(_no_line("LOAD_CONST", None))
        target = _instr_ordinal(original, state.offset)
        depth += 1
    elif state.role == START:
        target = None
    else:
        raise ResumeError(f"unknown frame role {state.role!r}")
    return _Plan(p, target, landing, depth)


def _assemble(state: FrameState, plan: _Plan) -> tuple[types.CodeType, Origin, dict[int, int]]:
    """The resume code of ``plan``; also the map of the original's offsets to its own."""
    original = state.code
    bc = Bytecode.from_code(original, conserve_exception_block_stackdepth=True)
    instrs = [x for x in bc if isinstance(x, Instr)]
    resume_index = next(k for k, ins in enumerate(instrs) if ins.name == "RESUME")
    p = plan.prologue
    prologue = list(p.instrs)
    if plan.target is not None:
        label = Label()
        prologue.append(_no_line("JUMP_FORWARD", label))
        bc.insert(_position(bc, instrs[plan.target]), label)
    at = _position(bc, instrs[resume_index]) + 1
    bc[at:at] = prologue

    if original.co_flags & _CO_OPTIMIZED:
        # A function: its parameters stay (zero-argument super() reads the first one), and
        # *args/**kwargs are added so that any dummy call binds (with defaults for all, see
        # `_function`); the prologue then overwrites every local.
        bc.argnames = _resume_argnames(original)
        bc.flags = bc.flags | _CO_VARARGS | _CO_VARKEYWORDS
    biggest_run = max((len(r) for r in p.runs), default=0)
    names = len(state.locals) + len(state.cells)
    stacksize = max(original.co_stacksize, plan.depth + biggest_run + 4, names + 4)
    code = bc.to_code(stacksize=stacksize, compute_exception_stack_depths=False)

    to_original, to_resume = _relocate(original, code, len(prologue), resume_index)
    landings: frozenset[int] = frozenset()
    if plan.landing is not None:  # a line event between re-entering the call and the call itself
        first, last = plan.landing
        landings = frozenset(b for b, a in to_original.items() if first <= a <= last)
    origin = Origin(original, to_original, landings)
    register_origin(code, origin)
    return code, origin, to_resume


def _relocate_lasti(p: _Prologue, to_resume: dict[int, int]) -> None:
    """Instruction indexes saved by exception handlers, into the resume code's."""
    for run_index, item in p.lasti_slots:
        value = p.runs[run_index][item]
        p.runs[run_index][item] = to_resume.get(2 * value, 2 * value) // 2


def build_resume_code(state: FrameState, callee: Any = None) -> tuple[types.CodeType, Origin]:
    """The resume code object of one frame; ``callee`` is the next frame's resume function
    (for a frame in role "call")."""
    plan = _plan(state, callee)
    code, origin, to_resume = _assemble(state, plan)
    _relocate_lasti(plan.prologue, to_resume)
    plan.prologue.load()
    return code, origin


class GeneratorShell:
    """A generator that was running at the point, rebuilt while the snapshot loads: its
    object first (every reference loaded then is this one), its frame's values later.

    Its resume code is built from the frame's shape alone (names of the locals, which stack
    slots are empty, what the others hold); ``fill`` hands it the values once they are loaded.
    The generator is not started: its caller's FOR_ITER or SEND starts it, which runs the
    prologue and goes on where the generator stood.
    """

    def __init__(self, shape: FrameState, namespace: dict[str, Any]) -> None:
        self._plan = _plan(shape, None)
        code, _, self._to_resume = _assemble(shape, self._plan)
        self.generator = _function(shape, code, namespace)()

    def fill(self, state: FrameState, callee: Any) -> None:
        plan = _plan(state, callee)
        if [i.name for i in plan.prologue.instrs] != [i.name for i in self._plan.prologue.instrs]:
            raise ResumeError(f"the running generator {state.name} was stored in a shape its values do not have")
        _relocate_lasti(plan.prologue, self._to_resume)
        self._plan.prologue.runs = plan.prologue.runs
        self._plan.prologue.load()


def shape_of(state: FrameState) -> FrameState:
    """``state`` without its values (placeholders of the same kinds): what a ``GeneratorShell``
    is built from before the values load. Free variables stay: the function needs its closure."""
    stack = [_native.NULL if value is _native.NULL else (0 if kind == LASTI else None)
             for value, kind in zip(state.stack, state.stack_kinds)]
    return FrameState(state.code, state.module, state.role, state.offset, state.lineno,
                      locals=dict.fromkeys(state.locals), cells=dict.fromkeys(state.cells),  # type: ignore[arg-type]
                      free=state.free, stack=stack, stack_kinds=state.stack_kinds,
                      handled=[None] * len(state.handled))


# id(obj) -> the InitThen running obj's __init__, while it runs (capture asks: is it the call?)
_init_wrappers: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _init_then(init: Any, frame: FrameState) -> Any:
    code = frame.code
    name = code.co_varnames[0]
    value = frame.locals[name] if name in frame.locals else frame.cells[name].cell_contents
    wrapper = _native.InitThen(init, value)
    _init_wrappers[id(value)] = wrapper
    return wrapper


def init_wrapper(obj: Any) -> Any:
    """The ``InitThen`` a resumed program runs ``obj.__init__`` under, or None."""
    wrapper = _init_wrappers.get(id(obj))
    return wrapper if wrapper is not None and wrapper.obj is obj else None


def _namespace_of(state: FrameState, namespace: dict[str, Any]) -> dict[str, Any]:
    if state.module == "__main__":
        return namespace
    return importlib.import_module(state.module).__dict__


def _function(state: FrameState, code: types.CodeType, namespace: dict[str, Any]) -> types.FunctionType:
    closure = tuple(state.free[name] for name in state.code.co_freevars) or None
    original = state.code
    defaults = (None,) * original.co_argcount if original.co_flags & _CO_OPTIMIZED else None
    fn = types.FunctionType(code, _namespace_of(state, namespace), original.co_name, defaults, closure)
    if original.co_kwonlyargcount:
        kwonly = original.co_varnames[original.co_argcount:original.co_argcount + original.co_kwonlyargcount]
        fn.__kwdefaults__ = dict.fromkeys(kwonly)
    fn.__qualname__ = original.co_qualname
    return fn


def entry(state: ResumeState, namespace: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """What continues the program from ``state``: ``(code, globals)`` to ``exec`` for a module
    frame, or ``(function, None)`` to call. The caller runs it in its own frame, so that no
    frame of relive's sits between it and the program. ``state`` is emptied of its values."""
    if not state.resumable:
        raise ResumeError("this point cannot resume: " + "; ".join(state.reasons))
    callee: Any = None
    for index in range(len(state.frames) - 1, 0, -1):
        frame = state.frames[index]
        if frame.is_running_generator:
            shell = state.shells.get(index)
            if shell is None:
                raise ResumeError(f"the running generator {frame.name} was not rebuilt while loading")
            shell.fill(frame, callee)
            callee = None  # its caller does not call it: it asks it for its next item again
            continue
        code, _ = build_resume_code(frame, callee)
        callee = _function(frame, code, namespace)
        if state.frames[index - 1].role == INIT:  # called from C by type.__call__: by InitThen now
            callee = _init_then(callee, frame)
    outer = state.frames[0]
    code, _ = build_resume_code(outer, callee)
    target = (_function(outer, code, namespace), None) if outer.code.co_flags & _CO_OPTIMIZED \
        else (code, _namespace_of(outer, namespace))
    state.release()  # the resume code's feeders hold the values now, until its prologues run
    return target


def resume(state: ResumeState, namespace: dict[str, Any]) -> Any:
    """Continue the program from ``state``; returns what its outermost frame returns."""
    target, globals_ = entry(state, namespace)
    if globals_ is None:
        return target()
    exec(target, globals_)
    return None


# -- values rebuilt while loading (their names are part of the pickle format) --


def _synthetic_traceback() -> types.TracebackType:
    frame = sys._getframe()
    return types.TracebackType(None, frame, frame.f_lasti, frame.f_lineno)


def rebuild_exception(make: Any, args: tuple[Any, ...], state: Any, cause: BaseException | None,
                      context: BaseException | None, suppress_context: bool) -> BaseException:
    """An exception as it was, with a traceback (3.11's ``with`` cleanup reads it unchecked)."""
    exc: BaseException
    try:
        exc = make(*args)
    except TypeError:
        if not (isinstance(make, type) and issubclass(make, BaseException)):
            raise
        # Its __init__ takes other arguments than it passed on to BaseException: skip it.
        exc = make.__new__(make, *args)
        exc.args = args
    if state:
        if hasattr(exc, "__setstate__"):
            exc.__setstate__(state)
        else:
            exc.__dict__.update(state)
    exc.__cause__ = cause
    exc.__context__ = context
    exc.__suppress_context__ = suppress_context
    return exc.with_traceback(_synthetic_traceback())


def rebuild_generator(state: GeneratorState) -> Any:
    """A generator suspended where ``state`` says it was (called while loading, through pickle)."""
    if state.frame is None:
        def finished() -> Any:
            yield from ()
        gen = finished()
        for _ in gen:
            pass
        return gen
    frame = state.frame
    code, _ = build_resume_code(frame)
    gen = _function(frame, code, _loading_namespace())()
    if frame.role == YIELD:
        next(gen)
    return gen


def running_generator(index: int) -> Any:
    """The generator that ran frame ``index`` of the snapshot being loaded (called while
    loading, through pickle: a running generator is stored as this call)."""
    from relive.state.pickler import loading_running_generator

    return loading_running_generator(index)


def _loading_namespace() -> dict[str, Any]:
    """The namespace of the snapshot being loaded (script generators run in it)."""
    from relive.state.pickler import loading_namespace

    namespace = loading_namespace()
    if namespace is not None:
        return namespace
    main = sys.modules.get("__main__")
    return main.__dict__ if main is not None else {}
