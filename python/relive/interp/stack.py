"""The value stack of a code object, known statically: its depth and what its slots hold.

CPython records a frame's stack depth (``stacktop``) only at some moments: at a line event of
the frame itself and in a suspended generator. A frame waiting in a call has a stale record,
and reading past the real depth reads freed objects. So the depth is computed here, by a flow
analysis over the instructions and the exception table, as the compiler computed
``co_stacksize``:

    layout = StackLayout.of(code)
    layout.depth_at(offset)      # slots on the stack before the instruction at `offset`
    layout.kinds_at(offset)      # what each slot is: VALUE, LASTI, EXC, EXC_PREV
    layout.call_at(offset)       # the call a caller frame waits in: its operands' base, shape

``dis.stack_effect`` is right for all but a few instructions, corrected here: 3.11's
``PRECALL`` (it moves nothing; its ``CALL`` pops the callable and arguments) and
``RETURN_GENERATOR`` before 3.13 (it leaves the value sent to the new generator: +1).

Slot kinds matter for resuming: an exception handler entered with ``lasti`` pushes the
instruction index it came from (LASTI, to relocate into new code), then the exception (EXC);
``PUSH_EXC_INFO`` turns it into the previously handled exception (EXC_PREV, to replay) under
the new one.

``relive.interp.read`` asks it how deep a live frame's stack is; ``relive.interp.rebuild``
where a resume prologue jumps back in.
"""

from __future__ import annotations

import dis
import functools
import types
from dataclasses import dataclass

from relive.errors import StackAnalysisError
from relive.interp import V311

VALUE = "value"
LASTI = "lasti"
EXC = "exc"
EXC_PREV = "exc_prev"

# Instructions after which execution never falls through to the next one.
_NO_FALLTHROUGH = frozenset({
    "RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD", "JUMP_BACKWARD",
    "JUMP_BACKWARD_NO_INTERRUPT", "JUMP", "JUMP_NO_INTERRUPT", "INTERPRETER_EXIT",
})
# Instructions that leave every slot they do not pop untouched and push nothing of their own
# (the stack effect alone cannot tell them from those that pop operands and push a result).
_PUSH_NOTHING_PREFIXES = ("STORE_", "DELETE_", "POP_", "RETURN_", "RAISE_")
_PUSH_NOTHING = frozenset({
    "END_FOR", "RERAISE", "IMPORT_STAR", "PRINT_EXPR", "LIST_APPEND", "SET_ADD", "MAP_ADD",
    "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "JUMP_IF_TRUE_OR_POP",
    "JUMP_IF_FALSE_OR_POP",
})
# Instructions that touch no slot at all.
_TOUCH_NOTHING = frozenset({
    "NOP", "RESUME", "KW_NAMES", "PRECALL", "EXTENDED_ARG", "CACHE", "COPY_FREE_VARS", "MAKE_CELL",
    "JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP", "JUMP_NO_INTERRUPT",
    "SETUP_ANNOTATIONS",
})
# Calls that run a Python function inline in the caller's frame: the caller waits in one.
CALLS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX", "PRECALL"})


@dataclass(frozen=True)
class CallSite:
    """A call instruction a caller frame waits in.

    ``base`` is the depth below the call's operands: slots ``[0, base)`` are the caller's own
    and safe to read; the operands above may already be handed over (and freed). ``entry``
    is the offset to jump back to so the call runs again with new operands (3.11's
    ``PRECALL``, or the ``KW_NAMES`` before the call on 3.11-3.12). ``operands`` is the
    number of slots the call consumes; ``shape`` says how to fill them: ``("call", n)``
    for ``n`` arguments, ``("call_kw", n)`` (3.13: the names tuple on top), ``("ex", kw)``
    for ``f(*args)`` with (``kw``) or without a mapping of keywords.
    """

    offset: int
    entry: int
    base: int
    operands: int
    shape: tuple[str, int]


