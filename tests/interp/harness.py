"""Run a script, checkpoint it at a line event, resume it in another process.

    harness.py checkpoint SCRIPT K STATE     run SCRIPT; at the first resumable line event at or
                                             after the K-th (or, for K = line:N:M, after the M-th
                                             on line N), write STATE and exit at once
    harness.py explicit SCRIPT STATE         run SCRIPT with a builtin checkpoint() that writes
                                             STATE and exits (resuming returns None from it)
    harness.py resume STATE SCRIPT [K STATE2]
                                             resume STATE (in this new process); optionally
                                             checkpoint again at the K-th line event after it
    harness.py sweep SCRIPT OUTDIR [STATE]   run SCRIPT (or resume STATE) to its end; at every
                                             line event fork a child that checkpoints into
                                             OUTDIR/<K>/
    harness.py resume-sweep OUTDIR           resume every OUTDIR/<K>/state, each in a child
                                             forked from this process (which never ran SCRIPT),
                                             in a fresh copy of the files as they were at K

Line events are counted in the script's own code. A checkpoint is the script's frames (from
the module down to the line), captured by relive.interp.read, plus its globals and
random's state, pickled with relive's pickler; open files are flushed and reopened where
they stood. In a sweep the checkpoint child first moves every file the program has open onto
a private copy, so that what it flushes never reaches the running parent's files.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import random
import shutil
import signal
import sys
import types
from typing import Any

from relive.interp import MONITORING
from relive.interp.frame_state import origin_of
from relive.interp.read import capture, reduce_for_resume
from relive.interp.rebuild import resume
from relive.state import pickler


class ResumePickler(pickler.StatePickler):
    running: dict[int, int] = {}  # the point's running generators -> their frames

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, io.IOBase) and not obj.closed and obj.writable():
            obj.flush()  # as relive's capture does before it reads the files' positions
        reduced = reduce_for_resume(obj, self.running)
        if reduced is not NotImplemented:
            return reduced
        return super().reducer_override(obj)


# Running generators are rebuilt before the values that refer to them load (relive's store
# keeps the frames' shapes in the manifest; here they come first in the one pickle, handed to
# `shapes_loaded` as they load). Named through this module's importable name, not __main__.
_SHAPES: dict[int, Any] = {}
_SHELLS: dict[int, Any] = {}


def shapes_loaded(shapes: dict[int, Any]) -> None:
    _SHAPES.clear()
    _SHAPES.update(shapes)
    _SHELLS.clear()


def running_generator(index: int) -> Any:
    if index not in _SHELLS:
        from relive.interp.rebuild import GeneratorShell

        _SHELLS[index] = GeneratorShell(_SHAPES[index], sys.modules["__main__"].__dict__)
    return _SHELLS[index].generator


class _Shapes:
    def __init__(self, shapes: dict[int, Any]) -> None:
        self.shapes = shapes

    def __reduce__(self) -> Any:
        import harness

        return (harness.shapes_loaded, (self.shapes,))


def dump(path: str, namespace: dict[str, Any], state: Any, random_state: Any = None) -> None:
    from relive.interp.rebuild import shape_of

    names = {k: v for k, v in namespace.items() if not (k.startswith("__") and k.endswith("__"))}
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    shapes = {i: shape_of(f) for i, f in enumerate(state.frames) if i and f.is_running_generator}
    p = ResumePickler(out, main_dict=namespace, own=set(), main_names={}, storages={}, buffers=buffers)
    p.running = state.running
    p.dump({"shapes": _Shapes(shapes), "globals": names, "state": state,
            "random": random_state or random.getstate()})
    with open(path, "wb") as fh:
        pickle.dump({"payload": out.getvalue(), "buffers": [bytes(b.raw()) for b in buffers]}, fh)


def load(path: str, script: str) -> tuple[dict[str, Any], Any]:
    with open(path, "rb") as fh:
        saved = pickle.load(fh)
    module = types.ModuleType("__main__")
    module.__file__ = script
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    namespace = module.__dict__
    import harness

    context = pickler.LoadContext(namespace, lambda name: namespace[name], resuming=True,
                                  running_generator=harness.running_generator)
    data = pickler.loads(saved["payload"], saved["buffers"], context)
    namespace.update(data["globals"])
    random.setstate(data["random"])
    state = data["state"]
    for index, frame in enumerate(state.frames):
        if index and frame.is_running_generator:
            harness.running_generator(index)
    state.shells = dict(harness._SHELLS)
    return namespace, state


class Lines:
    """Counts the script's line events; calls ``on_line(frame, count)`` for each."""

    def __init__(self, script: str, on_line: Any) -> None:
        self.script = script
        self.count = 0
        self.on_line = on_line

    def _event(self, frame: types.FrameType) -> None:
        self.count += 1
        self.on_line(frame, self.count)

    def start(self) -> None:
        if MONITORING:
            mon = sys.monitoring
            self.tool = next(t for t in (5, 4, 3, 2, 1) if mon.get_tool(t) is None)
            mon.use_tool_id(self.tool, "resume-harness")

            def on_line(code: types.CodeType, line: int) -> Any:
                if code.co_filename != self.script:
                    return mon.DISABLE
                self._event(sys._getframe(1))
                return None
            mon.register_callback(self.tool, mon.events.LINE, on_line)
            mon.set_events(self.tool, mon.events.LINE)
        else:
            def local(frame: types.FrameType, event: str, arg: Any) -> Any:
                if event == "line":
                    self._event(frame)
                return local

            def global_(frame: types.FrameType, event: str, arg: Any) -> Any:
                return local if frame.f_code.co_filename == self.script else None
            sys.settrace(global_)

    def stop(self) -> None:
        if MONITORING:
            sys.monitoring.set_events(self.tool, 0)
            sys.monitoring.free_tool_id(self.tool)
        else:
            sys.settrace(None)


