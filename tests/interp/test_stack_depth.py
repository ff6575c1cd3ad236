"""The static stack depth matches CPython's own at every line event, and covers all code."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from relive.interp.stack import EXC, EXC_PREV, LASTI, StackLayout

HERE = Path(__file__).parent
PROGRAMS = sorted(p.name for p in (HERE / "programs").glob("*.py"))


@pytest.mark.parametrize("program", PROGRAMS)
def test_depth_matches_the_interpreter_at_every_line(tmp_path: Path, program: str) -> None:
    script = tmp_path / program
    shutil.copy(HERE / "programs" / program, script)
    proc = subprocess.run([sys.executable, str(HERE / "depth_check.py"), str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["events"] > 20
    assert result["mismatches"] == []


def test_depth_matches_the_interpreter_across_the_standard_library(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(HERE / "depth_check.py"), str(HERE / "stdlib_workout.py"),
                           "--everywhere"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["events"] > 50_000
    assert result["mismatches"] == []


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def test_every_stdlib_code_object_is_analysed_within_its_stack_size() -> None:
    root = os.path.dirname(os.__file__)
    files = sorted(glob.glob(root + "/*.py"))[::4] + glob.glob(root + "/asyncio/*.py")
    analysed = 0
    for path in files:
        try:
            top = compile(Path(path).read_text(encoding="utf-8"), path, "exec")
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for code in _codes(top):
            layout = StackLayout(code)
            for ins in layout.instructions:
                if layout.reachable(ins.offset):
                    assert layout.depth_at(ins.offset) <= code.co_stacksize, (path, code.co_qualname, ins)
            analysed += 1
    assert analysed > 1000


def test_slot_kinds_of_an_except_block_and_a_with_cleanup() -> None:
    def f(path):
        try:
            raise ValueError
        except ValueError:
            x = 1
        with open(path) as fh:
            fh.read()
        return x

    layout = StackLayout(f.__code__)
    kinds = {ins.opname: layout.kinds_at(ins.offset) for ins in layout.instructions if layout.reachable(ins.offset)}
    # Inside the handler the previous exception waits under the block's body.
    handler = [layout.kinds_at(i.offset) for i in layout.instructions
               if i.opname == "STORE_FAST" and i.argval == "x" and layout.reachable(i.offset)]
    assert handler and handler[0][-2:] == (EXC_PREV, "value")
    # The with block's cleanup: __exit__, the instruction index, the previous and the new exception.
    assert kinds["WITH_EXCEPT_START"][-3:] == (LASTI, EXC_PREV, EXC)


def test_call_sites_know_their_operands() -> None:
    def g(obj, a, args):
        obj.m(a, k=1)
        g(*args)

    layout = StackLayout(g.__code__)
    sites = [layout.call_at(i.offset) for i in layout.instructions if i.opname.startswith("CALL")]
    sites = [s for s in sites if s is not None]
    shapes = [s.shape for s in sites]
    assert shapes[0][1] == 2 and shapes[-1] == ("ex", 0)
    assert all(s.base == 0 for s in sites)
