"""Run records: what a run was started with, kept exactly, in a form both of relive's sides read."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ENV, Workdir

ARGV_PROGRAM = """
    import relive, sys
    relive.checkpoint()
    print("argv", [a.encode("utf-8", "surrogateescape").hex() for a in sys.argv])
"""


def test_arguments_that_are_not_utf8_are_kept(work: Workdir) -> None:
    work.write("prog.py", ARGV_PROGRAM)
    args = [os.fsdecode(b"\xff"), os.fsdecode(b"caf\xc3\xa9"), os.fsdecode(b"\xe9t\xe9"), "plain"]
    proc = work.relive("run", "--every", "0", "prog.py", *args, check=True)
    plain = work.python("prog.py", *args)
    assert proc.stdout == plain.stdout
    verify = work.relive("verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
    log = subprocess.run([sys.executable, "-m", "relive", "log", "--all"], cwd=work.path, env=ENV,
                         capture_output=True)  # bytes: the command shown holds the arguments
    assert log.returncode == 0 and b"Traceback" not in log.stderr, log.stderr
    # The run's record reads back as the very arguments.
    check = work.python("-c", "import relive.store as s, sys; "
                              "print(ascii(s.Store('.relive').runs.popitem()[1].argv[1:]))")
    assert check.stdout.strip() == ascii(args), check.stdout + check.stderr
    # A resume gets the same sys.argv back, and its own run record verifies too.
    explicit = next(r for r in work.log() if r["trigger"] == "explicit")
    resumed = work.relive("resume", explicit["id"])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == proc.stdout.splitlines()[-1]
    verify = work.relive("verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