def program_frames(frame: types.FrameType, script: str) -> list[types.FrameType] | None:
    """The script's frames from its module frame down to ``frame``, or None if not inside it."""
    frames = []
    f: types.FrameType | None = frame
    while f is not None:
        frames.append(f)
        code = f.f_code
        origin = origin_of(code)
        original = origin.code if origin is not None else code
        if original.co_name == "<module>" and original.co_filename == script:
            frames.reverse()
            return frames
        f = f.f_back
    return None


def run_script(script: str, lines: Lines) -> None:
    module = types.ModuleType("__main__")
    module.__file__ = script
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    code = compile(open(script).read(), script, "exec")
    lines.start()
    try:
        exec(code, module.__dict__)
    finally:
        lines.stop()
        sys.stdout.flush()


def try_capture(frame: types.FrameType, script: str) -> Any:
    frames = program_frames(frame, script)
    if frames is None:
        return None
    return capture(frames)


# -- commands --


def cmd_checkpoint(script: str, at: str, path: str) -> None:
    """``at`` is K (the K-th line event) or ``line:N:M`` (the M-th line event on line N)."""
    script = os.path.abspath(script)
    if at.startswith("line:"):
        _, line, nth = at.split(":")
        seen = {"n": 0}

        def reached(frame: types.FrameType, count: int) -> bool:
            if frame.f_lineno == int(line):
                seen["n"] += 1
            return seen["n"] >= int(nth)
    else:
        def reached(frame: types.FrameType, count: int) -> bool:
            return count >= int(at)

    def on_line(frame: types.FrameType, count: int) -> None:
        if not reached(frame, count):
            return
        state = try_capture(frame, script)
        if state is None or not state.resumable:
            return
        sys.stdout.flush()
        dump(path, sys.modules["__main__"].__dict__, state)
        os._exit(0)

    run_script(script, Lines(script, on_line))
    sys.stderr.write("checkpoint: the program ended first\n")
    os._exit(3)


def cmd_explicit(script: str, path: str) -> None:
    """Run SCRIPT with a builtin ``checkpoint()`` that writes STATE and exits."""
    script = os.path.abspath(script)

    def checkpoint() -> None:
        frames = program_frames(sys._getframe(1), script)
        state = capture(frames)  # type: ignore[arg-type]
        if not state.resumable:
            raise SystemExit(f"not resumable: {state.reasons}")
        sys.stdout.flush()
        dump(path, sys.modules["__main__"].__dict__, state)
        os._exit(0)

    builtins.checkpoint = checkpoint  # type: ignore[attr-defined]
    run_script(script, Lines(script, lambda frame, count: None))
    os._exit(3)


def cmd_resume(path: str, script: str, k: int | None = None, path2: str | None = None) -> None:
    namespace, state = load(path, script)
    lines = Lines(script, lambda frame, count: None)
    if k is not None:
        def on_line(frame: types.FrameType, count: int) -> None:
            if count < k:
                return
            state2 = try_capture(frame, script)
            if state2 is None or not state2.resumable:
                return
            sys.stdout.flush()
            dump(path2, sys.modules["__main__"].__dict__, state2)  # type: ignore[arg-type]
            os._exit(0)
        lines.on_line = on_line
        lines.start()
    try:
        resume(state, namespace)
    finally:
        if k is not None:
            lines.stop()
        sys.stdout.flush()
    if k is not None:
        sys.stderr.write("checkpoint: the program ended first\n")
        os._exit(3)


