"""A store that cannot be written costs the program nothing but snapshots, and one line on stderr."""

from __future__ import annotations

import pytest

from conftest import Workdir

# The store is written, then replaced by a file: opening it and writing to it both fail.
INLINE = """
    import relive, shutil
    data = list(range(1000))
    relive.checkpoint()
    shutil.rmtree(".relive")
    open(".relive", "w").close()
    relive.checkpoint()
    relive.checkpoint()
    print("done")
"""
FORKED = """
    import os, time

    def busy(seconds):
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1

    data = list(range(1000))
    busy(0.6)  # timer snapshots, written by forked children
    os.rename(".relive", "gone")  # at once, even while a child writes
    open(".relive", "w").close()
    busy(0.6)  # a child fails to write, then opening the store fails
    print("done")
"""


@pytest.mark.parametrize("program, options", [(INLINE, ["--every", "0"]),
                                              (FORKED, ["--every", "0.05", "--mode", "fork", "--overhead", "0"])],
                         ids=["inline", "forked"])
def test_store_that_cannot_be_written_warns_once(work: Workdir, program: str, options: list[str]) -> None:
    work.write("prog.py", program)
    proc = work.relive("run", *options, "prog.py", timeout=120)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("relive: cannot write snapshots to") and "the program goes on" in lines[0], lines[0]
