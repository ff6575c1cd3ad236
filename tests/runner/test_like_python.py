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


# -- programs that cannot start: reported as python reports them --

BAD_SOURCES = {
    "syntax": b"print('before')\ndef f(:\n    pass\n",
    "indentation": b"if True:\nprint(1)\n",
    "unclosed": b"x = 1\nprint(x\n",
    "null_byte": b"x = 1\x00\nprint(x)\n",
    "not_utf8": b"x = '\xff'\n",
    "unknown_encoding": b"# -*- coding: no-such-codec -*-\nx = 1\n",
    "compile_stage": b"x = 1\nreturn x\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_SOURCES))
@pytest.mark.parametrize("path", ["bad.py", "./sub/../bad.py"])
def test_a_script_that_does_not_compile_fails_as_under_python(work, kind, path):
    (work.path / "sub").mkdir()
    (work.path / "bad.py").write_bytes(BAD_SOURCES[kind])
    plain = work.python(path)
    under = work.relive("run", path)
    assert plain.returncode == 1 and plain.stderr
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert not work.store.exists()


def test_a_missing_script_fails_as_under_python(work):
    for path in ("nope.py", "./nope.py", str(work.path / "nope.py")):
        plain = work.python(path)
        under = work.relive("run", path)
        assert plain.returncode == 2 and "can't open file" in plain.stderr
        assert (under.returncode, under.stderr) == (plain.returncode, plain.stderr)
    assert not work.store.exists()


@pytest.mark.parametrize("name", ["no_such_module_here", "pkg.nope", "pkg"])
def test_a_missing_module_fails_as_under_python(work, name):
    work.write("pkg/__init__.py", "")
    plain = work.python("-m", name)
    under = work.relive("run", "-m", name)
    assert plain.returncode == 1 and "No module named" in plain.stderr
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)


def _zip_app(work, name: str, files: dict[str, str]) -> None:
    import zipfile

    with zipfile.ZipFile(work.path / name, "w") as z:
        for path, source in files.items():
            z.writestr(path, source)


@pytest.mark.parametrize("target", ["app", "./app/", "app.zip"])
def test_a_directory_or_zip_with_main_runs_as_under_python(work, target):
    work.write("app/__main__.py", SHOW_MAIN + "import helper\nprint(helper.NAME)\n")
    work.write("app/helper.py", "NAME = 'helper of app'\n")
    _zip_app(work, "app.zip", {"__main__.py": SHOW_MAIN + "import helper\nprint(helper.NAME)\n",
                               "helper.py": "NAME = 'helper of app'\n"})
    plain = work.python(target, "a", "--b")
    under = work.relive("run", target, "a", "--b")
    assert plain.returncode == 0, plain.stderr
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert work.log()[-1]["trigger"] == "exit"


@pytest.mark.parametrize("target", ["empty", "empty.zip"])
def test_a_directory_or_zip_without_main_fails_as_under_python(work, target):
    (work.path / "empty").mkdir()
    _zip_app(work, "empty.zip", {"other.py": "x = 1\n"})
    plain = work.python(target)
    under = work.relive("run", target)
    assert plain.returncode == 1 and "can't find '__main__' module" in plain.stderr
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)


def test_a_directory_program_resumes(work):
    work.write("app/__main__.py", """
        import relive
        total = 0
        for i in range(4):
            total += i
            if i == 1:
                relive.checkpoint()
            print(i, total, __file__.endswith("__main__.py"))
    """)
    first = work.relive("run", "--every", "0", "app", check=True)
    explicit = [s for s in work.log() if s["trigger"] == "explicit"][0]
    resumed = work.relive("resume", explicit["id"], check=True)
    assert resumed.stderr.startswith(f"relive: resuming snapshot {explicit['id'][:12]} ")
    assert resumed.stderr.count("\n") == 1  # that line alone
    assert resumed.stdout == first.stdout.split("0 0 True\n")[1] == "1 1 True\n2 3 True\n3 6 True\n"


@pytest.mark.parametrize("resumed", [False, True])
def test_relives_own_error_raised_by_the_program_is_the_programs(work, resumed):
    """A program that lets one of relive's exceptions escape (a failed `relive.load`) dies of
    it as under python: its traceback, status 1, not relive's one-line `relive: ...`, status 2."""
    work.write("prog.py", """
        import relive
        print("before")
        relive.checkpoint()
        relive.load("no-such-snapshot", store="missing-store")
    """)
    plain = work.python("prog.py")
    if resumed:
        work.relive("run", "prog.py")
        snap = next(s for s in work.log() if s["trigger"] == "explicit")
        under = work.relive("resume", snap["id"])
        plain_stdout = ""
    else:
        under = work.relive("run", "prog.py")
        plain_stdout = plain.stdout
    assert plain.returncode == under.returncode == 1, under.stderr
    assert under.stdout == plain_stdout
    traceback = under.stderr[under.stderr.index("Traceback (most recent call last):\n"):]
    if not resumed:
        assert traceback == under.stderr  # nothing of relive's before it
    assert "relive: no relive store" not in under.stderr
    assert traceback.splitlines()[-1] == plain.stderr.splitlines()[-1]
