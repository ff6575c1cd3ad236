"""Programs checkpointed at a line event and resumed in another process go on exactly as an
uninterrupted run: same output after the checkpoint, same files at the end.

The sweeps checkpoint at every line event of a program (a child forked at each one captures
and pickles) and resume each checkpoint in a child forked from a process that never ran the
program; see harness.py. Other tests use nothing but separate processes.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).parent
HARNESS = HERE / "harness.py"
PROGRAMS = HERE / "programs"

# Why a line event may be refused, per program (anything else fails the test).
C_CALLER = "C code called it"
RUNNING_GENERATOR = "runs inside a generator"
WAITS = "waits in"
RE_ENTERING = "re-entering a call"
ALLOWED = {
    "nested_loops.py": (),
    "module_loop.py": (),
    "methods_files.py": (C_CALLER,),  # class bodies, __init__
    "handlers.py": (C_CALLER,),
    "closures_generators.py": (RUNNING_GENERATOR, WAITS),  # next(g) runs g from C
    # Only the lambdas that map() and filter() call while a loop asks them for an item, and
    # the generator a `break` closes.
    "running_generators.py": ("asks an iterator's Python `__next__`", "<lambda>", "C code called it",
                              "waits in POP_TOP", "being closed"),  # next(branch(2)) drops it too
    "with_blocks.py": (C_CALLER, RUNNING_GENERATOR, WAITS),  # __enter__, a running contextlib generator
    "signatures.py": (C_CALLER,),
    "callbacks.py": (C_CALLER,),
    "scandir_walk.py": (),
    "initializers.py": (C_CALLER,),  # class bodies (run by __build_class__), a metaclass's __init__
    "explicit.py": (),
}


def harness(*args: object, cwd: Path, stdout: object = subprocess.PIPE, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, str(HARNESS), *map(str, args)], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert proc.returncode == 0, f"harness {args[0]} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout or ""


def plain_run(script: Path, cwd: Path) -> str:
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@dataclass
class SweepResult:
    resumed: list[int] = field(default_factory=list)
    refused: dict[int, list[str]] = field(default_factory=dict)


def sweep(tmp: Path, script: Path, name: str, cwd: Path, state: Path | None = None) -> SweepResult:
    """Checkpoint at every line event (of the program, or of the program resumed from
    ``state``), resume every checkpoint, and check each resumed run against the full one."""
    outdir = tmp / name
    full_out = tmp / f"{name}.out"
    with open(full_out, "w") as fh:
        harness("sweep", script, outdir, *([state] if state else []), cwd=cwd, stdout=fh)
    harness("resume-sweep", outdir, script, cwd=tmp)
    full = full_out.read_text()
    verdicts = json.loads((outdir / "verdicts.json").read_text())
    result = SweepResult()
    failures = []
    for key, status in sorted(verdicts.items(), key=lambda kv: int(kv[0])):
        k = int(key)
        point = outdir / key
        if status == 5:
            result.refused[k] = json.loads((point / "refused.json").read_text())
            continue
        if status != 0:
            error = (point / "error.txt").read_text() if (point / "error.txt").exists() else f"status {status}"
            failures.append(f"line event {k}: capture failed: {error}")
            continue
        result.resumed.append(k)
        position = int((point / "stdout_position").read_text())
        err = (point / "resumed.err").read_text()
        if err:
            failures.append(f"line event {k}: the resumed run wrote to stderr:\n{err}")
        if (point / "resumed.out").read_text() != full[position:]:
            failures.append(f"line event {k}: output after resuming differs:\n{(point / 'resumed.out').read_text()}")
        for entry in cwd.iterdir():
            if entry.is_file() and not filecmp.cmp(entry, point / "run" / entry.name, shallow=False):
                failures.append(f"line event {k}: file {entry.name} differs at the end")
    assert not failures, "\n".join(failures[:5]) + f"\n({len(failures)} failures)"
    return result


def setup(tmp_path: Path, program: str) -> tuple[Path, Path]:
    script = tmp_path / program
    shutil.copy(PROGRAMS / program, script)
    cwd = tmp_path / "ref"
    cwd.mkdir()
    return script, cwd


def check_refusals(program: str, refused: dict[int, list[str]]) -> None:
    allowed = ALLOWED[program]
    for k, reasons in refused.items():
        assert reasons, f"line event {k} refused without a reason"
        for reason in reasons:
            assert any(a in reason for a in allowed), f"line event {k}: unexpected refusal: {reason}"


@pytest.mark.parametrize("program", [p for p in ALLOWED if p not in ("callbacks.py", "explicit.py")])
def test_resumes_at_every_line_event(tmp_path: Path, program: str) -> None:
    script, cwd = setup(tmp_path, program)
    result = sweep(tmp_path, script, "sweep", cwd)
    check_refusals(program, result.refused)
    assert len(result.resumed) >= 20
    assert len(result.resumed) >= len(result.refused)


def test_inside_a_callback_called_by_c_is_refused_with_a_reason(tmp_path: Path) -> None:
    script, cwd = setup(tmp_path, "callbacks.py")
    result = sweep(tmp_path, script, "sweep", cwd)
    check_refusals("callbacks.py", result.refused)
    reasons = [r for rs in result.refused.values() for r in rs]
    assert any("inside list()" in r for r in reasons), reasons  # list() runs map() that runs the lambda
    assert any("inside sorted()" in r for r in reasons), reasons
    assert len(result.resumed) >= 10  # before, between and after the callbacks


def test_a_callback_run_as_a_finished_call_drops_its_operands_is_refused_safely(tmp_path: Path) -> None:
    """A weakref callback can run while CPython drops a returned call's operands one by one:
    the caller's slots then point to freed objects. Capturing there reads none of them (it
    crashed the program on 3.11, 3.12 and 3.13 when it did)."""
    script = tmp_path / "released.py"
    script.write_text(textwrap.dedent("""
        import sys, weakref
        from relive.interp.read import capture

        class Bag(list):  # a C method (clear) is called, so CALL itself drops the bag
            pass

        def gone(ref):
            frames, f = [], sys._getframe()
            while f.f_code.co_filename != __file__ or f.f_code.co_name != "<module>":
                frames.append(f)
                f = f.f_back
            reasons.append(capture([f, *frames[::-1]]).reasons)

        def make():
            bag = Bag([object(), [1, 2], "x" * 100])
            refs.append(weakref.ref(bag, gone))
            return bag

        reasons, refs = [], []
        for _ in range(5000):
            make().clear()
        junk = [[object()] * 3 for _ in range(100000)]  # a corrupted heap shows here
        print(len(reasons), sorted({r[-1] for r in reasons}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, rest = proc.stdout.split(" ", 1)
    assert count == "5000"
    assert f"{C_CALLER} (inside make().clear())" in rest


# -- separate processes only --


@pytest.mark.parametrize("program, k1, k2", [
    ("nested_loops.py", 30, 25),
    ("methods_files.py", 14, 12),
    ("handlers.py", 25, 9),
    ("closures_generators.py", 20, 15),
    ("running_generators.py", 40, 30),
    ("initializers.py", 12, 10),
    ("with_blocks.py", 30, 12),
    ("module_loop.py", 10, 10),
])
def test_checkpoint_resume_checkpoint_resume(tmp_path: Path, program: str, k1: int, k2: int) -> None:
    script, _ = setup(tmp_path, program)
    expected = plain_run(script, tmp_path / "plain")
    work = tmp_path / "work"
    work.mkdir()
    first = harness("checkpoint", script, k1, tmp_path / "1.state", cwd=work)
    second = harness("resume", tmp_path / "1.state", script, k2, tmp_path / "2.state", cwd=work)
    third = harness("resume", tmp_path / "2.state", script, cwd=work)
    assert (tmp_path / "2.state").exists()
    assert first + second + third == expected
    for entry in (tmp_path / "plain").iterdir():
        assert filecmp.cmp(entry, work / entry.name, shallow=False), entry.name


@pytest.mark.parametrize("program", ["closures_generators.py", "handlers.py", "with_blocks.py", "methods_files.py",
                                     "running_generators.py", "initializers.py"])
def test_a_resumed_program_resumes_again_from_every_line_event(tmp_path: Path, program: str) -> None:
    script, cwd = setup(tmp_path, program)
    first = sweep(tmp_path, script, "sweep", cwd)
    k = first.resumed[len(first.resumed) // 3]
    resumed_cwd = tmp_path / "resumed"
    shutil.copytree(tmp_path / "sweep" / str(k) / "files", resumed_cwd)
    second = sweep(tmp_path, script, "again", resumed_cwd, state=tmp_path / "sweep" / str(k) / "state")
    # The resumed run itself went on as the original did.
    position = int((tmp_path / "sweep" / str(k) / "stdout_position").read_text())
    assert (tmp_path / "again.out").read_text() == (tmp_path / "sweep.out").read_text()[position:]
    # A line event where a resumed caller re-enters its call is refused too (the next is not).
    check_refusals(program, {k: rs for k, rs in second.refused.items() if not any(RE_ENTERING in r for r in rs)})
    assert len(second.resumed) >= 10


def test_exits_after_the_checkpoint_and_resumes_in_a_new_process(tmp_path: Path) -> None:
    script, _ = setup(tmp_path, "methods_files.py")
    expected = plain_run(script, tmp_path / "plain")
    work = tmp_path / "work"
    work.mkdir()
    # Line 14 of methods_files.py writes inside `with open(...)`: checkpoint in the middle of it.
    before = harness("checkpoint", script, "line:14:2", tmp_path / "s.state", cwd=work)
    partial = (work / "out.txt").read_text()
    after = harness("resume", tmp_path / "s.state", script, cwd=work)
    assert before + after == expected
    final = (work / "out.txt").read_text()
    assert final == (tmp_path / "plain" / "out.txt").read_text()
    assert partial.startswith("# 0")  # the checkpoint stood inside the first `with open(...)`
    assert os.path.getsize(tmp_path / "s.state") > 0


def test_an_explicit_checkpoint_call_resumes_after_the_call(tmp_path: Path) -> None:
    script, _ = setup(tmp_path, "explicit.py")
    expected = plain_run(script, tmp_path / "plain")
    work = tmp_path / "work"
    work.mkdir()
    before = harness("explicit", script, tmp_path / "s.state", cwd=work)
    after = harness("resume", tmp_path / "s.state", script, cwd=work)
    assert before == "0 0\n1 1\n"
    assert before + after == expected
