"""Reading a point where a program can resume: every frame's code, position, locals and stack.

At a line event of the program's innermost frame, ``capture(frames)`` turns the live stack
(outermost first, as ``relive.capture.frames.live_stack`` lists it) into a
``relive.interp.frame_state.ResumeState``: picklable data from which ``relive.interp.rebuild``
rebuilds the stack in another process and continues. It also says whether the point can
resume at all, and why not:

- a frame called by C code (``map()`` or ``sorted(key=...)`` calling back, ``__init__`` run
  by a class call, ``__enter__``, a property): the C function's own state is out of reach.
  Pure trampolines are accepted: C that only forwards a call, as ``f(*args)`` does, where
  the callable on the caller's stack is the very function that runs (or, for a method, its
  ``self``), a bound method of it (``nn.Module.__call__`` calling ``forward``), or a
  ``functools.partial`` of it;
- a frame that waits in something other than a call (an operator, an attribute read);
- a coroutine, or a generator run by something other than a ``for`` loop, ``yield from``
  or C iterators that only forward (``enumerate``, ``map`` and ``filter`` over it): a
  running generator whose caller waits in FOR_ITER or SEND is a frame of the stack like any
  other, its caller has the role "iter" (a suspended generator is a value, rebuilt by
  ``reduce_for_resume``);
- the point where a resumed program re-enters its calls.

Values on the stacks are exposed as they are; whether they pickle is the pickler's business.
``reducer(point)`` reduces the ones that would not pickle by themselves and that stacks
hold: generators (suspended ones by value, with their frame; running ones by the index of
the frame they run) and exceptions (with their cause, context and a traceback). A pickler
calls it from ``reducer_override``. Open files are
``relive.state.pickler``'s: reopened where the capture found them after flushing them (a
``with`` block's ``__exit__`` is a bound method of the file, and follows it).
Iterators of builtin types (``range``, ``list``, ``tuple``, ``dict``, ``enumerate``, ``zip``,
``map``, ``reversed``...) pickle by themselves, at their position.

Frames of resume code (a program resumed before) are captured as frames of the original code:
offsets and ``lasti`` values translate back through the resume code's ``Origin``.

``relive.capture`` calls ``capture`` at the line event a snapshot is taken at;
``relive.capture.save`` hands ``reducer(point)`` to the pickler.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

from relive import _native
from relive.errors import NotResumable, StackAnalysisError
from relive.interp import V313
from relive.interp.frame_state import (
    CALL, INIT, ITER, LINE, RETURN, START, YIELD, FrameState, GeneratorState, Origin, ResumeState, origin_of,
)
from relive.interp.rebuild import init_wrapper, rebuild_exception, rebuild_generator, running_generator
from relive.interp.stack import EXC_PREV, LASTI, StackLayout

_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_CURRENT: Any = object()


_WAITS = {
    "FOR_ITER": "a loop asks an iterator's Python `__next__` for its next item",
    "SEND": "`yield from` or `await` is running a generator or coroutine",
    "BINARY_SUBSCR": "an operator (`x[i]`) called the next frame",
    "STORE_SUBSCR": "an operator (`x[i] = v`) called the next frame",
    "LOAD_ATTR": "an attribute read (a property or `__getattr__`) called the next frame",
    "STORE_ATTR": "an attribute write called the next frame",
    "BEFORE_WITH": "a `with` statement is calling `__enter__`",
    "": "an operator or another statement called the next frame (only calls can resume)",
}


def localsplus_names(code: types.CodeType) -> list[str]:
    """The names of a frame's localsplus slots, in CPython's order."""
    names: list[str] = []
    while True:
        try:
            names.append(code._varname_from_oparg(len(names)))  # type: ignore[attr-defined]
        except IndexError:
            return names


def _frame_of(item: Any) -> types.FrameType:
    return item if isinstance(item, types.FrameType) else item.frame


def capture(frames: Sequence[Any], handled: Any = _CURRENT) -> ResumeState:
    """The state of the program's frames (outermost first; frame objects or ``FrameView``s) at a
    line event of the innermost one, in this thread.

    ``handled`` is the exception being handled there; by default ``sys.exception()``, which is
    right when called from the line event's own callback.

    If instead the innermost frame called (directly, not through C) the function that
    captures, as an explicit ``checkpoint()`` call does, that frame gets the role "return":
    resuming makes the call return None and goes on after it.
    """
    if handled is _CURRENT:
        handled = sys.exc_info()[1]
    live = [_frame_of(f) for f in frames]
    if live and not _on_this_threads_stack(live[-1]):
        # Another thread's frames move while we read them: no slot of theirs is safe to read.
        return ResumeState([], handled, ["the frames are not this thread's: capture runs in the "
                                         "program's thread, at one of its line events"])
    point = ResumeState([], handled)
    for index, frame in enumerate(live):
        role = CALL
        if index == len(live) - 1:
            role = RETURN if _waits_in_a_direct_call(frame) else LINE
        caller = live[index - 1] if index else None
        callee = live[index + 1] if index + 1 < len(live) else None
        state = _frame_state(frame, role, caller, callee)
        if caller is not None and point.frames[-1].role == CALL and _init_run_by_class_call(frame, caller):
            point.frames[-1].role = INIT
            state.problems = [p for p in state.problems if not p.startswith(_C_CALLER)]
        if frame.f_code.co_flags & _GENERATOR_FLAGS and index:
            _check_running_generator(frame, state, point.frames[-1], point.running, index, caller)
        point.frames.append(state)
    _link_handled(point.frames, handled)
    return point


def _on_this_threads_stack(frame: types.FrameType) -> bool:
    current: types.FrameType | None = sys._getframe()
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def _waits_in_a_direct_call(frame: types.FrameType) -> bool:
    """Whether ``frame`` (on this thread's stack) waits in a call of Python code that Python
    called directly: the slots of that call's operands may be freed. At a line event, C (the
    tracing machinery) calls the code below it."""
    younger = sys._getframe()
    while younger.f_back is not frame:
        younger = younger.f_back  # type: ignore[assignment]
    return not _native.frame_called_from_c(younger)


def _link_handled(states: list[FrameState], handled: BaseException | None) -> None:
    # Each `except` block's PUSH_EXC_INFO left the exception it replaced in an EXC_PREV slot;
    # the exception it handles is what the next such slot up the stack holds, or, for the
    # last one, the exception being handled now.
    slots = [(state, value) for state in states for value, kind in zip(state.stack, state.stack_kinds)
             if kind == EXC_PREV]
    for n, (state, _) in enumerate(slots):
        state.handled.append(slots[n + 1][1] if n + 1 < len(slots) else handled)


def _original(frame: types.FrameType, offset: int) -> tuple[types.CodeType, int, Origin | None]:
    origin = origin_of(frame.f_code)
    if origin is None:
        return frame.f_code, offset, None
    return origin.code, origin.offsets.get(offset, -1), origin


def _frame_state(frame: types.FrameType, role: str, caller: types.FrameType | None,
                 callee: types.FrameType | None = None) -> FrameState:
    code, offset, origin = _original(frame, frame.f_lasti)
    state = FrameState(code, frame.f_globals.get("__name__", "__main__"), role, offset, frame.f_lineno)
    problems = state.problems
    if offset < 0:
        problems.append("it stands in the prologue of a resume: the program is being resumed")
        return state
    if origin is not None and role == LINE and frame.f_lasti in origin.landings:
        problems.append("it is re-entering a call of a resumed program")
    try:
        layout = StackLayout.of(code)
        if role == LINE:
            depth = layout.depth_at(offset)
        elif role == CALL and callee is not None and callee.f_code.co_flags & inspect.CO_GENERATOR \
                and layout.instruction_at(offset).opname in _ITERATES:
            ins = layout.instruction_at(offset)
            state.role, state.offset = ITER, ins.offset
            # SEND's value has gone to the generator: its slot is not the caller's any more.
            depth = layout.depth_at(ins.offset) - (ins.opname == "SEND")
        else:  # CALL or RETURN
            site = layout.call_at(offset)
            if site is None:
                name = layout.instruction_at(offset).opname
                problems.append(f"it waits in {name}, not in a call: {_WAITS.get(name, _WAITS[''])}")
                return state
            depth = site.base
            state.offset = site.offset
    except StackAnalysisError as exc:
        problems.append(f"its bytecode is not understood: {exc}")
        return state
    _read_slots(frame, code, state, depth, origin)
    if caller is not None and frame.f_back is not caller:
        problems.append("frames left out of the state run between it and the frame before")
    elif caller is not None and not code.co_flags & _GENERATOR_FLAGS and _native.frame_called_from_c(frame):
        problem = _c_caller_problem(frame, caller)
        if problem:
            problems.append(problem)
    return state


_ITERATES = frozenset({"FOR_ITER", "SEND"})
# C iterators whose next() only asks one iterator for its next item and keeps nothing in C
# meanwhile: asking them again asks the generator again. Each reduces to (type, (..., it, ...)).
_FORWARDING: dict[type, int] = {enumerate: 0, map: 1, filter: 1}


def _check_running_generator(frame: types.FrameType, state: FrameState, caller: FrameState,
                             running: dict[int, int], index: int, caller_frame: Any) -> None:
    """A generator or coroutine frame on the stack: resumable when its caller waits in a
    ``for`` loop over it (maybe through ``enumerate``/``map``/``filter``), in ``yield from``
    or in ``next(gen)``; notes its generator object in ``running``."""
    code = frame.f_code
    if not code.co_flags & inspect.CO_GENERATOR:
        state.problems.append("it runs inside a coroutine or an async generator: only suspended ones "
                              "can be rebuilt")
        return
    if any(isinstance(value, GeneratorExit) for value in state.stack):
        # Closed (dropped, or broken out of): its caller may still stand at the call that
        # made it, whose operand slots CPython is releasing; nothing asks it for an item.
        state.problems.append("it runs inside a generator that is being closed (GeneratorExit)")
        return
    if caller.role != ITER:
        layout = StackLayout.of(caller.code)
        site = layout.call_at(caller.offset) if caller.offset >= 0 else None
        if site is None:  # `del gen`, a loop broken out of: dropping it closes it
            waits = layout.instruction_at(caller.offset).opname if caller.offset >= 0 else "its prologue"
            state.problems.append(f"it runs inside a generator that is being closed or that no loop runs "
                                  f"(its caller waits in {waits})")
            return
        if not caller.problems and _asked_by_next(frame, caller, _frame_of(caller_frame), site, running, index):
            return
        inside = _inside(caller.code, site.offset)
        state.problems.append(f"it runs inside a generator that C code is running{inside}: "
                              "the C function's own state cannot be saved")
        return
    if caller.problems:
        return
    # The iterator FOR_ITER asks (its top slot), or the receiver SEND sends to (under the value).
    it = caller.stack[-1] if caller.stack else None
    gen = it
    position = _FORWARDING.get(type(it))
    if position is not None:
        try:
            args = it.__reduce__()[1]
        except Exception:
            args = ()
        sources = args[position:] if type(it) is map else args[position:position + 1]
        gen = sources[0] if len(sources) == 1 else None
    if not isinstance(gen, types.GeneratorType) or gen.gi_frame is not frame:
        what = type(it).__name__
        caller.problems.append(f"its loop asks a {what} for the next item, which asks the generator "
                               f"{code.co_qualname}: only a for loop over a generator (or over "
                               "enumerate, map or filter of one) and yield from can resume")
        return
    running[id(gen)] = index


def _asked_by_next(frame: types.FrameType, caller: FrameState, caller_frame: types.FrameType, site: Any,
                   running: dict[int, int], index: int) -> bool:
    """Whether ``caller`` waits in ``next(gen)`` (the builtin, one argument) for the generator
    running ``frame``: C that keeps nothing of its own. If so, the caller becomes an "iter"
    frame that makes the call again: its stack gets the call's operands, by value (the
    operand slots are compared by address only, as in ``_c_caller_problem``)."""
    gen = _native.frame_generator(frame)
    if site.shape != ("call", 1) or not isinstance(gen, types.GeneratorType):
        return False
    addresses = _native.frame_stack_addresses(caller_frame, site.base, site.base + 3)
    if len(addresses) != 3 or addresses[2] != id(gen) or sorted(addresses[:2]) != sorted([0, id(next)]):
        return False
    operands = [next, _native.NULL] if addresses[0] == id(next) else [_native.NULL, next]
    caller.role, caller.offset = ITER, site.entry
    caller.stack = caller.stack[:site.base] + operands + [gen]
    caller.stack_kinds = StackLayout.of(caller.code).kinds_at(site.entry)
    running[id(gen)] = index
    return True


def _read_slots(frame: types.FrameType, code: types.CodeType, state: FrameState, depth: int,
                origin: Origin | None) -> None:
    layout = StackLayout.of(code)
    live_names = localsplus_names(frame.f_code)
    values = _native.frame_locals_plus(frame)
    free = set(code.co_freevars)
    cells = set(code.co_cellvars)
    own = set(code.co_varnames) | cells | free
    for name, value in zip(live_names, values):
        if value is _native.NULL or name not in own:
            continue
        if name in free:
            state.free[name] = value
        elif name in cells:
            state.cells[name] = value
        else:
            state.locals[name] = value
    state.stack = list(_native.frame_stack(frame, depth))
    state.stack_kinds = layout.kinds_at(state.offset)[:depth]
    if origin is not None:  # instruction indexes pushed by the resume code's own instructions
        for n, kind in enumerate(state.stack_kinds):
            if kind == LASTI and isinstance(state.stack[n], int):
                state.stack[n] = origin.offsets.get(2 * state.stack[n], 0) // 2


_C_CALLER = "C code called it"


def _init_run_by_class_call(frame: types.FrameType, caller: types.FrameType) -> bool:
    """Whether ``frame`` is the ``__init__`` that ``type.__call__`` runs for ``caller``'s call
    ``Cls(...)`` (or, in a resumed program, that ``_native.InitThen`` runs): C whose only state
    of its own is the object, which the frame holds as its ``self``."""
    code = _original(frame, 0)[0]
    if code.co_name != "__init__" or not _native.frame_called_from_c(frame):
        return False
    receiver = _first_argument(frame, code)
    if receiver is _native.NULL:
        return False
    init = inspect.getattr_static(type(receiver), "__init__", None)
    if getattr(init, "__code__", None) is not code:
        return False
    caller_code, offset, _ = _original(caller, caller.f_lasti)
    site = StackLayout.of(caller_code).call_at(offset) if offset >= 0 else None
    if site is None:
        return False
    # By address only (see _c_caller_problem): the class called, or the InitThen called instead.
    addresses = _native.frame_stack_addresses(caller, site.base, site.base + 2)
    wrapper = init_wrapper(receiver)
    return id(type(receiver)) in addresses or (wrapper is not None and id(wrapper) in addresses)


def _c_caller_problem(frame: types.FrameType, caller: types.FrameType) -> str | None:
    """None when the C between ``caller`` and ``frame`` is a pure trampoline, else why not.

    The call's operand slots are compared by address only, never read: once the call has
    returned, CPython releases them one by one, and a finalizer or weakref callback freed
    with one of them may be the very frame asking (its slot then points to freed memory).
    The callee's function and first argument are held by its own frame, so an address equal
    to one of theirs is a live slot. A bound method or a ``functools.partial`` on the stack
    is trusted only as ``_forwarder_in_slot`` says.
    """
    code, offset, _ = _original(caller, caller.f_lasti)
    site = StackLayout.of(code).call_at(offset) if offset >= 0 else None
    if site is None:
        return "C code called it"
    callee_code = _original(frame, 0)[0]
    addresses = _native.frame_stack_addresses(caller, site.base, site.base + 2)
    if id(_native.frame_function(frame)) in addresses:
        return None
    # A method called through vectorcall lends its slot to its `self` during the call.
    receiver = _first_argument(frame, callee_code)
    if receiver is not _native.NULL and id(receiver) in addresses and _method_of(receiver, callee_code):
        return None
    if _forwarder_in_slot(caller, frame, code, site.offset, addresses):
        return None
    return f"{_C_CALLER}{_inside(code, site.offset)}: the C function's own state cannot be saved"


def _method_of(receiver: Any, code: types.CodeType) -> bool:
    method = inspect.getattr_static(type(receiver), code.co_name, None)
    return getattr(method, "__code__", None) is code


def _forwarder_in_slot(caller: types.FrameType, frame: types.FrameType, code: types.CodeType, offset: int,
                       addresses: list[int]) -> bool:
    """Whether the call's slot holds C that only forwards to the running function: a bound
    method of it called with its arguments unpacked (``self.f(*args, **kwargs)``, or
    ``call = self.f; call(*args)``), or a ``functools.partial`` of it. The slot's address is
    trusted, never read, only where something keeps the object alive (a local or global
    of the caller: ``nn.Module``'s ``forward_call``), or where the call's source names the
    running method (``self._call_impl(...)``): a finalizer run while a returned call's
    operands are released would not be that very method."""
    function = _native.frame_function(frame)
    if any(_forwards_to(value, function, addresses) for value in _held_by(caller)):
        return True
    callee_code = _original(frame, 0)[0]
    name = _callee_name(code, offset)
    if name is None or "." not in name or name.rpartition(".")[2] != callee_code.co_name:
        return False
    receiver = _first_argument(frame, callee_code)
    return receiver is not _native.NULL and _method_of(receiver, callee_code)


def _held_by(frame: types.FrameType) -> Iterator[Any]:
    """The values of a frame's locals (closure cells opened) and of its module's globals."""
    for value in _native.frame_locals_plus(frame):
        if type(value) is types.CellType:  # nn.Module's forward_call is a closure's cell
            try:
                value = value.cell_contents
            except ValueError:  # empty
                continue
        yield value
    yield from frame.f_globals.values()


def _forwards_to(value: Any, function: Any, addresses: list[int]) -> bool:
    """Whether ``value``, in the call's slot, is a bound method or a partial of ``function``.
    A partial of one argument lends the slot to that argument during the call (CPython's
    vectorcall offset), as a method does to its ``self``."""
    if type(value) is functools.partial:
        lent = len(value.args) == 1 and id(value.args[0]) in addresses
        return (id(value) in addresses or lent) and _runs(value.func, function)
    return type(value) is types.MethodType and id(value) in addresses and _runs(value, function)


def _runs(callable_: Any, function: Any) -> bool:
    if type(callable_) is types.MethodType:
        callable_ = callable_.__func__
    return callable_ is function


def _inside(code: types.CodeType, offset: int) -> str:
    """`` (inside sorted())`` for the call at ``offset``, as reasons name it; empty if unknown."""
    name = _callee_name(code, offset)
    return f" (inside {name}())" if name else ""


def _callee_name(code: types.CodeType, offset: int) -> str | None:
    """What the call at ``offset`` calls, as its source spells it (``sorted``, ``self.step``)."""
    pos = StackLayout.of(code).instruction_at(offset).positions
    if pos is None or pos.lineno is None or pos.end_lineno is None or pos.col_offset is None \
            or pos.end_col_offset is None:
        return None
    lines = [linecache.getline(code.co_filename, n).encode() for n in range(pos.lineno, pos.end_lineno + 1)]
    lines[-1] = lines[-1][:pos.end_col_offset]
    lines[0] = lines[0][pos.col_offset:]
    text = b"".join(lines).decode(errors="replace").strip()
    if not text.endswith(")"):
        return None
    depth = 0
    for n in range(len(text) - 1, -1, -1):  # back to the "(" of the call's own arguments
        depth += {")": 1, "(": -1}.get(text[n], 0)
        if depth == 0:
            head = " ".join(text[:n].split())
            return head if 0 < len(head) <= 60 else None
    return None


def _first_argument(frame: types.FrameType, code: types.CodeType) -> Any:
    if not code.co_argcount:
        return _native.NULL
    name = code.co_varnames[0]
    names = localsplus_names(frame.f_code)
    if name not in names:
        return _native.NULL
    value = _native.frame_locals_plus(frame)[names.index(name)]
    return value.cell_contents if isinstance(value, types.CellType) and name in code.co_cellvars else value


# -- generators --


def generator_state(gen: types.GeneratorType[Any, Any, Any]) -> GeneratorState:
    """A suspended (or not yet started, or finished) generator, by value."""
    name, qualname = gen.__name__, gen.__qualname__
    frame = gen.gi_frame
    if frame is None or inspect.getgeneratorstate(gen) == inspect.GEN_CLOSED:
        return GeneratorState(None, name, qualname)
    if gen.gi_running:
        raise NotResumable(f"the generator {qualname} is running")
    code, offset, origin = _original(frame, frame.f_lasti)
    module = frame.f_globals.get("__name__", "__main__")
    if inspect.getgeneratorstate(gen) == inspect.GEN_CREATED:
        state = FrameState(code, module, START, 0, frame.f_lineno)
        _read_slots(frame, code, state, 0, origin)
        return GeneratorState(state, name, qualname)
    layout = StackLayout.of(code)
    index = layout.index_at(offset)
    if V313:  # 3.13 stops a suspended generator at the RESUME after its YIELD_VALUE
        index -= 1
    ins = layout.instructions[index]
    if ins.opname != "YIELD_VALUE":
        raise NotResumable(f"the generator {qualname} is suspended at {ins.opname}, not at a yield")
    state = FrameState(code, module, YIELD, ins.offset, frame.f_lineno)
    _read_slots(frame, code, state, layout.depth_at(ins.offset) - 1, origin)
    if EXC_PREV in state.stack_kinds:
        raise NotResumable(f"the generator {qualname} is suspended inside an except block")
    return GeneratorState(state, name, qualname)


# -- values that need help to pickle --


def reducer(point: ResumeState | None) -> Any:
    """``reduce_for_resume`` for the values of ``point`` (its running generators)."""
    running = point.running if point is not None and point.resumable else {}

    def reduce(obj: Any) -> Any:
        return reduce_for_resume(obj, running)
    return reduce


def reduce_for_resume(obj: Any, running: dict[int, int] | None = None) -> Any:
    """A reduce tuple for values on a program's stacks that do not pickle by themselves, or
    ``NotImplemented`` for everything else (for a pickler's ``reducer_override``).
    ``running`` maps the generators running at the point to the frames they run."""
    kind = type(obj)
    if kind is types.GeneratorType:
        if running and id(obj) in running:
            return (running_generator, (running[id(obj)],))
        return (rebuild_generator, (generator_state(obj),))
    if isinstance(obj, BaseException):
        reduced = obj.__reduce_ex__(5)
        make, args = reduced[0], reduced[1]
        state = reduced[2] if len(reduced) > 2 else None
        return (rebuild_exception, (make, args, state, obj.__cause__, obj.__context__, obj.__suppress_context__))
    return NotImplemented