def _isolate_files(snapshot_dir: str, cwd: str) -> None:
    """In a checkpoint child: copy the working directory, and move open files onto the copy."""
    files = os.path.join(snapshot_dir, "files")
    shutil.copytree(cwd, files, ignore=shutil.ignore_patterns("sweep*", "*.state", "__pycache__"))
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not target.startswith(cwd + os.sep) or not os.path.isfile(target):
            continue
        copy = os.path.join(files, os.path.relpath(target, cwd))
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND)
        new = os.open(copy, flags)
        os.lseek(new, os.lseek(fd, 0, os.SEEK_CUR), os.SEEK_SET)
        os.dup2(new, fd)
        os.close(new)


def cmd_sweep(script: str, outdir: str, state_path: str | None = None) -> None:
    script = os.path.abspath(script)
    outdir = os.path.abspath(outdir)
    cwd = os.getcwd()
    os.makedirs(outdir, exist_ok=True)
    verdicts: dict[int, Any] = {}

    def on_line(frame: types.FrameType, count: int) -> None:
        sys.stdout.flush()
        position = os.lseek(1, 0, os.SEEK_CUR)
        random_state = random.getstate()  # a forked child reseeds random
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                snapshot_dir = os.path.join(outdir, str(count))
                os.makedirs(snapshot_dir)
                state = try_capture(frame, script)
                if state is None:
                    status = 4
                elif not state.resumable:
                    with open(os.path.join(snapshot_dir, "refused.json"), "w") as fh:
                        json.dump(state.reasons, fh)
                    status = 5
                else:
                    _isolate_files(snapshot_dir, cwd)
                    dump(os.path.join(snapshot_dir, "state"), sys.modules["__main__"].__dict__, state, random_state)
                    with open(os.path.join(snapshot_dir, "stdout_position"), "w") as fh:
                        fh.write(str(position))
                    status = 0
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                try:
                    with open(os.path.join(outdir, str(count), "error.txt"), "w") as fh:
                        import traceback
                        fh.write("".join(traceback.format_exception(exc)))
                except OSError:
                    pass
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        verdicts[count] = os.waitstatus_to_exitcode(status)

    if state_path is None:
        run_script(script, Lines(script, on_line))
    else:  # resume a checkpoint, and checkpoint the resumed program at every line
        namespace, state = load(state_path, script)
        lines = Lines(script, on_line)
        lines.start()
        try:
            resume(state, namespace)
        finally:
            lines.stop()
            sys.stdout.flush()
    with open(os.path.join(outdir, "verdicts.json"), "w") as fh:
        json.dump(verdicts, fh)


def cmd_resume_sweep(outdir: str, script: str) -> None:
    outdir = os.path.abspath(outdir)
    results: dict[str, Any] = {}
    for name in sorted(os.listdir(outdir), key=lambda n: (len(n), n)):
        snapshot_dir = os.path.join(outdir, name)
        if not os.path.exists(os.path.join(snapshot_dir, "state")):
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)
            work = os.path.join(snapshot_dir, "run")
            shutil.copytree(os.path.join(snapshot_dir, "files"), work)
            os.chdir(work)
            out = os.open(os.path.join(snapshot_dir, "resumed.out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            err = os.open(os.path.join(snapshot_dir, "resumed.err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(err, 2)
            status = 0
            try:
                namespace, state = load(os.path.join(snapshot_dir, "state"), script)
                resume(state, namespace)
            except BaseException:  # noqa: BLE001 - the program's own exit is compared too
                import traceback
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        results[name] = os.waitstatus_to_exitcode(status)
    with open(os.path.join(outdir, "resumed.json"), "w") as fh:
        json.dump(results, fh)


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "checkpoint":
        cmd_checkpoint(argv[1], argv[2], argv[3])
    elif command == "explicit":
        cmd_explicit(argv[1], argv[2])
    elif command == "resume":
        script = os.path.abspath(argv[2])
        if len(argv) > 3:
            cmd_resume(argv[1], script, int(argv[3]), argv[4])
        else:
            cmd_resume(argv[1], script)
    elif command == "sweep":
        cmd_sweep(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
    elif command == "resume-sweep":
        cmd_resume_sweep(argv[1], os.path.abspath(argv[2]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
