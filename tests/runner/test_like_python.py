"""`relive run script.py args` behaves as `python script.py args`."""

from __future__ import annotations

import signal

import pytest

SHOW_MAIN = """
import sys
d = {k: v for k, v in globals().items() if k.startswith("__") and k not in ("__builtins__", "__loader__", "__spec__")}
print(__spec__ and (__spec__.name, __spec__.origin, __spec__.parent))
print(sorted(globals()))
print(d)
print(sys.argv, sys.path[0], type(__loader__).__name__)
"""


def test_main_module_argv_and_path_as_python(work):
    work.write("prog.py", SHOW_MAIN)
    plain = work.python("prog.py", "--lr", "0.1", "x")
    under = work.relive("run", "prog.py", "--lr", "0.1", "x")
    assert under.returncode == plain.returncode == 0
    assert under.stdout == plain.stdout
    assert under.stderr == plain.stderr == ""


def test_module_run_as_python_dash_m(work):
    work.write("pkg/__init__.py", "")
    work.write("pkg/tool.py", SHOW_MAIN)
    plain = work.python("-m", "pkg.tool", "--help", "y")
    under = work.relive("run", "-m", "pkg.tool", "--help", "y")
    assert under.returncode == plain.returncode == 0
    assert under.stdout == plain.stdout


def test_package_main_module(work):
    work.write("app/__init__.py", "")
    work.write("app/__main__.py", "import sys\nprint('app', __name__, __package__, sys.argv[1:])\n")
    plain = work.python("-m", "app", "a")
    under = work.relive("run", "-m", "app", "a")
    assert under.stdout == plain.stdout == "app __main__ app ['a']\n"


@pytest.mark.parametrize("body,status", [
    ("pass", 0),
    ("import sys\nsys.exit(3)", 3),
    ("import sys\nsys.exit('bad input')", 1),
    ("import sys\ndef f():\n    sys.exit(7)\nf()", 7),
    ("import os\nos._exit(5)", 5),
])
def test_exit_status_as_python(work, body, status):
    work.write("prog.py", body + "\n")
    plain = work.python("prog.py")
    under = work.relive("run", "prog.py")
    assert plain.returncode == status
    assert under.returncode == status
    assert under.stderr == plain.stderr
    assert under.stdout == plain.stdout


def test_uncaught_exception_traceback_as_python(work):
    work.write("prog.py", """
        def inner(x):
            return 1 / x

        def outer():
            try:
                {}["missing"]
            except KeyError:
                return inner(0)

        print("before")
        outer()
    """)
    plain = work.python("prog.py")
    under = work.relive("run", "prog.py")
    assert plain.returncode == 1
    assert under.returncode == 1
    assert under.stdout == plain.stdout == "before\n"
    assert under.stderr == plain.stderr
    assert "relive" not in under.stderr
    assert "ZeroDivisionError" in under.stderr


def test_program_excepthook_is_used(work):
    work.write("prog.py", """
        import sys
        def hook(kind, value, tb):
            print("hooked", kind.__name__, tb.tb_frame.f_code.co_name, file=sys.stderr)
        sys.excepthook = hook
        raise ValueError("x")
    """)
    under = work.relive("run", "prog.py")
    assert under.returncode == 1
    assert under.stderr == "hooked ValueError <module>\n"


def test_keyboard_interrupt_dies_of_sigint_as_python(work):
    work.write("prog.py", "raise KeyboardInterrupt\n")
    plain = work.python("prog.py")
    under = work.relive("run", "prog.py")
    assert plain.returncode == under.returncode == -signal.SIGINT
    assert under.stderr == plain.stderr


def test_stdin_is_the_programs(work):
    work.write("prog.py", "import sys\nprint(sys.stdin.read().upper(), end='')\n")
    under = work.relive("run", "prog.py", input="hello\nworld\n")
    assert under.stdout == "HELLO\nWORLD\n"


def test_missing_script_is_one_line_exit_2(work):
    under = work.relive("run", "nope.py")
    assert under.returncode == 2
    assert under.stderr.startswith("relive: can't open file")
    assert len(under.stderr.strip().splitlines()) == 1
    assert not (work.store).exists()


def test_missing_module_exit_2(work):
    under = work.relive("run", "-m", "no_such_module_here")
    assert under.returncode == 2
    assert "No module named" in under.stderr


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_with_main_functions(work, method):
    work.write("prog.py", f"""
        import multiprocessing as mp

        class Box:
            def __init__(self, v):
                self.v = v

        def square(box):
            return Box(box.v * box.v)

        if __name__ == "__main__":
            with mp.get_context("{method}").Pool(2) as pool:
                print(sorted(b.v for b in pool.map(square, [Box(i) for i in range(5)])))
    """)
    under = work.relive("run", "--every", "0.05", "prog.py")
    assert under.returncode == 0, under.stderr
    assert under.stdout == "[0, 1, 4, 9, 16]\n"
    assert work.log()[-1]["trigger"] == "exit"


def test_threads_and_pickle_of_main_objects(work):
    work.write("prog.py", """
        import pickle, threading

        class Point:
            def __init__(self, x):
                self.x = x

        results = []
        def worker(i):
            results.append(pickle.loads(pickle.dumps(Point(i))).x)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(sorted(results))
    """)
    under = work.relive("run", "prog.py")
    assert under.returncode == 0, under.stderr
    assert under.stdout == "[0, 1, 2, 3]\n"


def test_relive_options_before_script_and_program_options_after(work):
    work.write("prog.py", "import sys\nprint(sys.argv[1:])\n")
    under = work.relive("run", "--every", "0", "prog.py", "--every", "5", "--store", "x")
    assert under.stdout == "['--every', '5', '--store', 'x']\n"
    assert not (work.path / "x").exists()