class StackLayout:
    """Depths and slot kinds before every instruction of one code object."""

    def __init__(self, code: types.CodeType) -> None:
        self.code = code
        self.instructions = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
        self._index = {ins.offset: n for n, ins in enumerate(self.instructions)}
        self._starts = [ins.offset for ins in self.instructions]
        self._kinds: list[tuple[str, ...] | None] = [None] * len(self.instructions)
        self._analyse()

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of(code: types.CodeType) -> "StackLayout":
        return StackLayout(code)

    # -- queries --

    def index_at(self, offset: int) -> int:
        """The ordinal of the instruction at ``offset`` or whose inline caches hold it."""
        import bisect

        n = bisect.bisect_right(self._starts, offset) - 1
        if n < 0:
            raise ValueError(f"offset {offset} precedes the code of {self.code.co_qualname}")
        return n

    def instruction_at(self, offset: int) -> dis.Instruction:
        return self.instructions[self.index_at(offset)]

    def reachable(self, offset: int) -> bool:
        return self._kinds[self.index_at(offset)] is not None

    def kinds_at(self, offset: int) -> tuple[str, ...]:
        kinds = self._kinds[self.index_at(offset)]
        if kinds is None:
            raise StackAnalysisError(f"offset {offset} of {self.code.co_qualname} is unreachable")
        return kinds

    def depth_at(self, offset: int) -> int:
        return len(self.kinds_at(offset))

    def call_at(self, offset: int) -> CallSite | None:
        """The call a caller frame stopped at ``offset`` (its ``f_lasti``) waits in, if any."""
        n = self.index_at(offset)
        ins = self.instructions[n]
        if ins.opname == "PRECALL":  # 3.11: a call through C may stop before CALL runs
            n += 1
            ins = self.instructions[n]
        if ins.opname not in CALLS:
            return None
        arg = ins.arg or 0
        depth = len(self.kinds_at(ins.offset))
        entry = ins.offset
        if ins.opname == "CALL_FUNCTION_EX":
            operands = 3 + (arg & 1)
            shape = ("ex", arg & 1)
        elif ins.opname == "CALL_KW":
            operands = arg + 3
            shape = ("call_kw", arg)
        else:
            operands = arg + 2
            shape = ("call", arg)
        if ins.opname == "CALL":
            k = n
            if V311 and k > 0 and self.instructions[k - 1].opname == "PRECALL":
                k -= 1
            if k > 0 and self.instructions[k - 1].opname == "KW_NAMES":
                k -= 1
            entry = self.instructions[k].offset
        return CallSite(ins.offset, entry, depth - operands, operands, shape)

    # -- the analysis --

    def _effect(self, ins: dis.Instruction, jump: bool) -> int:
        name = ins.opname
        if V311 and name == "PRECALL":
            return 0
        if V311 and name == "CALL":
            return -(ins.arg or 0) - 1
        if name == "RETURN_GENERATOR":
            return 1
        arg = ins.arg if ins.opcode >= dis.HAVE_ARGUMENT else None
        return dis.stack_effect(ins.opcode, arg, jump=jump)

    @staticmethod
    def _after(ins: dis.Instruction, kinds: tuple[str, ...], effect: int, jump: bool = False) -> tuple[str, ...]:
        name = ins.opname
        depth = len(kinds)
        if name in _TOUCH_NOTHING:
            return kinds
        if name == "PUSH_EXC_INFO":
            return kinds[:-1] + (EXC_PREV, EXC)
        if name == "COPY":
            return kinds + (kinds[-(ins.arg or 1)],)
        if name == "SWAP":
            k = list(kinds)
            n = ins.arg or 1
            k[-1], k[-n] = k[-n], k[-1]
            return tuple(k)
        new_depth = depth + effect
        if name in _PUSH_NOTHING or name.startswith(_PUSH_NOTHING_PREFIXES) or (jump and effect < 0):
            # A branch taken (a loop's iterator exhausted, a condition popped) only pops.
            keep = new_depth
        elif name in ("UNPACK_SEQUENCE", "UNPACK_EX"):
            keep = depth - 1
        elif effect > 0:
            keep = depth
        else:  # pops its operands (at least one) and pushes one result
            keep = new_depth - 1
        keep = max(0, min(keep, new_depth))
        return kinds[:keep] + (VALUE,) * (new_depth - keep)

    def _jump_target(self, ins: dis.Instruction) -> int | None:
        target: int | None = getattr(ins, "jump_target", None)
        if target is not None:
            return target
        if ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
            argval: int = ins.argval
            return argval
        return None

    def _analyse(self) -> None:
        handlers = dis._parse_exception_table(self.code)  # type: ignore[attr-defined]
        pending: list[tuple[int, tuple[str, ...]]] = [(0, ())]
        while pending:
            n, kinds = pending.pop()
            while n < len(self.instructions):
                known = self._kinds[n]
                if known is not None:
                    if len(known) != len(kinds):
                        ins = self.instructions[n]
                        raise StackAnalysisError(
                            f"{self.code.co_qualname}: depth {len(known)} and {len(kinds)} at {ins.offset} {ins.opname}")
                    break
                self._kinds[n] = kinds
                ins = self.instructions[n]
                for entry in handlers:
                    if entry.start <= ins.offset < entry.end:
                        below = kinds[:entry.depth]
                        pushed = (LASTI, EXC) if entry.lasti else (EXC,)
                        pending.append((self._index[entry.target], below + pushed))
                target = self._jump_target(ins)
                if target is not None:
                    effect = self._effect(ins, jump=True)
                    pending.append((self._index[target], self._after(ins, kinds, effect, jump=True)))
                if ins.opname in _NO_FALLTHROUGH:
                    break
                kinds = self._after(ins, kinds, self._effect(ins, jump=False))
                n += 1
